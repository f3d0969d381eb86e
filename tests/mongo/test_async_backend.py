"""The native asyncio Mongo backend (AsyncMongoBackend): served by asetup, the Redis value cache on redis.asyncio,
deadlines on a frozen MongoDB and a frozen Redis, a held key lock (issue 10). Cancellation:
tests/asyncio_face/test_cancellation.py.

The frozen servers sit behind a :class:`tests.proxy.FreezableProxy`, as in tests/mongo/test_deadlines.py: each
case asserts BackendTimeoutError within the deadline + 1 s and that the same backend object works once the
server answers again (measured times: ``pytest -s``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio

from persist_core import asetup
from persist_core.async_backend import ThreadedAsyncBackend
from persist_core.backend import Record
from persist_core.domains import DOMAINS
from persist_core.errors import BackendTimeoutError, BackendUnavailableError, ConfigurationError
from persist_core.guarded import AsyncOwnedBackend
from persist_mongo import AsyncMongoBackend, MongoBackend
from tests.mongo import servers
from tests.mongo.test_deadlines import _Closed, _hold_lock, _port, _release, _via
from tests.proxy import FreezableProxy

TIMEOUT = 1.0
SLACK = 1.0  # the bound: the deadline + 1 s
SIGNAL = {"symbol": "BTC/USDT", "strategy_name": "s", "exchange_name": "x"}
SIGNAL_KEY = ("BTC/USDT", "s", "x")


@pytest.fixture(scope="module")
def database() -> Iterator[servers.ScratchDatabase]:
    db = servers.ScratchDatabase(servers.shared_mongo_url(), "as")
    yield db
    db.drop()


def _native(persist: Any) -> AsyncMongoBackend:
    """The native backend under the live signal store (behind the ownership guard)."""
    backend = persist.live.signal(**SIGNAL)._backend
    assert isinstance(backend, AsyncOwnedBackend)
    assert isinstance(backend.inner, AsyncMongoBackend), backend.inner
    return backend.inner


async def _times_out(case: str, call: Callable[[], Awaitable[object]]) -> BackendTimeoutError:
    started = time.monotonic()
    with pytest.raises(BackendTimeoutError) as info:
        await call()
    elapsed = time.monotonic() - started
    print(f"\n[deadline {TIMEOUT:g} s, asyncio] {case}: BackendTimeoutError after {elapsed:.3f} s")
    assert elapsed <= TIMEOUT + SLACK, f"{case}: {elapsed:.3f} s"
    assert isinstance(info.value, BackendUnavailableError)
    return info.value


# ------------------------------------------------------------------------------------------ asetup


def test_asetup_serves_mongodb_natively_with_the_redis_cache_on_redis_asyncio(
    database: servers.ScratchDatabase, tmp_path: Any
) -> None:
    database.wipe(servers.shared_redis_url())

    async def main() -> None:
        env = {"PERSIST_REDIS_URL": servers.shared_redis_url()}
        async with await asetup(database.url, env=env, domains={"log": f"file:{tmp_path}/dump"}) as persist:
            native = _native(persist)
            assert isinstance(persist.backtest.log()._backend, ThreadedAsyncBackend)
            signal = persist.live.signal(**SIGNAL)
            await signal.write({"v": 1})
            assert isinstance(native._state, object) and native._state is not None
            assert isinstance(native._state.redis.client, redis.asyncio.Redis)  # the cache is asynchronous too
            before = native.cache_stats.hits
            assert await signal.read() == {"v": 1}
            assert await signal.read() == {"v": 1}
            assert native.cache_stats.hits == before + 2  # both reads were answered by Redis
            sync = persist.sync.backend("live", "signal")
            assert isinstance(sync, MongoBackend)
            assert sync.cache_stats == native.cache_stats  # one cache health and one set of counters
            # The same documents as the sync face: it reads what the async one wrote, and the other way.
            assert sync.get(DOMAINS["signal"], SIGNAL_KEY) == Record('{"v":1}', None)
            sync.put(DOMAINS["signal"], SIGNAL_KEY, Record('{"v":2}', None))
            assert await signal.read() == {"v": 2}

    asyncio.run(main())


def test_asetup_without_redis_runs_on_mongodb_alone(database: servers.ScratchDatabase) -> None:
    database.wipe(None)

    async def main() -> None:
        async with await asetup(database.url, env={}, redis_url="none") as persist:
            native = _native(persist)
            store = persist.live.memory(signal_id="sig", bucket_name="b")
            await store.write("a", {"n": 1})
            await store.write("b", {"n": 2})
            await store.remove("a")
            assert [key async for key, _ in store.entries()] == ["b"]
            assert native._state is not None and native._state.redis is None
            assert native.cache_stats.enabled is False

    asyncio.run(main())


def test_a_closed_backend_reopens_in_another_event_loop(database: servers.ScratchDatabase) -> None:
    database.wipe(None)
    backend = AsyncMongoBackend(database.url, redis_url="none")
    spec = DOMAINS["signal"]

    async def write_and_close() -> Any:
        await backend.put(spec, SIGNAL_KEY, Record('{"v":1}', None))
        client = backend.client
        await backend.close()
        assert backend.client is None
        return client

    async def read_and_close() -> tuple[Record | None, Any]:
        record = await backend.get(spec, SIGNAL_KEY)  # a new loop: new clients, opened on use
        client = backend.client
        await backend.close()
        return record, client

    first = asyncio.run(write_and_close())
    record, second = asyncio.run(read_and_close())
    assert record == Record('{"v":1}', None)
    assert second is not None and second is not first


def test_a_sync_backend_of_another_kind_is_refused(tmp_path: Any) -> None:
    from persist_core.backends.memory import MemoryBackend

    with pytest.raises(ConfigurationError, match="MongoBackend"):
        AsyncMongoBackend("mongodb://127.0.0.1:27017/x", sync=MemoryBackend())  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ deadlines


@pytest.fixture
def mongo_proxy(database: servers.ScratchDatabase) -> Iterator[FreezableProxy]:
    with FreezableProxy(_port(database.server_url)) as proxy:
        yield proxy


def test_frozen_mongodb_times_out_within_the_deadline_and_the_same_backend_recovers(
    database: servers.ScratchDatabase, mongo_proxy: FreezableProxy
) -> None:
    database.wipe(None)
    closed = _Closed()
    backend = AsyncMongoBackend(
        _via(database.url, mongo_proxy.port, timeout=str(TIMEOUT)),
        redis_url="none",
        client_options={"event_listeners": [closed]},
    )
    signal, candle, measure = DOMAINS["signal"], DOMAINS["candle"], DOMAINS["measure"]
    candle_ctx = ("ETH/USDT", "1m", "x")
    candles = [((*candle_ctx, 60_000 * k), Record(f'{{"c":{k}}}', None)) for k in range(200)]

    async def main() -> None:
        await backend.put(signal, SIGNAL_KEY, Record('{"v":1}', None))
        assert await backend.insert_many(candle, candles[:10]) == 10
        await backend.put(measure, ("frozen", "k"), Record('{"v":1}', None))
        cases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("read (signal)", lambda: backend.get(signal, SIGNAL_KEY)),
            ("write (signal)", lambda: backend.put(signal, SIGNAL_KEY, Record('{"v":2}', None))),
            ("candle window", lambda: backend.read_window(candle, candle_ctx, 0, 200 * 60_000, 60_000)),
            ("bulk insert (190 candles)", lambda: backend.insert_many(candle, candles[10:])),
            ("bucket write (key lock)", lambda: backend.put(measure, ("frozen", "o"), Record('{"v":2}', None))),
            ("bucket remove (key lock)", lambda: backend.mark_removed(measure, ("frozen", "k"))),
        ]
        try:
            for case, call in cases:
                mongo_proxy.freeze()
                errors_before = closed.errors
                error = await _times_out(f"frozen MongoDB, {case}", call)
                assert f"127.0.0.1:{mongo_proxy.port}" in str(error)
                assert "within its 1 s deadline" in str(error)
                assert closed.errors > errors_before, f"{case}: no pooled connection was discarded"
                mongo_proxy.thaw()
                started = time.monotonic()
                record = await backend.get(signal, SIGNAL_KEY)  # the same backend object answers again
                assert record is not None and record.payload in ('{"v":1}', '{"v":2}')
                print(f"  next call after thaw answered in {time.monotonic() - started:.3f} s")
        finally:
            mongo_proxy.thaw()
        await asyncio.sleep(0.3)  # a timed-out command may still reach the server when it thaws
        stored = await backend.scan(candle, candle_ctx)
        assert all(record == dict(candles)[(*candle_ctx, item)] for item, record in stored)  # nothing torn
        await backend.put(signal, SIGNAL_KEY, Record('{"v":3}', None))
        assert await backend.get(signal, SIGNAL_KEY) == Record('{"v":3}', None)
        await backend.close()

    asyncio.run(main())


def test_frozen_before_connecting_open_times_out_and_opens_after_thaw(
    database: servers.ScratchDatabase, mongo_proxy: FreezableProxy
) -> None:
    async def main() -> None:
        frozen = _via(database.url, mongo_proxy.port, timeout=str(TIMEOUT))
        sync = MongoBackend.from_url(frozen, redis_url="none")
        sync.open()  # as asetup does: the sync backend is open, and the async clients connect at the first call
        backend = AsyncMongoBackend(frozen, sync=sync)
        mongo_proxy.freeze()
        try:
            error = await _times_out("frozen before connecting, open()", backend.open)
            assert "opening" in str(error)
            await _times_out("frozen before connecting, first read", lambda: backend.get(DOMAINS["signal"], SIGNAL_KEY))
        finally:
            mongo_proxy.thaw()
        await backend.put(DOMAINS["signal"], SIGNAL_KEY, Record('{"v":"after"}', None))
        assert await backend.get(DOMAINS["signal"], SIGNAL_KEY) == Record('{"v":"after"}', None)
        await backend.close()
        sync.close()

    asyncio.run(main())


def test_frozen_redis_counts_as_an_outage_and_operations_meet_the_deadline(
    database: servers.ScratchDatabase, private_redis: servers.PrivateRedis
) -> None:
    database.wipe(None)
    spec, key = DOMAINS["state"], ("redis-freeze", "b")
    with FreezableProxy(private_redis.port) as redis_proxy:
        backend = AsyncMongoBackend(
            f"{database.url}?timeout=1",
            redis_url=_via(private_redis.url, redis_proxy.port),
            redis_retry_interval=0.3,
        )

        async def main() -> None:
            await backend.put(spec, key, Record('{"v":1}', None))
            assert await backend.get(spec, key) == Record('{"v":1}', None)
            assert backend.cache_stats.hits == 1
            redis_proxy.freeze()
            try:
                for n in range(2, 6):
                    started = time.monotonic()
                    await backend.put(spec, key, Record(f'{{"v":{n}}}', None))
                    assert await backend.get(spec, key) == Record(f'{{"v":{n}}}', None)
                    elapsed = time.monotonic() - started
                    print(f"\n[deadline 1 s, asyncio] frozen Redis, write + read {n - 1}: {elapsed:.3f} s")
                    assert elapsed < TIMEOUT
                    await asyncio.sleep(0.1)
                stats = backend.cache_stats
                assert stats.available is False
                assert stats.outages == 1
                assert stats.bypassed > 0
            finally:
                redis_proxy.thaw()
            await asyncio.sleep(0.35)  # past the retry interval: the next command probes Redis again
            # The key written while Redis was frozen is forgotten there first: a miss that refills, then a hit.
            assert await backend.get(spec, key) == Record('{"v":5}', None)
            assert await backend.get(spec, key) == Record('{"v":5}', None)
            stats = backend.cache_stats
            assert stats.available is True
            assert stats.outages == 1
            assert stats.hits == 1 + 1
            await backend.put(spec, key, Record('{"v":6}', None))
            assert await backend.get(spec, key) == Record('{"v":6}', None)
            assert backend.cache_stats.hits == 3
            await backend.close()

        asyncio.run(main())


def test_a_key_lock_held_by_another_writer_times_out_at_the_deadline(database: servers.ScratchDatabase) -> None:
    database.wipe(None)
    backend = AsyncMongoBackend(f"{database.url}?timeout=1", redis_url="none")
    spec = DOMAINS["measure"]

    async def main() -> None:
        await backend.put(spec, ("held", "k"), Record('{"v":1}', None))
        lock_id = _hold_lock(database, "held", "k", lease_ms=60_000)  # the lease outlasts the deadline
        try:
            error = await _times_out("key lock held, write", lambda: backend.put(spec, ("held", "k"), Record("2")))
            assert "held by another writer" in str(error)
            await _times_out("key lock held, remove", lambda: backend.mark_removed(spec, ("held", "k")))
            await backend.put(spec, ("held", "free"), Record('{"v":1}', None))  # other keys are not blocked
        finally:
            _release(database, lock_id)
        assert await backend.get(spec, ("held", "k")) == Record('{"v":1}', None)  # neither call wrote anything
        await backend.close()

    asyncio.run(main())


def test_listing_and_deletion_on_the_native_backend_agree_with_the_sync_one(database: servers.ScratchDatabase) -> None:
    """The asyncio face runs the same listing operations (CONTRACTS.md 3.8), the Redis cache on: same pages,
    same order; a deleted key's cached id goes with it."""
    from persist_core.testing.listing import listable_key

    database.wipe(servers.shared_redis_url())
    candle, measure = DOMAINS["candle"], DOMAINS["measure"]
    keys = sorted({listable_key(candle, "n-", [s, "x", "e", ts]) for s in ("a", "ab", "b") for ts in (2, 9, 10)})
    buckets = [listable_key(measure, "m-", [b, k]) for b in ("a", "b") for k in ("1", "2")]
    sync = MongoBackend(database.url, redis_url=servers.shared_redis_url())
    sync.open()
    try:
        sync.insert_many(candle, [(key, Record('{"c":1}', 5)) for key in keys])
        sync.put_many(measure, [(key, Record('{"m":1}', 7)) for key in buckets])
        expected = [sync.list_records(candle, limit=4), sync.list_records(candle, after=keys[3], limit=4)]
        contexts = sync.list_contexts(candle)
        assert [c for c, _ in contexts] == sorted({key[:3] for key in keys})

        async def main() -> tuple[int, int]:
            backend = AsyncMongoBackend(database.url, sync=sync)
            try:
                assert await backend.list_records(candle, limit=4) == expected[0]
                assert await backend.list_records(candle, after=keys[3], limit=4) == expected[1]
                assert await backend.list_contexts(candle) == contexts
                assert await backend.get(measure, buckets[0]) is not None  # caches its id
                return (
                    await backend.delete_records(candle, [keys[0], keys[-1], keys[0]]),
                    await backend.delete_records(measure, [buckets[0]]),
                )
            finally:
                await backend.close()

        assert asyncio.run(main()) == (2, 1)
        assert [key for key, _ in sync.list_records(candle)] == keys[1:-1]
        assert sync.get(measure, buckets[0]) is None  # not found again through a stale cached id
        sync.put(measure, buckets[0], Record('{"m":2}', 8))
        assert sync.get(measure, buckets[0]) == Record('{"m":2}', 8)
        assert [key for key, _ in sync.list_records(measure)] == sorted(buckets)
    finally:
        sync.close()
