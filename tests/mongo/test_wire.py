"""The value cache's script calls on the wire (persist_mongo/_wire.py), on real Redis servers.

A :class:`Wire` keeps one connection per face and borrows from the pool when it is busy; these tests check what
that must not break: every call gets its own reply (threads and tasks at once), a flushed script cache is
reloaded, a frozen Redis ends each call within the timeout (on the asyncio face, where the wire bounds sends and
reads itself), and a cancelled or failed call leaves the wire usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from persist_core.backend import Record
from persist_core.domains import DOMAINS
from persist_mongo import AsyncMongoBackend, MongoBackend
from persist_mongo._cache import ValueCache
from persist_mongo._steps import run, run_async
from tests.mongo import servers
from tests.mongo.test_deadlines import _via
from tests.proxy import FreezableProxy

TIMEOUT = 0.25  # the cache's socket timeout in these tests
SLACK = 1.0
# Returns what it is given: a reply that went to the wrong call shows.
ECHO = "return {ARGV[1], redis.call('INCR', KEYS[1])}"


@pytest.fixture(scope="module")
def database() -> Iterator[servers.ScratchDatabase]:
    db = servers.ScratchDatabase(servers.shared_mongo_url(), "wire")
    yield db
    db.drop()


def _cache(url: str) -> ValueCache:
    return ValueCache(url, socket_timeout=TIMEOUT, ttl=60, lease_ms=10_000)


@contextlib.asynccontextmanager
async def _async_face(cache: ValueCache) -> AsyncIterator[tuple[Any, Any]]:
    """The cache's asyncio face on the running loop and the echo script registered on it; closed at the end."""
    face = cache.async_face()
    try:
        yield face, face.client.register_script(ECHO)
    finally:
        await face.client.aclose()
        await face.wire.close()


def test_threads_sharing_the_sync_wire_each_get_their_own_reply() -> None:
    cache = _cache(servers.shared_redis_url())
    echo = cache.face.client.register_script(ECHO)
    wire = cache.face.wire
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(200):
                reply = run(wire.call(echo, ["wire:count"], [f"{n}-{i}"]))
                assert reply[0] == f"{n}-{i}".encode(), reply
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert not errors, errors[:3]
        assert not any(thread.is_alive() for thread in threads)
        # Each call ran once: the counter the script increments saw all 1,600.
        assert int(cache.face.client.get("wire:count") or 0) >= 1600
    finally:
        cache.face.client.delete("wire:count")
        cache.close()


def test_tasks_sharing_the_asyncio_wire_each_get_their_own_reply() -> None:
    cache = _cache(servers.shared_redis_url())

    async def main() -> None:
        async with _async_face(cache) as (face, echo):

            async def one(n: int) -> None:
                for i in range(50):
                    reply = await run_async(face.wire.call(echo, ["wire:acount"], [f"{n}-{i}"]))
                    assert reply[0] == f"{n}-{i}".encode(), reply

            try:
                await asyncio.gather(*(one(n) for n in range(20)))
                assert int(await face.client.get("wire:acount") or 0) >= 1000
            finally:
                await face.client.delete("wire:acount")

    asyncio.run(main())
    cache.close()


@pytest.mark.parametrize("face", ["sync", "asyncio"])
def test_a_script_flush_between_writes_reloads_the_scripts_and_keeps_the_cache_right(
    database: servers.ScratchDatabase, private_redis: servers.PrivateRedis, face: str
) -> None:
    database.wipe(None)
    spec, key = DOMAINS["state"], ("wire-flush", face)
    admin = redis.Redis.from_url(private_redis.url)
    try:
        if face == "sync":
            backend = MongoBackend.from_url(database.url, redis_url=private_redis.url)
            backend.put(spec, key, Record('{"v":1}', None))
            admin.script_flush()
            backend.put(spec, key, Record('{"v":2}', None))  # begin meets NOSCRIPT: loaded again, run again
            assert backend.get(spec, key) == Record('{"v":2}', None)
            stats = backend.cache_stats
            backend.close()
        else:
            native = AsyncMongoBackend(database.url, redis_url=private_redis.url)

            async def main() -> Any:
                await native.put(spec, key, Record('{"v":1}', None))
                admin.script_flush()
                await native.put(spec, key, Record('{"v":2}', None))
                assert await native.get(spec, key) == Record('{"v":2}', None)
                stats = native.cache_stats
                await native.close()
                return stats

            stats = asyncio.run(main())
        assert stats.errors == 0 and stats.outages == 0
        assert stats.hits == 1  # the second write's copy was stored: the read after it is a hit
    finally:
        admin.close()


@pytest.mark.parametrize("size", [100, 8 * 1024 * 1024])
def test_a_frozen_redis_ends_asyncio_wire_calls_within_the_timeout_and_the_wire_recovers(
    private_redis: servers.PrivateRedis, size: int
) -> None:
    # The wire's asyncio pool has no socket timeout (persist_mongo/_wire.py): the read, and a send too large to be
    # handed to the socket at once, are bounded by the wire itself. 8 MB fills the loopback buffers to a proxy that
    # reads nothing.
    with FreezableProxy(private_redis.port) as proxy:
        cache = _cache(_via(private_redis.url, proxy.port))

        async def main() -> None:
            async with _async_face(cache) as (face, echo):
                try:
                    assert (await run_async(face.wire.call(echo, ["wire:f"], ["warm"])))[0] == b"warm"
                    proxy.freeze()
                    started = time.monotonic()
                    with pytest.raises(redis.TimeoutError):
                        await run_async(face.wire.call(echo, ["wire:f"], ["x" * size]))
                    elapsed = time.monotonic() - started
                    print(f"\n[wire timeout {TIMEOUT} s, asyncio] frozen Redis, a {size:,}-byte call: {elapsed:.3f} s")
                    assert elapsed < TIMEOUT + SLACK
                    proxy.thaw()
                    assert (await run_async(face.wire.call(echo, ["wire:f"], ["again"])))[0] == b"again"
                finally:
                    proxy.thaw()

        asyncio.run(main())
        cache.close()


def test_a_frozen_redis_ends_sync_wire_calls_within_the_timeout_and_the_wire_recovers(
    private_redis: servers.PrivateRedis,
) -> None:
    with FreezableProxy(private_redis.port) as proxy:
        cache = _cache(_via(private_redis.url, proxy.port))
        echo = cache.face.client.register_script(ECHO)
        wire = cache.face.wire
        try:
            assert run(wire.call(echo, ["wire:f"], ["warm"]))[0] == b"warm"
            proxy.freeze()
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError):
                run(wire.call(echo, ["wire:f"], ["x"]))
            assert time.monotonic() - started < TIMEOUT + SLACK
            proxy.thaw()
            assert run(wire.call(echo, ["wire:f"], ["again"]))[0] == b"again"
        finally:
            proxy.thaw()
            cache.close()


def test_a_cancelled_asyncio_wire_call_leaves_the_wire_usable(private_redis: servers.PrivateRedis) -> None:
    with FreezableProxy(private_redis.port) as proxy:
        cache = _cache(_via(private_redis.url, proxy.port))

        async def main() -> None:
            async with _async_face(cache) as (face, echo):
                try:
                    assert (await run_async(face.wire.call(echo, ["wire:c"], ["warm"])))[0] == b"warm"
                    proxy.freeze()
                    task = asyncio.ensure_future(run_async(face.wire.call(echo, ["wire:c"], ["lost"])))
                    await asyncio.sleep(0.05)  # sent, waiting for the reply
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task
                    proxy.thaw()
                    # The cancelled call's reply may still come on its connection: never handed to a later call.
                    for word in ("one", "two", "three"):
                        assert (await run_async(face.wire.call(echo, ["wire:c"], [word])))[0] == word.encode()
                finally:
                    proxy.thaw()

        asyncio.run(main())
        cache.close()


def _calls_in_child(cache: ValueCache, echo: Any) -> None:
    # Runs in a forked child: the parent's kept connection is not the child's to use.
    for i in range(200):
        reply = run(cache.face.wire.call(echo, ["wire:fork"], [f"child-{i}"]))
        if reply[0] != f"child-{i}".encode():
            raise SystemExit(f"child got {reply!r} for child-{i}")


def test_a_forked_child_does_not_share_the_parents_kept_connection() -> None:
    cache = _cache(servers.shared_redis_url())
    echo = cache.face.client.register_script(ECHO)
    try:
        assert run(cache.face.wire.call(echo, ["wire:fork"], ["parent"]))[0] == b"parent"  # the kept connection
        child = multiprocessing.get_context("fork").Process(target=_calls_in_child, args=(cache, echo))
        child.start()
        for i in range(200):  # at the same time as the child
            assert run(cache.face.wire.call(echo, ["wire:fork"], [f"parent-{i}"]))[0] == f"parent-{i}".encode()
        child.join(timeout=60)
        assert child.exitcode == 0
    finally:
        cache.face.client.delete("wire:fork")
        cache.close()
