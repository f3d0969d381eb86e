"""The SQL benchmark rows run end to end (a few calls each) and clean up after themselves."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from persist_core.bench.harness import run_pair
from persist_sql import bench
from tests.sql import servers


def test_rows_and_targets() -> None:
    pairs = bench.bench_pairs(quick=True)
    names = {(p.backend, p.operation) for p in pairs}
    assert set(bench.TARGETS) <= names
    assert {"postgresql", "mariadb", "sqlite"} == {backend for backend, _ in names}


def test_every_row_runs_and_leaves_no_rows_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bench reads the same variables as the tests; point it at this session's databases.
    postgres, mysql = servers.session_url(servers.POSTGRES), servers.session_url(servers.MYSQL)
    monkeypatch.setenv(servers.POSTGRES, postgres)
    monkeypatch.setenv(servers.MYSQL, mysql)
    for url in (postgres, mysql):
        servers.reset(url)
    for pair in bench.bench_pairs(quick=True):
        result = run_pair(dataclasses.replace(pair, n=4), chunk=2, warmup=1)
        assert result.ours.n == 4
        assert result.raw.n == 4
    for url in (postgres, mysql):
        with servers.admin_engine(url).connect() as connection:
            for table in ("signal_items", "candle_items"):
                assert connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar() == 0


def test_async_rows_run_and_leave_no_rows_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    from persist_sql import async_bench

    postgres = servers.session_url(servers.POSTGRES)
    mysql = servers.session_url(servers.MYSQL)
    monkeypatch.setenv(servers.POSTGRES, postgres)
    monkeypatch.setenv(servers.MYSQL, mysql)
    servers.reset(postgres)
    servers.reset(mysql)
    pairs = async_bench.bench_pairs(quick=True)
    assert set(async_bench.TARGETS) <= {(p.backend, p.operation) for p in pairs}
    for pair in pairs:
        result = run_pair(dataclasses.replace(pair, n=4), chunk=2, warmup=1)
        assert result.ours.n == result.raw.n == 4
    for url in (postgres, mysql):
        with servers.admin_engine(url).connect() as connection:
            assert connection.execute(sa.text("SELECT COUNT(*) FROM signal_items")).scalar() == 0
