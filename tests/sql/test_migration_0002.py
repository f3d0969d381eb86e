"""Upgrading a database written by the code of revision 0001 to 0002 (the ownership leases).

The database is built and written by this code made to know only 0001 (its migrations folder without
0002), through the backend's own statements on all 16 domains; then the real code meets it: opening without
``auto_migrate`` names the upgrade command, ``backtest-persist migrate`` (or ``auto_migrate``) upgrades, every
row is still there unchanged, and a live process can own the state.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from persist_core import cli, setup
from persist_core.backend import Record
from persist_core.domains import DOMAINS
from persist_core.errors import SchemaBehindError
from persist_core.ownership import this_process
from persist_core.testing.samples import context_for, item_for, value_for
from persist_sql import SqlBackend, _dialects, _migrate, _schema
from tests.sql import servers

SIGNAL = {"symbol": "BTC/USDT", "strategy_name": "upgrade", "exchange_name": "x"}


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of this test alone on each of the three databases."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    server = servers.server_url(servers.POSTGRES if request.param == "postgresql" else servers.MYSQL)
    with servers.scratch_database(server) as scratch:
        yield scratch


def _code_at_0001(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process' code the code of revision 0001: its migrations folder ends there."""
    location = tmp_path / "migrations-0001"
    shutil.copytree(_migrate.script_location(), location, ignore=shutil.ignore_patterns("__pycache__"))
    for revision in (location / "versions").glob("*.py"):
        if not revision.name.startswith("0001_"):
            revision.unlink()
    monkeypatch.setattr(_migrate, "script_location", lambda: location)
    assert _migrate.head() == "0001"


Written = dict[str, list[tuple[tuple[Any, ...], Record]]]


def _write_every_domain(backend: SqlBackend) -> Written:
    """Three records per domain through the backend's statements (the 0001 code paths); what each holds."""
    written: Written = {}
    for name, spec in DOMAINS.items():
        items = []
        for variant in range(3):
            key = (*context_for(spec, variant).values(), *([] if spec.item is None else [item_for(spec, variant)]))
            payload = json.dumps(value_for(spec, f"{name}-{variant}"), separators=(",", ":"))
            items.append((tuple(key), Record(payload, 1_700_000_000_000 + variant)))
        if spec.first_write_wins:
            assert backend.insert_many(spec, items) == 3
        else:
            backend.put_many(spec, items[:2])
            backend.put(spec, *items[2])
        if spec.soft_delete:
            backend.mark_removed(spec, items[0][0])
            items[0] = (items[0][0], Record(items[0][1].payload, items[0][1].when, removed=True))
        assert len(dict(items)) == 3
        written[name] = items
    return written


def _rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the 16 domain tables, every column (the payload as its stored text), in key order."""
    engine = sa.create_engine(_dialects.parse_url(url).sa_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            kind = _dialects.kind_of(connection.dialect)
            out = {}
            for spec in DOMAINS.values():
                table = _schema.table_for(kind, spec)
                # The payload as text: SQLAlchemy's JSON type would parse it on MariaDB, psycopg on PostgreSQL.
                columns = [
                    sa.type_coerce(_dialects.payload_out(kind, c), sa.Text) if c.name == "payload" else c
                    for c in table.c
                ]
                query = sa.select(*columns).order_by(*table.primary_key.columns)
                out[spec.table_name] = [tuple(row) for row in connection.execute(query)]
            return out
    finally:
        engine.dispose()


def _revision(url: str) -> list[str]:
    engine = sa.create_engine(_dialects.parse_url(url).sa_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.select(_migrate.version_table.c.version_num)).scalars())
    finally:
        engine.dispose()


@pytest.mark.parametrize("how", ["command", "auto_migrate"])
def test_a_database_written_at_0001_upgrades_with_every_row_unchanged(
    empty_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    with monkeypatch.context() as old_code:
        _code_at_0001(tmp_path, old_code)
        with SqlBackend(empty_url) as backend:
            written = _write_every_domain(backend)
    assert _migrate.head() == "0002"
    assert _revision(empty_url) == ["0001"]
    before = _rows(empty_url)
    assert {table: len(rows) for table, rows in before.items()} == {spec.table_name: 3 for spec in DOMAINS.values()}

    masked = _dialects.parse_url(empty_url).display
    with pytest.raises(SchemaBehindError) as info:
        SqlBackend(empty_url).open()
    assert f"backtest-persist migrate --url {masked}" in str(info.value)
    assert "at 0001, behind head 0002" in str(info.value)
    assert _revision(empty_url) == ["0001"]

    if how == "command":
        out = io.StringIO()
        assert cli.main(["migrate", "--url", empty_url], out=out, err=out) == 0, out.getvalue()
        assert "migrated from 0001 to 0002" in out.getvalue()
        backend = SqlBackend(empty_url)
    else:
        backend = SqlBackend(empty_url, auto_migrate=True)
    with backend:
        assert _revision(empty_url) == ["0002"]
        assert _rows(empty_url) == before
        for name, items in written.items():
            for key, record in items:
                assert backend.get(DOMAINS[name], key) == record, (name, key)
        assert backend.lease_log().head() is None

    with setup(empty_url, lease_seconds=5) as persist:
        persist.claim_ownership()
        persist.live.signal(**SIGNAL).write({"after": "upgrade"})
        assert persist.live.signal(**SIGNAL).read() == {"after": "upgrade"}
        leases = persist.backend("live", "signal").lease_log()
        head = leases.head()
        assert head is not None
        assert head[0] == 1
        assert head[1].holder == this_process()
    rows = _rows(empty_url)
    assert {table: rows[table] for table in before if table != "signal_items"} == {
        table: rows_ for table, rows_ in before.items() if table != "signal_items"
    }
    assert set(before["signal_items"]) < set(rows["signal_items"])
