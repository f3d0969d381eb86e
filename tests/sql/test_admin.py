"""``persist_sql.admin``: what ``backtest-persist migrate`` and ``backtest-persist check`` run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from persist_core.domains import DOMAINS
from persist_core.errors import BackendUnavailableError
from persist_sql import _migrate, admin
from persist_sql._schema import LEASE_TABLE
from tests.sql import servers

TABLES = [spec.table_name for spec in DOMAINS.values()]


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'admin.db'}"
        return
    with servers.scratch_database(
        servers.server_url(servers.POSTGRES if request.param == "postgresql" else servers.MYSQL)
    ) as url:
        yield url


def _names(results: list[tuple[str, bool, str]]) -> dict[str, bool]:
    return {name: ok for name, ok, _ in results}


def test_migrate_then_check(empty_url: str) -> None:
    password = sa.make_url(empty_url).password or "no password"
    if not empty_url.startswith("sqlite"):
        before = admin.check(empty_url)
        assert _names(before) == {"connectivity": True, "schema revision": False, "tables": False}
        assert "backtest-persist migrate --url" in {n: d for n, _, d in before}["schema revision"]
    said = admin.migrate(empty_url)
    assert f"to {_migrate.head()}" in said
    assert admin.migrate(empty_url).endswith(f"nothing to do, the schema is at head {_migrate.head()}")
    after = admin.check(empty_url)
    assert _names(after) == {
        "connectivity": True,
        "schema revision": True,
        "tables": True,
        "privileges": True,
        "schema matches the code": True,
    }
    for text in [said, *(detail for _, _, detail in after)]:
        assert password not in text


def test_check_reports_a_table_that_drifted_from_the_specs(empty_url: str) -> None:
    admin.migrate(empty_url)
    engine = sa.create_engine(admin._dialects.parse_url(empty_url).sa_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE measure_items ADD COLUMN note VARCHAR(10)"))
    engine.dispose()
    results = {name: (ok, detail) for name, ok, detail in admin.check(empty_url)}
    assert results["schema matches the code"][0] is False
    assert "measure_items" in results["schema matches the code"][1]


def test_check_of_an_unreachable_server_masks_the_password() -> None:
    results = admin.check("postgresql://owner:hush-hush@127.0.0.1:1/db")
    assert [(name, ok) for name, ok, _ in results] == [("connectivity", False)]
    assert "owner:***@127.0.0.1:1" in results[0][2]
    assert "hush-hush" not in results[0][2]


def test_check_of_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    results = admin.check(f"sqlite:///{tmp_path / 'missing.db'}")
    assert [(name, ok) for name, ok, _ in results] == [("connectivity", False)]
    assert not (tmp_path / "missing.db").exists()


def test_migrate_of_an_unreachable_server_raises_unavailable() -> None:
    with pytest.raises(BackendUnavailableError, match=r"owner:\*\*\*@127\.0\.0\.1:1"):
        admin.migrate("postgresql://owner:hush-hush@127.0.0.1:1/db")


@pytest.mark.parametrize(
    ("url", "collation"),
    [
        ("postgresql://owner:hush-hush@127.0.0.1:1/db", 'COLLATE "C"'),
        ("mariadb+pymysql://owner:hush-hush@127.0.0.1:1/db", "utf8mb4_nopad_bin"),
        ("mysql+pymysql://owner:hush-hush@127.0.0.1:1/db", "utf8mb4_0900_bin"),
        ("sqlite:///never-created.db", "WITHOUT ROWID"),
    ],
)
def test_sql_mode_writes_the_script_without_connecting(url: str, collation: str) -> None:
    script = admin.migrate(url, sql=True)
    for table in [*TABLES, _migrate.VERSION_TABLE, LEASE_TABLE]:
        assert f"CREATE TABLE {table}" in script or f"CREATE TABLE IF NOT EXISTS {table}" in script
    assert collation in script
    # Every revision in turn: the first inserts its revision row, each later one moves it on to the head.
    assert f"INSERT INTO {_migrate.VERSION_TABLE} (version_num) VALUES ('0001')" in script
    assert f"SET version_num='{_migrate.head()}'" in script
    assert "hush-hush" not in script
    assert not Path("never-created.db").exists()
