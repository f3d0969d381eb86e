"""The live owner's writes: their ``begin`` goes to Redis with the MongoDB update (docs/mongo.md).

Real FerretDB and Redis. The interleavings of the owner's begin, its update, other writers and readers are in
test_cache_protocol.py; here the backend itself: which writes take the owner's path, what they leave in Redis
when they race a writer that does not own the storage, and that a process that no longer owns the storage (or a
forked child) goes back to waiting for markers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from persist_core.async_persist import asetup
from persist_core.backend import Record
from persist_core.domains import DOMAINS
from persist_core.persist import Persist
from persist_mongo import MongoBackend
from persist_mongo._cache import Face, ValueCache, cache_key, namespace_of
from persist_mongo._scripts import OVERLAPPED
from persist_mongo._steps import run
from tests.mongo import servers

SPEC = DOMAINS["signal"]
CONTEXT = {"symbol": "BTC/USDT", "strategy_name": "owner", "exchange_name": "x"}
KEY = ("BTC/USDT", "owner", "x")


@pytest.fixture
def database() -> Iterator[servers.ScratchDatabase]:
    db = servers.ScratchDatabase(servers.shared_mongo_url(), "w")
    yield db
    servers.delete_redis_namespace(servers.shared_redis_url(), db.name)
    db.drop()


@pytest.fixture
def owner(database: servers.ScratchDatabase) -> Iterator[Persist]:
    persist = Persist(
        {("live", "signal"): database.url}, options={"mongodb": {"redis_url": servers.shared_redis_url()}}
    )
    yield persist
    persist.close()


def _backend(persist: Persist) -> MongoBackend:
    backend = persist.backend("live", "signal")
    assert isinstance(backend, MongoBackend)
    return backend


def _cache_of(backend: MongoBackend) -> tuple[ValueCache, Face, str]:
    """The backend's value cache, its sync face, and the Redis key of :data:`KEY`."""
    cache = backend.settings.cache
    assert cache is not None
    return cache, backend._started().redis, cache_key(backend.settings.namespace, SPEC, KEY)


def _entry(database: servers.ScratchDatabase) -> bytes | None:
    client = redis.Redis.from_url(servers.shared_redis_url())
    try:
        value: Any = client.get(cache_key(namespace_of(database.name), SPEC, KEY))
        return value if value is None else bytes(value)
    finally:
        client.close()


def test_the_live_owners_writes_send_their_begin_with_the_update_and_are_read_from_redis(owner: Persist) -> None:
    store = owner.live.signal(**CONTEXT)
    for i in range(5):
        store.write({"i": i})
        assert store.read() == {"i": i}
    stats = _backend(owner).cache_stats
    assert (stats.owner_writes, stats.raced) == (5, 0)
    assert stats.hits == 5 and stats.misses == 0


def test_a_backend_that_does_not_own_the_storage_waits_for_markers(database: servers.ScratchDatabase) -> None:
    backend = MongoBackend.from_url(database.url, redis_url=servers.shared_redis_url())
    backend.open()
    try:
        for i in range(3):
            backend.put(SPEC, KEY, Record(f'{{"i":{i}}}'))
        assert backend.get(SPEC, KEY) == Record('{"i":2}')
        assert backend.cache_stats.owner_writes == 0
    finally:
        backend.close()


def test_after_the_owner_closed_its_storage_a_backend_of_the_same_process_waits_for_markers(
    database: servers.ScratchDatabase, owner: Persist
) -> None:
    owner.live.signal(**CONTEXT).write({"i": 0})
    assert _backend(owner).cache_stats.owner_writes == 1
    owner.close()  # releases the lease
    backend = MongoBackend.from_url(database.url, redis_url=servers.shared_redis_url())
    backend.open()
    try:
        backend.put(SPEC, KEY, Record('{"i":1}'))
        assert backend.cache_stats.owner_writes == 0
        assert backend.get(SPEC, KEY) == Record('{"i":1}')
    finally:
        backend.close()


def test_an_owner_write_that_meets_another_writers_marker_leaves_no_copy_and_that_writer_stores_none(
    database: servers.ScratchDatabase, owner: Persist
) -> None:
    store = owner.live.signal(**CONTEXT)
    store.write({"i": 0})
    backend = _backend(owner)
    cache, face, ckey = _cache_of(backend)
    # A writer that does not own the storage (a bare backend of another process) is between its begin and its
    # commit: its update may race the owner's, so neither may store its copy.
    assert run(cache.begin(face, ckey, "other-writer")) == 0
    store.write({"i": 1})
    stats = backend.cache_stats
    assert (stats.owner_writes, stats.raced) == (1, 1)
    assert _entry(database) == f"W|other-writer|{OVERLAPPED}".encode()
    run(cache.commit(face, ckey, "other-writer", 99, Record('{"i":"other"}')))
    assert _entry(database) is None  # its commit deleted its marker instead of storing
    assert store.read() == {"i": 1}  # from MongoDB, then filled
    assert store.read() == {"i": 1} and backend.cache_stats.hits == 1


def test_an_owners_begin_that_lands_after_a_deletion_keeps_the_tombstone(owner: Persist) -> None:
    owner.live.signal(**CONTEXT).write({"i": 0})
    cache, face, ckey = _cache_of(_backend(owner))
    run(cache.tombstone(face, [ckey]))  # a deletion of the key (its update may have come before or after it)
    sent = run(cache.send_begin(face, ckey, "owner-write"))
    assert run(cache.begun(face, sent, ckey, "owner-write")) == -1
    client = face.client
    assert client.get(ckey) == b"D|"


def test_a_forked_child_of_the_owner_does_not_take_the_owners_path(owner: Persist) -> None:
    owner.live.signal(**CONTEXT).write({"i": 0})
    holding = _backend(owner).settings.holding
    assert holding.fresh()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        os._exit(0 if not holding.fresh() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_asyncio_face_of_the_live_owner_takes_the_same_path(database: servers.ScratchDatabase) -> None:
    async def main() -> tuple[list[Any], Any]:
        persist = await asetup(database.url, redis_url=servers.shared_redis_url())
        try:
            store = persist.live.signal(**CONTEXT)
            seen = []
            for i in range(5):
                await store.write({"i": i})
                seen.append(await store.read())
            return seen, persist.sync.backend("live", "signal").cache_stats
        finally:
            await persist.close()

    seen, stats = asyncio.run(main())
    assert seen == [{"i": i} for i in range(5)]
    assert (stats.owner_writes, stats.raced, stats.hits) == (5, 0, 5)
