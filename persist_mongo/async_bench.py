"""Benchmark pairs of the asyncio face on MongoDB: ``asetup`` against raw ``AsyncMongoClient`` / ``redis.asyncio``
doing the same round trips (issue 10).

Rows (backend ``mongodb async``), on a 1 KB signal row:

- ``cached read``: ``await store.read()`` through ``asetup(url)`` (the native
  :class:`~persist_mongo.AsyncMongoBackend`) with the Redis value cache warm, against a raw ``find_one`` on the
  unique key and ``json.loads`` of the payload: what the cache saves over asking MongoDB;
- ``cached read vs id cache``: the same read against upstream's id cache done raw: a ``redis.asyncio`` ``GET``
  of the id, then ``find_one({"_id": ...})`` and ``json.loads``;
- ``read without Redis``: the same through a facade with ``redis_url="none"``, against the raw key query;
- ``write`` / ``write without Redis``: ``await store.write(value)`` against a raw
  ``find_one_and_update(upsert=True)`` (plus a Redis ``SET`` of the payload with the cache);
- ``point read, thread-pool face``: the cached read through the sync backend in the thread pool
  (:class:`~persist_core.async_backend.ThreadedAsyncBackend`), against the raw key query, for comparison.

Both sides run on one event loop of the rows (:class:`~persist_core.bench.async_rows.LoopRows`). Each side has
contexts and Redis keys of its own in a database of the run's own, dropped at the end.
"""

from __future__ import annotations

import json
from typing import Any

from pymongo import ReturnDocument

from persist_core.async_persist import AsyncPersist, asetup
from persist_core.async_stores import AsyncObjectSlotStore
from persist_core.bench.async_rows import LoopRows, threaded_signal
from persist_core.bench.harness import Pair
from persist_mongo.bench import RunDatabase, check_servers, object_id_of, raw_update, url_of

__all__ = ["TARGETS", "bench_pairs"]

BACKEND = "mongodb async"
#: Issue 10's and 13's targets: the smallest acceptable ratio ours/raw per (backend, operation).
TARGETS: dict[tuple[str, str], float] = {
    (BACKEND, "cached read"): 1.3,
    (BACKEND, "read without Redis"): 0.9,
    (BACKEND, "write"): 0.9,
    (BACKEND, "write without Redis"): 0.9,
}
_CONTEXT = {"symbol": "bench-ours", "strategy_name": "bench", "exchange_name": "bench"}


class _AsyncRows(RunDatabase, LoopRows):
    """Two facades (with and without Redis) and raw async clients, on one event loop of their own."""

    cached: AsyncObjectSlotStore  # set by setup()
    plain: AsyncObjectSlotStore
    threaded: AsyncObjectSlotStore

    def __init__(self, mongo_url: str, redis_url: str) -> None:
        super().__init__(mongo_url, redis_url)
        self.persists: list[AsyncPersist] = []
        self.client: Any = None
        self.coll: Any = None
        self.redis: Any = None

    async def _setup(self) -> None:
        import redis.asyncio
        from pymongo import AsyncMongoClient

        for redis_url in (self.redis_url, "none"):
            self.persists.append(await asetup(self.url, env={}, redis_url=redis_url))
        # Stores are made once, as an engine keeps them: the timed calls pay for the operation alone.
        self.cached = self.persists[0].live.signal(**_CONTEXT)
        self.plain = self.persists[1].live.signal(**_CONTEXT)
        self.threaded = threaded_signal(self.persists[0], _CONTEXT)
        self.client = AsyncMongoClient(self.server_url)
        self.coll = self.client[self.database]["signal-items"]
        self.redis = redis.asyncio.Redis.from_url(self.redis_url)
        await self.cached.write(self.value)
        await self._raw_write()
        await self.redis.set(self.raw_key, str((await self._raw_upsert())["_id"]))  # for the id cache row

    async def _teardown(self) -> None:
        try:
            for persist in self.persists:
                await persist.close()
            if self.redis is not None:
                keys = [key async for key in self.redis.scan_iter(match=f"{self.database}:*", count=1000)]
                if keys:
                    await self.redis.delete(*keys)
                await self.redis.aclose()
        finally:
            if self.client is not None:
                await self.client.drop_database(self.database)
                await self.client.close()

    # -- the raw side -------------------------------------------------------------------------------

    async def _raw_upsert(self) -> dict[str, Any]:
        doc: dict[str, Any] | None = await self.coll.find_one_and_update(
            self.raw_filter, raw_update(self.value), upsert=True, return_document=ReturnDocument.AFTER
        )
        if doc is None:  # pragma: no cover - an upsert returns the document
            raise RuntimeError("find_one_and_update returned nothing")
        return doc

    async def _raw_write(self) -> None:
        doc = await self._raw_upsert()
        await self.redis.set(self.raw_value_key, doc["payload"])

    async def _raw_cached_read(self) -> object:
        doc = await self.coll.find_one({"_id": object_id_of(await self.redis.get(self.raw_key))})
        return json.loads(doc["payload"])

    async def _raw_key_read(self) -> object:
        doc = await self.coll.find_one(self.raw_filter)
        return json.loads(doc["payload"])

    # -- the timed calls ----------------------------------------------------------------------------

    def ours_cached_read(self, i: int) -> object:
        return self._run(self.cached.read())

    def raw_cached_read(self, i: int) -> object:
        return self._run(self._raw_cached_read())

    def ours_plain_read(self, i: int) -> object:
        return self._run(self.plain.read())

    def raw_key_read(self, i: int) -> object:
        return self._run(self._raw_key_read())

    def ours_cached_write(self, i: int) -> None:
        self._run(self.cached.write(self.value))

    def raw_cached_write(self, i: int) -> None:
        self._run(self._raw_write())

    def ours_plain_write(self, i: int) -> None:
        self._run(self.plain.write(self.value))

    def raw_plain_write(self, i: int) -> None:
        self._run(self._raw_upsert())

    def threaded_read(self, i: int) -> object:
        return self._run(self.threaded.read())


def bench_pairs(quick: bool) -> list[Pair]:
    """The asyncio rows of MongoDB; ``quick`` runs fewer operations."""
    n = 300 if quick else 2000
    rows = _AsyncRows(url_of("PERSIST_TEST_MONGO_URL"), url_of("PERSIST_TEST_REDIS_URL"))
    check_servers(rows)
    cached = "redis.asyncio GET + AsyncMongoClient find_one _id"
    by_key = "AsyncMongoClient find_one unique key"
    return [
        Pair(BACKEND, "cached read", rows.ours_cached_read, rows.raw_key_read, by_key, n=n, setup=rows.setup),
        Pair(BACKEND, "cached read vs id cache", rows.ours_cached_read, rows.raw_cached_read, cached, n=n),
        Pair(BACKEND, "read without Redis", rows.ours_plain_read, rows.raw_key_read, by_key, n=n),
        Pair(
            BACKEND, "write", rows.ours_cached_write, rows.raw_cached_write,
            "AsyncMongoClient find_one_and_update + redis.asyncio SET of the payload", n=n,
        ),
        Pair(
            BACKEND, "write without Redis", rows.ours_plain_write, rows.raw_plain_write,
            "AsyncMongoClient find_one_and_update", n=n,
        ),
        Pair(
            BACKEND, "point read, thread-pool face", rows.threaded_read, rows.raw_key_read, by_key, n=n,
            teardown=rows.teardown,
        ),
    ]  # fmt: skip
