"""The native asyncio SQL backend (AsyncSqlBackend) on PostgreSQL (psycopg) and MariaDB (asyncmy): round trips
through asetup, cancellation, deadlines on a frozen server and a held row lock, and an event loop that keeps
running meanwhile (issue 10)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from persist_core import asetup, registry
from persist_core.async_backend import ThreadedAsyncBackend
from persist_core.backend import Record
from persist_core.domains import DOMAINS
from persist_core.errors import BackendTimeoutError, ConfigurationError, InvalidValueError
from persist_core.guarded import AsyncOwnedBackend
from persist_sql import AsyncSqlBackend, SqlBackend
from tests.proxy import FreezableProxy
from tests.sql import servers

SIGNAL = {"symbol": "BTC/USDT:USDT", "strategy_name": "s", "exchange_name": "binance"}
BLOB = "x" * 100_000


@pytest.fixture(params=["postgresql", "mariadb"])
def db_url(request: pytest.FixtureRequest) -> str:
    """This session's database on PostgreSQL or MariaDB (the sync backend's URL, as a user writes it), emptied."""
    url = servers.driver_url(request.param)
    servers.reset(url)
    return url


def _native(persist: Any) -> AsyncSqlBackend:
    """The native backend under the live signal store (behind the ownership guard)."""
    backend = persist.live.signal(**SIGNAL)._backend
    assert isinstance(backend, AsyncOwnedBackend)
    assert isinstance(backend.inner, AsyncSqlBackend), backend.inner
    return backend.inner


def test_asetup_serves_sql_servers_natively_and_other_urls_through_the_pool(db_url: str, tmp_path: Any) -> None:
    async def main() -> None:
        async with await asetup(db_url, env={}, domains={"log": f"file:{tmp_path}/dump"}) as persist:
            _native(persist)
            assert isinstance(persist.backtest.log()._backend, ThreadedAsyncBackend)

    asyncio.run(main())


def test_round_trips_of_every_store_kind_through_asetup(db_url: str) -> None:
    async def main() -> None:
        async with await asetup(db_url, env={}) as persist:
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


def test_a_cancelled_write_leaves_the_old_or_the_new_record_and_no_connection_in_use(db_url: str) -> None:
    async def main() -> None:
        async with await asetup(db_url, env={}) as persist:
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
def proxy(db_url: str) -> Iterator[FreezableProxy]:
    with FreezableProxy(sa.make_url(db_url).port or 0) as proxy:
        yield proxy


def _via(url: str, port: int | None = None) -> str:
    """``url`` with a deadline of 1 s, through the proxy on ``port`` if given."""
    parsed = sa.make_url(url)
    if port is not None:
        parsed = parsed.set(host="127.0.0.1", port=port)
    return parsed.update_query_dict({"timeout": "1"}).render_as_string(hide_password=False)


def test_a_frozen_server_gives_a_timeout_error_within_the_deadline_and_the_backend_recovers(
    db_url: str, proxy: FreezableProxy
) -> None:
    signal = DOMAINS["signal"]
    key = ("BTC/USDT", "s", "e")

    async def heartbeat(ticks: list[float], stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.01)
            ticks.append(time.monotonic())

    async def main() -> None:
        backend = AsyncSqlBackend(_via(db_url, proxy.port))
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
                print(f"\n{db_url.partition(':')[0]} async, frozen server: {elapsed:.2f} s: {caught.value}")
                assert elapsed < 1 + 1, elapsed
                assert "persist-test-pw" not in str(caught.value) and "***" in str(caught.value)
                assert "within the deadline of 1 s" in str(caught.value)
            # Several calls at once, started a little apart: each gets its own deadline (one timer serves all).
            started = time.monotonic()

            async def later(delay: float) -> Record | None:
                await asyncio.sleep(delay)
                return await backend.get(signal, key)

            outcomes = await asyncio.gather(*(later(0.1 * k) for k in range(4)), return_exceptions=True)
            assert all(isinstance(outcome, BackendTimeoutError) for outcome in outcomes), outcomes
            assert time.monotonic() - started < 0.3 + 1 + 1
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


def test_a_backend_built_in_one_thread_works_in_another_loop(db_url: str) -> None:
    backend = AsyncSqlBackend(db_url)
    signal = DOMAINS["signal"]
    key = ("a", "b", "c")
    asyncio.run(backend.put(signal, key, Record('{"v":1}', None)))
    assert asyncio.run(backend.get(signal, key)) == Record('{"v":1}', None)  # a second loop: a new pool epoch
    asyncio.run(backend.close())


def test_a_row_lock_held_by_another_transaction_gives_a_timeout_error_and_nothing_written(db_url: str) -> None:
    """The server's own limit (90 % of the deadline) ends the wait; the connection stays usable."""
    signal = DOMAINS["signal"]
    key = ("LOCK/USDT", "s", "e")
    table = sa.table(signal.table_name, sa.column("symbol"), sa.column("payload"))

    async def main() -> None:
        backend = AsyncSqlBackend(_via(db_url))
        try:
            await backend.put(signal, key, Record('{"v":1}', None))
            with servers.admin_engine(db_url).connect() as holder:
                transaction = holder.begin()
                holder.execute(sa.select(table.c.symbol).where(table.c.symbol == key[0]).with_for_update()).all()
                try:
                    started = time.monotonic()
                    with pytest.raises(BackendTimeoutError) as caught:
                        await backend.put(signal, key, Record('{"v":2}', None))
                    elapsed = time.monotonic() - started
                    print(f"\n{db_url.partition(':')[0]} async, row lock: {elapsed:.2f} s: {caught.value}")
                    assert elapsed < 1 + 1, elapsed
                    assert "persist-test-pw" not in str(caught.value) and "***" in str(caught.value)
                    assert "writing signal" in str(caught.value)
                    assert await backend.get(signal, key) == Record('{"v":1}', None)  # reads do not wait
                finally:
                    transaction.rollback()
            assert backend.pool.in_use == 0
            await asyncio.sleep(0.2)
            # The server gave up on the statement before the client did: it can never take effect later.
            assert await backend.get(signal, key) == Record('{"v":1}', None)
            await backend.put(signal, key, Record('{"v":3}', None))
            assert await backend.get(signal, key) == Record('{"v":3}', None)
        finally:
            await backend.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("url", "native"),
    [
        ("mysql+pymysql://u:pw@127.0.0.1/db", True),
        ("mariadb+pymysql://u:pw@127.0.0.1/db", True),
        ("mysql://u:pw@127.0.0.1/db", True),
        ("mysql+mysqldb://u:pw@127.0.0.1/db", False),  # the user chose mysqlclient: the thread pool
        ("postgresql+psycopg://u:pw@127.0.0.1/db", True),
    ],
)
def test_which_sync_urls_get_the_native_backend(url: str, native: bool) -> None:
    built = registry.create_async_backend(url, sync=SqlBackend(url))
    assert isinstance(built, AsyncSqlBackend) is native
    assert built is None or "pw" not in repr(built)


def test_a_driver_the_sql_backend_does_not_serve_is_refused_on_both_faces() -> None:
    """pg8000 is no driver of ours (tests/test_install_hints.py has the table): neither face takes it."""
    with pytest.raises(ConfigurationError, match="pg8000"):
        SqlBackend("postgresql+pg8000://u:pw@127.0.0.1/db")


def test_a_url_option_that_asyncmy_does_not_take_is_a_configuration_error() -> None:
    url = "mysql+pymysql://u:secret-pw@127.0.0.1/db?bind_address=127.0.0.1"
    SqlBackend(url)  # the sync face takes it (a PyMySQL option)
    with pytest.raises(ConfigurationError, match="bind_address") as caught:
        AsyncSqlBackend(url)
    assert "secret-pw" not in str(caught.value)


def test_a_record_over_max_allowed_packet_is_refused_before_anything_is_sent() -> None:
    url = servers.driver_url("mariadb")
    servers.reset(url)
    state = DOMAINS["state"]
    big = Record('{"blob":"' + "x" * (17 * 1024 * 1024) + '"}', None)

    async def main() -> None:
        backend = AsyncSqlBackend(url, pool_size=1)
        try:
            # The backend's own check ("does not fit"), not the server's error 1153 after 17 MiB were sent.
            with pytest.raises(InvalidValueError, match="does not fit in the server's max_allowed_packet"):
                await backend.put(state, ("s", "b"), big)
            with pytest.raises(InvalidValueError, match="does not fit in the server's max_allowed_packet"):
                await backend.put_many(state, [(("s", "a"), Record("{}", None)), (("s", "b"), big)])
            assert backend.pool.in_use == 0
            assert await backend.get(state, ("s", "a")) is None  # nothing of the batch was written
            assert await backend.get(state, ("s", "b")) is None
            await backend.put(state, ("s", "b"), Record('{"small":1}', None))  # the connection still works
            assert await backend.get(state, ("s", "b")) == Record('{"small":1}', None)
        finally:
            await backend.close()

    asyncio.run(main())


@pytest.mark.parametrize("mib", [17, 64])
def test_the_servers_refusal_of_a_large_statement_is_an_invalid_value_sent_once(
    mib: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the backend's own check (disabled here), as on the sync face: the server's 1153, or the lost connection
    it closes mid-send (nearly always at 64 MiB), is an InvalidValueError, and the statement is sent once."""
    monkeypatch.setattr("persist_sql._async_backend._check_packet", lambda *args: None)
    url = servers.driver_url("mariadb")
    servers.reset(url)
    state = DOMAINS["state"]
    big = Record('{"blob":"' + "x" * (mib * 1024 * 1024) + '"}', None)
    sends = 0

    async def main() -> None:
        nonlocal sends
        backend = AsyncSqlBackend(url, pool_size=1)
        attempt = backend._attempt

        async def counting_attempt(deadline: Any, work: Any, *args: Any) -> Any:
            async def counted(cursor: Any) -> Any:
                nonlocal sends
                sends += 1
                return await work(cursor)

            return await attempt(deadline, counted, *args)

        monkeypatch.setattr(backend, "_attempt", counting_attempt)
        try:
            for write in (
                lambda: backend.put(state, ("s", "b"), big),
                lambda: backend.put_many(state, [(("s", "b"), big)]),
            ):
                sends = 0
                with pytest.raises(InvalidValueError, match="max_allowed_packet"):
                    await write()
                assert sends == 1
            assert await backend.get(state, ("s", "b")) is None
            await backend.put(state, ("s", "b"), Record('{"small":1}', None))  # a new connection serves the next call
            assert await backend.get(state, ("s", "b")) == Record('{"small":1}', None)
        finally:
            await backend.close()

    asyncio.run(main())


def test_listing_and_deletion_on_the_native_backend_agree_with_the_sync_one(db_url: str) -> None:
    """The asyncio face runs the same listing statements natively (CONTRACTS.md 3.8): same pages, same order."""
    from persist_core.testing.listing import listable_key

    candle, signal = DOMAINS["candle"], DOMAINS["signal"]
    keys = sorted({listable_key(candle, "n-", [s, "x", "e", ts]) for s in ("a", "ab", "b") for ts in (2, 9, 10)})
    with SqlBackend(db_url) as sync:
        sync.insert_many(candle, [(key, Record('{"c":1}', 5)) for key in keys])
        sync.put(signal, ("s", "t", "u"), Record('{"s":1}'))
        expected_pages = [sync.list_records(candle, limit=4), sync.list_records(candle, after=keys[3], limit=4)]
        expected_contexts = sync.list_contexts(candle)

        async def main() -> int:
            backend = AsyncSqlBackend(db_url, sync=sync)
            await backend.open()
            try:
                assert await backend.list_records(candle, limit=4) == expected_pages[0]
                assert await backend.list_records(candle, after=keys[3], limit=4) == expected_pages[1]
                assert await backend.list_contexts(candle) == expected_contexts
                assert await backend.list_records(candle, after=(), limit=4) == []
                return await backend.delete_records(candle, [keys[0], keys[-1], keys[0]])
            finally:
                await backend.close()

        assert asyncio.run(main()) == 2
        assert [key for key, _ in sync.list_records(candle)] == keys[1:-1]
        assert sync.get(signal, ("s", "t", "u")) == Record('{"s":1}')  # another domain: untouched
