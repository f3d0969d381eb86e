"""The native asyncio backend of PostgreSQL (AsyncSqlBackend): round trips through asetup, cancellation,
deadlines on a frozen server, and an event loop that keeps running meanwhile (issue 10)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from persist_core import asetup
from persist_core.async_backend import ThreadedAsyncBackend
from persist_core.backend import Record
from persist_core.domains import DOMAINS
from persist_core.errors import BackendTimeoutError
from persist_core.guarded import AsyncOwnedBackend
from persist_sql import AsyncSqlBackend
from tests.proxy import FreezableProxy
from tests.sql import servers

SIGNAL = {"symbol": "BTC/USDT:USDT", "strategy_name": "s", "exchange_name": "binance"}
BLOB = "x" * 100_000


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    servers.reset(postgres_url)
    return postgres_url


def _native(persist: Any) -> AsyncSqlBackend:
    """The native backend under the live signal store (behind the ownership guard)."""
    backend = persist.live.signal(**SIGNAL)._backend
    assert isinstance(backend, AsyncOwnedBackend)
    assert isinstance(backend.inner, AsyncSqlBackend), backend.inner
    return backend.inner


def test_asetup_serves_postgresql_natively_and_other_urls_through_the_pool(pg_url: str, tmp_path: Any) -> None:
    async def main() -> None:
        async with await asetup(pg_url, env={}, domains={"log": f"file:{tmp_path}/dump"}) as persist:
            _native(persist)
            assert isinstance(persist.backtest.log()._backend, ThreadedAsyncBackend)

    asyncio.run(main())


def test_round_trips_of_every_store_kind_through_asetup(pg_url: str) -> None:
    async def main() -> None:
        async with await asetup(pg_url, env={}) as persist:
            live = persist.live
            signal = live.signal(**SIGNAL)
            assert await signal.read() is None
            await signal.write({"id": "sig-1", "n": 2**40, "f": 1.5, "nested": [[1], {"a.b": "$x"}]})
            assert await signal.read() == {"id": "sig-1", "n": 2**40, "f": 1.5, "nested": [[1], {"a.b": "$x"}]}

            partial = live.partial(**SIGNAL)
            await partial.write("sig-1", {"q": 1})
            await partial.write("sig-2", {"q": 2})
            assert await partial.read("sig-1") == {"q": 1}
            assert await partial.read("sig-2") == {"q": 2}

            candles = live.candle(symbol="BTC/USDT", interval="1m", exchange_name="binance")
            rows = [
                {"timestamp": 60_000 * k, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 3.0}
                for k in range(5)
            ]
            assert await candles.write(rows) == 5
            assert await candles.write(rows) == 0  # first write wins
            assert await candles.read(5, 0) == rows

            storage = live.storage(backtest=False)
            await storage.write([{"id": "a", "v": 1}, {"id": "b", "v": 2}])
            assert sorted(item["id"] for item in await storage.read()) == ["a", "b"]

            memory = live.memory(signal_id="sig-1", bucket_name="llm")
            await memory.write("m1", {"text": "hello"})
            await memory.write("m2", {"text": "bye"})
            await memory.remove("m1")
            assert [key async for key, _ in memory.entries()] == ["m2"]
            assert await memory.read("m2") == {"text": "bye"}

            backtest_signal = persist.backtest.signal(**SIGNAL)
            assert await backtest_signal.read() is None  # modes are isolated
            assert _native(persist).pool.in_use == 0

    asyncio.run(main())


def test_a_cancelled_write_leaves_the_old_or_the_new_record_and_no_connection_in_use(pg_url: str) -> None:
    async def main() -> None:
        async with await asetup(pg_url, env={}) as persist:
            store = persist.live.signal(**SIGNAL)
            native = _native(persist)
            await store.write({"n": 0, "blob": BLOB})
            last = 0
            for n in range(1, 31):
                task = asyncio.ensure_future(store.write({"n": n, "blob": BLOB}))
                await asyncio.sleep((n % 7) * 0.0003)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                value = await store.read()
                assert value["blob"] == BLOB, "a cancelled write left a torn record"
                assert last <= value["n"] <= n  # the previous record or the cancelled call's, whole
                last = value["n"]
                assert native.pool.in_use == 0, "a cancelled call kept its connection"

    asyncio.run(main())


@pytest.fixture
def proxy() -> Iterator[FreezableProxy]:
    with FreezableProxy(5432) as proxy:
        yield proxy


def _via(url: str, port: int) -> str:
    return url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")


def test_a_frozen_server_gives_a_timeout_error_within_the_deadline_and_the_backend_recovers(
    pg_url: str, proxy: FreezableProxy
) -> None:
    signal = DOMAINS["signal"]
    key = ("BTC/USDT", "s", "e")

    async def heartbeat(ticks: list[float], stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.01)
            ticks.append(time.monotonic())

    async def main() -> None:
        backend = AsyncSqlBackend(_via(pg_url, proxy.port) + "?timeout=1")
        try:
            await backend.put(signal, key, Record('{"v":1}', None))  # connected through the proxy
            proxy.freeze()
            ticks: list[float] = []
            stop = asyncio.Event()
            beat = asyncio.ensure_future(heartbeat(ticks, stop))
            for call in (
                lambda: backend.put(signal, key, Record('{"v":2}', None)),
                lambda: backend.get(signal, key),
            ):
                started = time.monotonic()
                with pytest.raises(BackendTimeoutError) as caught:
                    await call()
                elapsed = time.monotonic() - started
                assert elapsed < 1 + 1, elapsed
                assert "persist-test-pw" not in str(caught.value) and "***" in str(caught.value)
                assert "within the deadline of 1 s" in str(caught.value)
            stop.set()
            await beat
            assert len(ticks) > 50, "the event loop stalled during the frozen calls"
            assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.5
            await asyncio.sleep(0.2)
            assert backend.pool.in_use == 0
            proxy.thaw()
            record = await backend.get(signal, key)
            assert record is not None and record.payload in ('{"v":1}', '{"v":2}')
            await backend.put(signal, key, Record('{"v":3}', None))
            assert (await backend.get(signal, key)) == Record('{"v":3}', None)
        finally:
            proxy.thaw()
            await backend.close()

    asyncio.run(main())


def test_a_backend_built_in_one_thread_works_in_another_loop(pg_url: str) -> None:
    backend = AsyncSqlBackend(pg_url)
    signal = DOMAINS["signal"]
    key = ("a", "b", "c")
    asyncio.run(backend.put(signal, key, Record('{"v":1}', None)))
    assert asyncio.run(backend.get(signal, key)) == Record('{"v":1}', None)  # a second loop: a new pool epoch
    asyncio.run(backend.close())
