"""Benchmark pairs of the Mongo backend: each operation next to raw pymongo / redis-py doing the same round trips.

Rows (issue 13's targets in :data:`TARGETS`), all on a 1 KB signal row unless named otherwise:

- ``cached read``: ``persist.live.signal(...).read()`` with the Redis value cache warm, against (a) raw pymongo
  ``find_one`` on the unique key and ``json.loads`` of the payload: what the cache saves over asking MongoDB;
- ``cached read vs id cache``: the same read of ours against (b) upstream's id cache done raw: redis-py ``GET``
  of the id, then ``find_one({"_id": ...})`` and ``json.loads``;
- ``read without Redis``: ours with ``redis_url="none"`` against (a);
- ``write``: ``.write(value)`` against raw ``find_one_and_update(upsert=True)`` plus a Redis ``SET`` of the
  payload (a write-through cache without any ordering);
- ``write without Redis``: ours with ``redis_url="none"`` against raw ``find_one_and_update`` alone;
- ``window read 1000``: a 1,000-candle window against raw ``find`` of the same range, sorted, plus
  ``json.loads`` of each payload;
- ``bulk candle write 1000``: 1,000 new candles against raw ``insert_many(ordered=False)`` of the same documents.

Our side goes through ``Persist`` and the typed stores, so it pays for validation and JSON encoding; the raw
side pays for ``json.dumps``/``json.loads`` of the same value. Each side has contexts (and Redis keys) of its
own in a database of the run's own, dropped at the end. Servers: ``PERSIST_TEST_MONGO_URL`` and
``PERSIST_TEST_REDIS_URL`` (defaults: the test servers of ``scripts/services.sh``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from bson.int64 import Int64
from bson.objectid import ObjectId
from pymongo import MongoClient, ReturnDocument
from pymongo.collection import Collection

from persist_core.bench.core_pairs import sample_value
from persist_core.bench.harness import Pair
from persist_core.persist import Persist
from persist_core.stores import CandleStore, ObjectSlotStore

__all__ = ["TARGETS", "bench_pairs"]

#: Issue 13's targets: the smallest acceptable ratio ours/raw per (backend, operation).
TARGETS: dict[tuple[str, str], float] = {
    ("mongo", "cached read"): 1.3,
    ("mongo", "write"): 0.9,
}

_DEFAULT_URLS = {
    "PERSIST_TEST_MONGO_URL": "mongodb://127.0.0.1:27017/persist_test",
    "PERSIST_TEST_REDIS_URL": "redis://127.0.0.1:6379/0",
}
_WINDOW = 1000
_CANDLE_BASE_MS = 1_500_000_000_000
_STEP_MS = 60_000
_CLOCK_MS = 1_900_000_000_000


def url_of(name: str) -> str:
    """The test server's URL in the environment variable ``name``, or its default."""
    return os.environ.get(name) or _DEFAULT_URLS[name]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def raw_update(value: Any) -> dict[str, Any]:
    """The raw side's upsert of a signal document holding ``value`` (what the backend's write sends)."""
    now = dt.datetime.now(dt.UTC)
    return {
        "$set": {"payload": _dumps(value), "when": None, "updatedDate": now},
        "$setOnInsert": {"createDate": now},
        "$inc": {"version": Int64(1)},
    }


def object_id_of(raw: Any) -> ObjectId:
    """The ObjectId of a raw Redis reply (bytes or str)."""
    if raw is None:  # pragma: no cover - the raw write cached it
        raise RuntimeError("the raw id is not in Redis")
    return ObjectId(raw.decode() if isinstance(raw, bytes) else raw)


class RunDatabase:
    """A database of the run's own on the test server, and the raw side's signal document and Redis key."""

    def __init__(self, mongo_url: str, redis_url: str) -> None:
        self.redis_url = redis_url
        self.database = f"persist_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        parts = urlsplit(mongo_url)
        self.server_url = urlunsplit((parts.scheme, parts.netloc, "/", parts.query, ""))
        self.url = urlunsplit((parts.scheme, parts.netloc, f"/{self.database}", parts.query, ""))
        self.value = sample_value()
        self.raw_filter = {"symbol": "bench-raw", "strategyName": "bench", "exchangeName": "bench"}
        self.raw_key = f"{self.database}:raw:signal"
        self.raw_value_key = f"{self.database}:raw:signal-value"


class _Rows(RunDatabase):
    """Our stores (with and without Redis) and raw clients of their own, on one database of the run."""

    cached: ObjectSlotStore  # set by setup()
    plain: ObjectSlotStore
    window: CandleStore
    bulk: CandleStore
    coll: Collection[dict[str, Any]]
    candles: Collection[dict[str, Any]]

    def __init__(self, mongo_url: str, redis_url: str) -> None:
        super().__init__(mongo_url, redis_url)
        self.persists: list[Persist] = []
        self.client: MongoClient[dict[str, Any]] | None = None
        self.redis: redis.Redis | None = None
        self.next_ours = 0
        self.next_raw = 0

    # -- lifecycle ----------------------------------------------------------------------------------

    def _persist(self, redis_url: str) -> Persist:
        routes = {("live", name): self.url for name in ("signal", "candle")}
        persist = Persist(routes, options={"mongodb": {"redis_url": redis_url}}, clock=lambda: _CLOCK_MS)
        self.persists.append(persist)
        return persist

    def setup(self) -> None:
        cached, plain = self._persist(self.redis_url), self._persist("none")
        context = {"symbol": "bench-ours", "strategy_name": "bench", "exchange_name": "bench"}
        # Stores are made once, as an engine keeps them: the timed calls pay for the operation alone.
        self.cached = cached.live.signal(**context)
        self.plain = plain.live.signal(**context)
        self.window = cached.live.candle(symbol="bench-window-ours", interval="1m", exchange_name="bench")
        self.bulk = cached.live.candle(symbol="bench-bulk-ours", interval="1m", exchange_name="bench")
        self.client = MongoClient(self.server_url)
        db = self.client[self.database]
        self.coll, self.candles = db["signal-items"], db["candle-items"]
        self.redis = redis.Redis.from_url(self.redis_url)
        self.cached.write(self.value)
        self.raw_write(0)
        self.redis.set(self.raw_key, str(self._raw_upsert()["_id"]))  # for (b), the id cache
        batch = [self._candle(k) for k in range(_WINDOW)]
        if self.window.write(batch) != _WINDOW:
            raise RuntimeError("the benchmark window could not be written")
        self.candles.insert_many([self._raw_candle("bench-window-raw", c) for c in batch])

    def teardown(self) -> None:
        for persist in self.persists:
            persist.close()
        if self.redis is not None:
            keys = list(self.redis.scan_iter(match=f"{self.database}:*", count=1000))
            for start in range(0, len(keys), 500):
                self.redis.delete(*keys[start : start + 500])
            self.redis.close()
        if self.client is not None:
            self.client.drop_database(self.database)
            self.client.close()

    # -- helpers ------------------------------------------------------------------------------------

    def _candle(self, k: int) -> dict[str, Any]:
        price = 42_000.0 + (k % 97) * 0.25
        return {
            "timestamp": _CANDLE_BASE_MS + k * _STEP_MS,
            "open": price,
            "high": price + 12.5,
            "low": price - 11.75,
            "close": price + 0.5,
            "volume": 153.25 + k % 13,
        }

    def _raw_candle(self, symbol: str, candle: dict[str, Any]) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        return {
            "symbol": symbol,
            "interval": "1m",
            "exchangeName": "bench",
            "timestamp": Int64(candle["timestamp"]),
            "payload": _dumps(candle),
            "when": None,
            "createDate": now,
            "updatedDate": now,
        }

    # -- reads --------------------------------------------------------------------------------------

    def ours_cached_read(self, i: int) -> object:
        return self.cached.read()

    def ours_plain_read(self, i: int) -> object:
        return self.plain.read()

    def raw_cached_read(self, i: int) -> object:
        """(b): redis-py GET of the id, then pymongo find_one by _id."""
        assert self.redis is not None
        doc = self.coll.find_one({"_id": object_id_of(self.redis.get(self.raw_key))})
        if doc is None:  # pragma: no cover - raw_write wrote it
            raise RuntimeError("the raw document is missing")
        return json.loads(doc["payload"])

    def raw_key_read(self, i: int) -> object:
        """(a): pymongo find_one on the unique key."""
        doc = self.coll.find_one(self.raw_filter)
        if doc is None:  # pragma: no cover - raw_write wrote it
            raise RuntimeError("the raw document is missing")
        return json.loads(doc["payload"])

    def ours_window(self, i: int) -> object:
        window = self.window.read(_WINDOW, _CANDLE_BASE_MS)
        if window is None:  # pragma: no cover - setup wrote the whole window
            raise RuntimeError("the benchmark window is incomplete")
        return window

    def raw_window(self, i: int) -> object:
        query = {
            "symbol": "bench-window-raw",
            "interval": "1m",
            "exchangeName": "bench",
            "timestamp": {"$gte": _CANDLE_BASE_MS, "$lt": _CANDLE_BASE_MS + _WINDOW * _STEP_MS},
        }
        docs = list(self.candles.find(query, batch_size=_WINDOW + 1).sort("timestamp", 1))
        if len(docs) != _WINDOW:  # pragma: no cover - setup wrote the whole window
            raise RuntimeError("the benchmark window is incomplete")
        return [json.loads(doc["payload"]) for doc in docs]

    # -- writes -------------------------------------------------------------------------------------

    def ours_cached_write(self, i: int) -> None:
        self.cached.write(self.value)

    def ours_plain_write(self, i: int) -> None:
        self.plain.write(self.value)

    def _raw_upsert(self) -> dict[str, Any]:
        update = raw_update(self.value)
        doc = self.coll.find_one_and_update(self.raw_filter, update, upsert=True, return_document=ReturnDocument.AFTER)
        if doc is None:  # pragma: no cover - an upsert returns the document
            raise RuntimeError("find_one_and_update returned nothing")
        return doc

    def raw_write(self, i: int) -> None:
        """find_one_and_update(upsert=True), then a Redis SET of the returned payload."""
        assert self.redis is not None
        doc = self._raw_upsert()
        self.redis.set(self.raw_value_key, doc["payload"])

    def raw_plain_write(self, i: int) -> None:
        self._raw_upsert()

    def ours_bulk(self, i: int) -> int:
        # Every call writes 1,000 candles that are new (first write wins would skip repeated ones).
        self.next_ours += 1
        start = self.next_ours * _WINDOW
        return self.bulk.write([self._candle(k) for k in range(start, start + _WINDOW)])

    def raw_bulk(self, i: int) -> None:
        self.next_raw += 1
        start = self.next_raw * _WINDOW
        docs = [self._raw_candle("bench-bulk-raw", self._candle(k)) for k in range(start, start + _WINDOW)]
        self.candles.insert_many(docs, ordered=False)


def check_servers(rows: Any) -> None:
    """Fail now, with one reason, if a server is missing (the harness then skips this provider whole)."""
    client: MongoClient[dict[str, Any]] = MongoClient(rows.server_url, serverSelectionTimeoutMS=2000)
    try:
        client.admin.command("ping")
    finally:
        client.close()
    cache = redis.Redis.from_url(rows.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        cache.ping()
    finally:
        cache.close()


def bench_pairs(quick: bool) -> list[Pair]:
    """The Mongo rows; ``quick`` runs fewer operations."""
    n, window_n, bulk_n = (300, 20, 10) if quick else (2000, 100, 40)
    rows = _Rows(url_of("PERSIST_TEST_MONGO_URL"), url_of("PERSIST_TEST_REDIS_URL"))
    check_servers(rows)
    b = "(b) redis GET + find_one _id"
    a = "(a) find_one unique key"
    return [
        Pair("mongo", "cached read", rows.ours_cached_read, rows.raw_key_read, a, n=n, setup=rows.setup),
        Pair("mongo", "cached read vs id cache", rows.ours_cached_read, rows.raw_cached_read, b, n=n),
        Pair("mongo", "read without Redis", rows.ours_plain_read, rows.raw_key_read, a, n=n),
        Pair("mongo", "write", rows.ours_cached_write, rows.raw_write, "find_one_and_update + redis SET", n=n),
        Pair("mongo", "write without Redis", rows.ours_plain_write, rows.raw_plain_write, "find_one_and_update", n=n),
        Pair("mongo", "window read 1000", rows.ours_window, rows.raw_window, "find range + json.loads", n=window_n),
        Pair(
            "mongo", "bulk candle write 1000", rows.ours_bulk, rows.raw_bulk, "insert_many(ordered=False)",
            n=bulk_n, teardown=rows.teardown,
        ),
    ]  # fmt: skip
