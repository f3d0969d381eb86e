"""The facade's lifecycle and where its state is (issue 12.3): a replaced or closed facade refuses every call
rather than reopen the storage; setup() logs the resolved location of every backend."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from persist_core import ClosedError, Persist, asetup, get_persist, setup
from tests.sql import servers

CONTEXT = {"symbol": "BTC/USDT", "strategy_name": "s", "exchange_name": "e"}
BUCKET = {"signal_id": "sig-1", "bucket_name": "llm"}


def test_a_second_setup_closes_the_first_which_then_refuses_every_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="persist")
    first = setup(f"file:{tmp_path}/a", env={})
    signal = first.live.signal(**CONTEXT)
    memory = first.backtest.memory(**BUCKET)
    signal.write({"n": 1})
    memory.write("m1", {"n": 1})
    second = setup(f"file:{tmp_path}/b", env={})
    try:
        assert first.closed
        assert not second.closed
        assert get_persist() is second
        assert "setup() replaces the previous Persist facade" in caplog.text
        for call in (
            lambda: signal.write({"n": 2}),
            signal.read,
            lambda: memory.write("m2", {"n": 2}),
            memory.keys,
            lambda: first.live.signal(**CONTEXT),
            first.claim_ownership,
        ):
            with pytest.raises(ClosedError, match="replaced by a later setup"):
                call()
    finally:
        second.close()
    with setup(f"file:{tmp_path}/a", env={}) as again:
        assert again.live.signal(**CONTEXT).read() == {"n": 1}  # the refused write wrote nothing


def test_a_closed_facade_refuses_its_stores_and_closing_twice_is_fine(tmp_path: Path) -> None:
    with setup(f"file:{tmp_path}/dump", env={}) as persist:
        log = persist.live.log()
        log.write([{"id": "e-1"}])
    assert persist.closed
    with pytest.raises(ClosedError, match="this Persist is closed"):
        log.write([{"id": "e-2"}])
    with pytest.raises(ClosedError):
        persist.mode("live")
    persist.close()
    assert list((tmp_path / "dump").rglob("e-2*")) == []


def test_a_facade_built_directly_is_not_replaced_by_setup(tmp_path: Path) -> None:
    own = Persist({("live", "log"): f"file:{tmp_path}/own", ("backtest", "log"): f"file:{tmp_path}/own"})
    try:
        with setup(f"file:{tmp_path}/dump", env={}):
            own.live.log().write([{"id": "e-1"}])  # only setup()'s facades replace each other
    finally:
        own.close()


def test_setup_logs_the_resolved_default_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="persist")
    monkeypatch.chdir(tmp_path)
    with setup(env={}):
        pass
    where = os.path.realpath(tmp_path / "dump")
    record = next(r for r in caplog.records if where in r.getMessage())
    line = record.getMessage()
    assert record.levelno == logging.INFO
    assert line.startswith("live (16 domains) and backtest (10 domains) state: file backend at ")
    assert "pin it with PERSIST_URL or setup(url=...)" in line


def test_setup_logs_relative_paths_resolved_and_server_urls_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="persist")
    monkeypatch.chdir(tmp_path)
    postgres = servers.server_url(servers.POSTGRES)
    password = postgres.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    with setup("sqlite:///rel/state.db", domains={"log": "jsonl:logs/log.jsonl", "candle": postgres}, env={}):
        pass
    assert f"sqlite backend at {os.path.realpath(tmp_path / 'rel' / 'state.db')}" in caplog.text
    assert f"jsonl backend at {os.path.realpath(tmp_path / 'logs' / 'log.jsonl')}" in caplog.text
    assert "live (1 domains) and backtest (1 domains) state: postgresql" in caplog.text
    assert password not in caplog.text
    assert "pin it" not in caplog.text


@pytest.fixture(params=["file", "postgresql"])
def own_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A storage of this test alone: a live write claims ownership of it."""
    with servers.own_storage(request.param, tmp_path) as url:
        yield url


def test_a_closed_async_facade_refuses_its_stores(own_storage: str) -> None:
    url, target = own_storage, own_storage.partition(":")[0]

    async def scenario() -> None:
        async with await asetup(url, env={}) as persist:
            live = persist.live.signal(**{**CONTEXT, "symbol": f"LC-{target}"})
            backtest = persist.backtest.memory(**BUCKET)  # native on PostgreSQL, the thread pool on files
            await live.write({"n": 1})
            await backtest.write("m1", {"n": 1})
        for call in (lambda: live.write({"n": 2}), live.read, lambda: backtest.write("m2", {}), backtest.keys):
            with pytest.raises(ClosedError, match="this AsyncPersist is closed"):
                await call()

    asyncio.run(scenario())
