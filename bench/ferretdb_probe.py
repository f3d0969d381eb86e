"""Which document layouts and query shapes a MongoDB-compatible server serves in time flat in the collection size.

Raw pymongo, no library code. For each size N (candle documents in one collection, split over two contexts),
each layout is built in a scratch database and each shape is timed (median of ``--rounds`` calls, ms):

* ``fields``: today's persist_mongo layout (``symbol``, ``interval``, ``exchangeName``, ``timestamp`` as int64,
  a unique compound index on the four);
* ``fields-str``: the same with ``timestamp`` as a zero-padded string (equality and order by string);
* ``strid``: ``_id`` is a string encoding the whole key, ``symbol|interval|exchange|<20-digit timestamp>``,
  so that ``_id`` order is key order;
* ``bucketed``: ``strid`` documents spread over one collection per context and bucket of ``--bucket``
  consecutive candles (1,000), so that no query reads a collection of more than a bucket whatever N is.

Shapes: (a) point read of one candle by its whole key; (b) a window of 100 consecutive candles of one context;
(c) insert of a new candle (``insert_one``, a duplicate fails on the unique index: first write wins) and the
``find_one_and_update`` upsert with ``$setOnInsert`` that persist_mongo uses today; (d) one page of 100 of a
listing in key order after a cursor.

Usage (the server of ``PERSIST_TEST_MONGO_URL``; ``eval "$(bash scripts/services.sh env)"``)::

    python bench/ferretdb_probe.py --sizes 1000 5000 20000 --rounds 5
    python bench/ferretdb_probe.py --explain       # also print the SQL plan FerretDB reports per shape

The scratch database ``probe_<pid>`` is dropped at the end. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from bson.int64 import Int64
from pymongo import ASCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

STEP = 60_000  # 1m candles, in ms
T0 = 1_700_000_000_000
CONTEXTS = (("BTCUSDT", "1m", "binance"), ("ETHUSDT", "1m", "binance"))
BUCKET = 1_000  # candles per collection in the bucketed layout (--bucket)
WINDOW = 100
PAYLOAD = '{"close":"101.5","high":"102.25","low":"100.75","open":"101.0","volume":"12.5"}'


def strid(ctx: tuple[str, str, str], ts: int) -> str:
    """The whole key as one string whose order is key order (timestamps zero-padded to 20 digits)."""
    return f"{ctx[0]}|{ctx[1]}|{ctx[2]}|{ts:020d}"


def document(layout: str, ctx: tuple[str, str, str], ts: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"symbol": ctx[0], "interval": ctx[1], "exchangeName": ctx[2]}
    if layout == "fields":
        doc["timestamp"] = Int64(ts)
    elif layout == "fields-str":
        doc["timestamp"] = f"{ts:020d}"
    else:
        doc = {"_id": strid(ctx, ts), **doc, "timestamp": Int64(ts)}
    return {**doc, "payload": PAYLOAD, "when": Int64(ts), "createDate": "2026-12-02T00:00:00Z"}


def bucket_name(ctx: tuple[str, str, str], ts: int) -> str:
    return f"candle-{ctx[0]}-{ctx[1]}-{ctx[2]}-{(ts - T0) // STEP // BUCKET:06d}"


def key_filter(layout: str, ctx: tuple[str, str, str], ts: int) -> dict[str, Any]:
    if layout in ("strid", "bucketed"):
        return {"_id": strid(ctx, ts)}
    stamp: Any = Int64(ts) if layout == "fields" else f"{ts:020d}"
    return {"symbol": ctx[0], "interval": ctx[1], "exchangeName": ctx[2], "timestamp": stamp}


class Store:
    """One layout in the scratch database: the collection(s) and the queries of every shape."""

    def __init__(self, db: Database[dict[str, Any]], layout: str) -> None:
        self.db = db
        self.layout = layout
        self.per_ctx = 0  # candles per context
        self.appended = 0  # candles inserted by the insert shape

    def coll(self, ctx: tuple[str, str, str], ts: int) -> Collection[dict[str, Any]]:
        return self.db[bucket_name(ctx, ts) if self.layout == "bucketed" else f"candle-{self.layout}"]

    def grow(self, size: int) -> float:
        """Add candles until ``size`` are stored; the seconds it took."""
        start = time.perf_counter()
        target = size // len(CONTEXTS)
        if self.layout in ("fields", "fields-str") and self.per_ctx == 0:
            self.coll(CONTEXTS[0], T0).create_index(
                [("symbol", ASCENDING), ("interval", ASCENDING), ("exchangeName", ASCENDING), ("timestamp", 1)],
                unique=True,
                name="candles_items_uq",
            )
        for ctx in CONTEXTS:
            batch: dict[str, list[dict[str, Any]]] = {}
            for i in range(self.per_ctx, target):
                ts = T0 + i * STEP
                batch.setdefault(self.coll(ctx, ts).name, []).append(document(self.layout, ctx, ts))
            for name, docs in batch.items():
                for at in range(0, len(docs), 1000):
                    self.db[name].insert_many(docs[at : at + 1000], ordered=False)
        self.per_ctx = target
        return time.perf_counter() - start

    def some_ts(self, rng: random.Random, room: int = 0) -> int:
        return T0 + rng.randrange(self.per_ctx - room) * STEP

    # -- shapes: each takes a random generator and runs one operation -------------------------------

    def point(self, rng: random.Random) -> None:
        ts = self.some_ts(rng)
        assert self.coll(CONTEXTS[0], ts).find_one(key_filter(self.layout, CONTEXTS[0], ts)) is not None

    def window(self, rng: random.Random, shape: str) -> None:
        ctx = CONTEXTS[0]
        lo = self.some_ts(rng, WINDOW)
        hi = lo + WINDOW * STEP
        if self.layout == "bucketed":  # the (at most two) buckets the window touches
            names = sorted({bucket_name(ctx, lo), bucket_name(ctx, hi - STEP)})
            got = [d for n in names for d in self.db[n].find(self._window_filter(shape, ctx, lo, hi))]
        else:
            got = list(self.coll(ctx, lo).find(self._window_filter(shape, ctx, lo, hi)))
        assert len(got) == WINDOW, len(got)

    def _window_filter(self, shape: str, ctx: tuple[str, str, str], lo: int, hi: int) -> dict[str, Any]:
        if self.layout in ("strid", "bucketed"):
            if shape == "range":
                return {"_id": {"$gte": strid(ctx, lo), "$lt": strid(ctx, hi)}}
            return {"_id": {"$in": [strid(ctx, t) for t in range(lo, hi, STEP)]}}
        base = {"symbol": ctx[0], "interval": ctx[1], "exchangeName": ctx[2]}
        conv: Callable[[int], Any] = Int64 if self.layout == "fields" else (lambda t: f"{t:020d}")
        if shape == "range":
            return {**base, "timestamp": {"$gte": conv(lo), "$lt": conv(hi)}}
        return {**base, "timestamp": {"$in": [conv(t) for t in range(lo, hi, STEP)]}}

    def insert(self, rng: random.Random) -> None:
        # New candles go to a third context, one after the other as a live feed writes them, so that the
        # contexts read stay put (a bucketed store creates a collection at every BUCKET-th of them).
        ctx = ("ZZZUSDT", "1m", "binance")
        ts = T0 + self.appended * STEP
        self.appended += 1
        self.coll(ctx, ts).insert_one(document(self.layout, ctx, ts))

    def insert_duplicate(self, rng: random.Random) -> None:
        ts = self.some_ts(rng)
        try:
            self.coll(CONTEXTS[0], ts).insert_one(document(self.layout, CONTEXTS[0], ts))
        except DuplicateKeyError:
            return
        raise AssertionError("a duplicate key was inserted")

    def upsert_existing(self, rng: random.Random) -> None:
        """persist_mongo's first-write-wins write today: an upsert that only sets on insert."""
        ts = self.some_ts(rng)
        doc = document(self.layout, CONTEXTS[0], ts)
        key = key_filter(self.layout, CONTEXTS[0], ts)
        rest = {k: v for k, v in doc.items() if k not in key}
        self.coll(CONTEXTS[0], ts).find_one_and_update(key, {"$setOnInsert": rest}, upsert=True)

    def page(self, rng: random.Random) -> None:
        ctx = CONTEXTS[0]
        after = self.some_ts(rng, WINDOW + 1)
        if self.layout in ("strid", "bucketed"):
            query: dict[str, Any] = {"_id": {"$gt": strid(ctx, after)}}
            order = [("_id", ASCENDING)]
        else:
            stamp: Any = Int64(after) if self.layout == "fields" else f"{after:020d}"
            query = {"symbol": ctx[0], "interval": ctx[1], "exchangeName": ctx[2], "timestamp": {"$gt": stamp}}
            order = [("timestamp", ASCENDING)]
        got = list(self.coll(ctx, after).find(query).sort(order).limit(WINDOW))
        # a bucketed page may end at its bucket's last candle: the caller then moves to the next bucket
        assert 0 < len(got) <= WINDOW


def shapes(store: Store) -> Iterator[tuple[str, Callable[[random.Random], None]]]:
    yield "a point read", store.point
    yield "b window $gte/$lt", lambda rng: store.window(rng, "range")
    yield "b window $in of 100", lambda rng: store.window(rng, "in")
    yield "c insert_one new", store.insert
    yield "c insert_one duplicate", store.insert_duplicate
    yield "c upsert $setOnInsert", store.upsert_existing
    yield "d page of 100 after cursor", store.page


def median_ms(op: Callable[[random.Random], None], rounds: int, rng: random.Random) -> float:
    op(rng)  # warm-up: connections, FerretDB's metadata of the collection
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        op(rng)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def explain(store: Store) -> None:
    """What FerretDB says it pushes down to PostgreSQL, and PostgreSQL's plan, for the point read and window."""
    ts = T0 + STEP * 10
    ctx = CONTEXTS[0]
    coll = store.coll(ctx, ts)
    for label, query in (
        ("point", key_filter(store.layout, ctx, ts)),
        ("window", store._window_filter("range", ctx, ts, ts + WINDOW * STEP)),
    ):
        out = store.db.command("explain", {"find": coll.name, "filter": query}, verbosity="queryPlanner")
        plan = out.get("queryPlanner", {}).get("Plan", out.get("queryPlanner"))
        flags = {k: out[k] for k in ("filterPushdown", "sortPushdown", "limitPushdown") if k in out}
        print(f"  explain {store.layout} {label}: {flags} {plan}")


def main() -> None:
    global BUCKET  # a probe's knob, read by bucket_name()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layouts", nargs="+", default=["fields", "fields-str", "strid", "bucketed"])
    parser.add_argument("--bucket", type=int, default=BUCKET, help="candles per collection when bucketed")
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    BUCKET = args.bucket
    url = os.environ["PERSIST_TEST_MONGO_URL"]
    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=10_000)
    name = f"probe_{os.getpid()}"
    db = client[name]
    stores = [Store(db, layout) for layout in args.layouts]
    rows: dict[tuple[str, str], list[str]] = {}
    rng = random.Random(11)
    try:
        for size in args.sizes:
            for store in stores:
                took = store.grow(size)
                print(f"# {store.layout}: {size} candles stored ({took:.1f} s to add)", flush=True)
                if args.explain:
                    explain(store)
                for label, op in shapes(store):
                    rows.setdefault((store.layout, label), []).append(f"{median_ms(op, args.rounds, rng):,.1f}")
    finally:
        client.drop_database(name)
        client.close()
    sizes = " | ".join(f"{s:,} candles" for s in args.sizes)
    print(f"\nmedian ms per operation\n\n| layout | shape | {sizes} |\n|---|---|{'---|' * len(args.sizes)}")
    for (layout, label), cells in rows.items():
        print(f"| {layout} | {label} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
