"""The schema: Alembic owns it, the revisions agree with the domain specs, and opening checks the revision."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from persist_core.backend import Record
from persist_core.domains import DOMAINS, FieldType
from persist_core.errors import SchemaAheadError, SchemaBehindError, SchemaError
from persist_sql import SqlBackend, _dialects, _migrate, _schema, admin
from tests.sql import servers

REPO = Path(__file__).resolve().parents[2]
TABLES = {spec.table_name for spec in DOMAINS.values()}


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of this test alone on each of the three databases.

    MariaDB is named ``mariadb+pymysql://`` here (the contract kit uses ``mysql+pymysql://``), so that both of
    SQLAlchemy's spellings of the dialect build the schema.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
        return
    if request.param == "postgresql":
        url = servers.server_url(servers.POSTGRES)
    else:
        url = sa.make_url(servers.server_url(servers.MYSQL)).set(drivername="mariadb+pymysql").render_as_string(False)
    with servers.scratch_database(url) as scratch:
        yield scratch


def _connect(url: str) -> sa.Engine:
    parsed = _dialects.parse_url(url)
    return sa.create_engine(parsed.sa_url, poolclass=sa.pool.NullPool)


def _revision(url: str) -> list[str]:
    engine = _connect(url)
    try:
        with engine.connect() as connection:
            table = _migrate.version_table
            return list(connection.execute(sa.select(table.c.version_num)).scalars())
    finally:
        engine.dispose()


def _differences(url: str, metadata: sa.MetaData | None = None) -> list[Any]:
    engine = _connect(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": _migrate.VERSION_TABLE, "compare_type": True}
            )
            return list(compare_metadata(context, metadata or _migrate.target_metadata(connection.dialect)))
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------ revisions


def test_revisions_form_one_line_whose_first_creates_the_sixteen_tables() -> None:
    scripts = _migrate.scripts()
    assert scripts.get_heads() == [_migrate.head()]
    first = [script for script in scripts.walk_revisions() if script.down_revision is None]
    assert [script.revision for script in first] == ["0001"]


def test_first_revision_creates_all_sixteen_tables(empty_url: str) -> None:
    admin.migrate(empty_url, "0001")
    engine = _connect(empty_url)
    try:
        names = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert names == TABLES | {_migrate.VERSION_TABLE}


def test_second_revision_adds_only_the_lease_table(empty_url: str) -> None:
    admin.migrate(empty_url, "0002")
    engine = _connect(empty_url)
    try:
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names()) == TABLES | {_migrate.VERSION_TABLE, _schema.LEASE_TABLE}
        assert [c["name"] for c in inspector.get_columns(_schema.LEASE_TABLE)] == ["generation", "lease", "updated_at"]
        assert inspector.get_pk_constraint(_schema.LEASE_TABLE)["constrained_columns"] == ["generation"]
    finally:
        engine.dispose()


def test_autogenerate_finds_no_difference_between_revisions_and_specs(empty_url: str) -> None:
    admin.migrate(empty_url)
    assert _differences(empty_url) == []
    # The comparison is live: a column that the revisions lack is reported.
    engine = _connect(empty_url)
    with engine.connect() as connection:
        kind = _dialects.kind_of(connection.dialect)
    engine.dispose()
    changed = sa.MetaData()
    for table in _schema.metadata_for(kind).tables.values():
        table.to_metadata(changed)
    changed.tables["candle_items"].append_column(sa.Column("extra", sa.Integer()))
    assert [diff[0] for diff in _differences(empty_url, changed)] == ["add_column"]


def test_tables_have_the_key_payload_and_bookkeeping_columns(empty_url: str) -> None:
    with SqlBackend(empty_url):
        pass
    engine = _connect(empty_url)
    try:
        inspector = sa.inspect(engine)
        for spec in DOMAINS.values():
            columns = {c["name"]: c for c in inspector.get_columns(spec.table_name)}
            keys = [f.name for f in spec.key_fields]
            extra = ["payload", "when_ms", *(["removed"] if spec.soft_delete else []), "created_at", "updated_at"]
            assert list(columns) == [*keys, *extra], spec.name
            assert inspector.get_pk_constraint(spec.table_name)["constrained_columns"] == keys
            for field in spec.key_fields:
                column = columns[field.name]
                assert column["nullable"] is False
                if field.type is FieldType.STR:
                    assert getattr(column["type"], "length", None) == 80
                elif field.type is FieldType.INT:
                    assert isinstance(column["type"], sa.BigInteger)
            assert isinstance(columns["when_ms"]["type"], sa.BigInteger)
    finally:
        engine.dispose()


def test_key_columns_compare_bytewise(empty_url: str) -> None:
    """Python's order (code points) and distinct keys that a padding or case-folding collation would merge."""
    keys = ["a", "a ", "A", "b", "é", "e", "日本", "\U0001f600", "a\u0301", "Z", " ", "~", "a b"]
    spec = DOMAINS["measure"]
    with SqlBackend(empty_url) as backend:
        for n, key in enumerate(keys):
            backend.put(spec, ("bucket", key), Record(str(n)))
        rows = backend.scan(spec, ("bucket",))
        assert [item for item, _ in rows] == sorted(keys)
        assert {item: record.payload for item, record in rows} == {key: str(n) for n, key in enumerate(keys)}
        assert [item for item, _ in backend.scan(spec, ("bucket",), "a", "b")] == ["a", "a ", "a b", "a\u0301"]


# -------------------------------------------------------------------------------------- open and state


def test_open_creates_an_empty_database_at_head(empty_url: str) -> None:
    with SqlBackend(empty_url) as backend:
        backend.put(DOMAINS["signal"], ("s", "t", "x"), Record("{}"))
    assert _revision(empty_url) == [_migrate.head()]
    assert _differences(empty_url) == []


def _newer_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process' code one revision newer than the shipped migrations (a harmless index)."""
    location = tmp_path / "migrations"
    shutil.copytree(_migrate.script_location(), location, ignore=shutil.ignore_patterns("__pycache__"))
    (location / "versions" / "9999_test.py").write_text(
        '"""A revision that exists only in this test."""\n'
        "from alembic import op\n\n"
        f'revision = "9999"\ndown_revision = "{_migrate.head()}"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade() -> None:\n"
        '    op.create_index("ix_test_measure_when", "measure_items", ["when_ms"])\n\n\n'
        "def downgrade() -> None:\n"
        '    op.drop_index("ix_test_measure_when", table_name="measure_items")\n'
    )
    monkeypatch.setattr(_migrate, "script_location", lambda: location)


def _stamp_head_with_the_shipped_code(url: str) -> None:
    with SqlBackend(url):
        pass


def test_schema_behind_the_code_raises_naming_the_command(
    empty_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _stamp_head_with_the_shipped_code(empty_url)
    head = _migrate.head()
    _newer_code(tmp_path, monkeypatch)
    with pytest.raises(SchemaBehindError) as info:
        SqlBackend(empty_url).open()
    message = str(info.value)
    masked = _dialects.parse_url(empty_url).display
    assert f"backtest-persist migrate --url {masked}" in message
    assert head in message
    assert "9999" in message
    password = sa.make_url(empty_url).password
    if password:
        assert password not in message
        assert "***" in message
    assert _revision(empty_url) == [head]


@pytest.mark.parametrize("how", ["keyword", "url"])
def test_auto_migrate_upgrades_a_schema_behind(
    empty_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    _stamp_head_with_the_shipped_code(empty_url)
    _newer_code(tmp_path, monkeypatch)
    if how == "keyword":
        backend = SqlBackend(empty_url, auto_migrate=True)
    else:
        separator = "&" if "?" in empty_url else "?"
        backend = SqlBackend(f"{empty_url}{separator}auto_migrate=1")
    with backend:
        backend.put(DOMAINS["measure"], ("b", "k"), Record("1", 5))
    assert _revision(empty_url) == ["9999"]


def test_schema_ahead_of_the_code_is_refused(empty_url: str) -> None:
    _stamp_head_with_the_shipped_code(empty_url)
    engine = _connect(empty_url)
    with engine.begin() as connection:
        connection.execute(sa.update(_migrate.version_table).values(version_num="ffff_from_the_future"))
    engine.dispose()
    for auto in (False, True):
        with pytest.raises(SchemaAheadError, match="ffff_from_the_future"):
            SqlBackend(empty_url, auto_migrate=auto).open()
    with pytest.raises(SchemaAheadError):
        admin.migrate(empty_url)
    assert _revision(empty_url) == ["ffff_from_the_future"]


def test_a_table_dropped_behind_the_backends_back_is_a_schema_error(empty_url: str) -> None:
    with SqlBackend(empty_url) as backend:
        backend.put(DOMAINS["state"], ("s", "b"), Record("1"))
        engine = _connect(empty_url)
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE state_items"))
        engine.dispose()
        with pytest.raises(SchemaError, match="backtest-persist check --url") as info:
            backend.get(DOMAINS["state"], ("s", "b"))
        assert isinstance(info.value.__cause__, Exception)
        password = sa.make_url(empty_url).password
        assert not password or password not in str(info.value)


# ------------------------------------------------------------------------------------ migration races


def _open_at_barrier(url: str, barrier: Any, results: Any) -> None:
    try:
        barrier.wait(60)
        with SqlBackend(url) as backend:
            backend.put(DOMAINS["state"], ("race", str(id(backend))), Record("1"))
        results.put("ok")
    except BaseException as exc:  # reported to the parent, which fails the test with it
        results.put(f"{type(exc).__name__}: {exc}")


def _migrate_at_barrier(url: str, barrier: Any, results: Any) -> None:
    try:
        barrier.wait(60)
        admin.migrate(url)
        results.put("ok")
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow
@pytest.mark.parametrize("target", [_open_at_barrier, _migrate_at_barrier], ids=["open", "migrate"])
def test_two_processes_creating_the_schema_at_once(empty_url: str, target: Any) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    processes = [ctx.Process(target=target, args=(empty_url, barrier, results)) for _ in range(3)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
    assert outcomes == ["ok"] * 3
    assert _revision(empty_url) == [_migrate.head()]
    assert _differences(empty_url) == []


# ------------------------------------------------------------------------------------- the migrations


def test_wheel_ships_the_migrations_inside_persist_sql() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert include == {"migrations": "persist_sql/migrations"}
    assert "persist_sql" in config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]


def test_migrations_are_found_in_an_installed_layout(tmp_path: Path) -> None:
    """Lay the packages out as the wheel installs them (no top-level migrations/) and ask from there."""
    site = tmp_path / "site"
    for package in ("persist_core", "persist_sql"):
        shutil.copytree(REPO / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        REPO / "migrations", site / "persist_sql" / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    code = "from persist_sql import _migrate; print(_migrate.script_location()); print(_migrate.head())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(site / "persist_sql" / "migrations"), _migrate.head()]


def test_migrations_are_found_in_a_source_checkout() -> None:
    assert _migrate.script_location() == REPO / "migrations"


def test_switching_a_new_sqlite_file_to_wal_waits_for_another_connections_lock(tmp_path: Path) -> None:
    """SQLite runs no busy handler for a journal-mode change: the switch must wait for the lock by itself.

    This is what a second process meets while the first creates the schema of a new file under
    ``BEGIN EXCLUSIVE``; it failed with "database is locked" in about one race in fifteen.
    """
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE t (x INTEGER)")
    released = threading.Timer(0.5, holder.execute, args=("COMMIT",))
    released.start()
    waiter = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    try:
        started = time.monotonic()
        _dialects._switch_to_wal(waiter)
        assert time.monotonic() - started >= 0.3  # it waited for the commit rather than failing
        assert waiter.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        released.join()
        waiter.close()
        holder.close()
