"""Choose the asyncio MariaDB/MySQL driver by measurement: aiomysql against asyncmy (issue 10).

Both drivers run the same statements on the same table (``signal_items``, the backend's own schema) of the
test server (``PERSIST_TEST_MYSQL_URL``, default the server of ``scripts/services.sh``):

- point read by primary key and upsert (``INSERT ... ON DUPLICATE KEY UPDATE``) of a ~1 KB JSON payload on
  one connection (autocommit): ops/s, p50 and p99 of each call;
- 100 concurrent coroutines reading once each, over the driver's own pool of 10 connections: reads/s, p50
  and p99 of one round of 100.

The drivers alternate in rounds so that a drift of the machine (2 shared cores) falls on both alike.
Run: ``python bench/mysql_async_drivers.py [--n 2000] [--rounds 3]``; needs ``pip install aiomysql asyncmy``.
The figures and the choice are in docs/decisions.md ("Native async MariaDB").
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from persist_core.bench.core_pairs import sample_value
from persist_sql import SqlBackend
from persist_sql.bench import _MY_READ, _MY_UPSERT

_DEFAULT_URL = "mysql+pymysql://persist:persist-test-pw@127.0.0.1:3306/persist_test"
_CONCURRENCY = 100
_POOL_SIZE = 10


def _connect_args(url: str) -> dict[str, Any]:
    parsed = sa.make_url(url)
    return {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 3306,
        "user": parsed.username,
        "password": parsed.password or "",
        "db": parsed.database,
        "autocommit": True,
        "charset": "utf8mb4",
    }


async def _timed(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return times


def _summary(times: list[float], per_call: int = 1) -> tuple[float, float, float]:
    """ops/s, p50 and p99 in microseconds."""
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return per_call * len(times) / sum(times), statistics.median(ordered) * 1e6, p99 * 1e6


async def _measure(driver: str, args: dict[str, Any], n: int, key: tuple[str, ...], payload: str) -> dict[str, Any]:
    if driver == "aiomysql":
        import aiomysql

        connection = await aiomysql.connect(**args)
        pool = await aiomysql.create_pool(minsize=_POOL_SIZE, maxsize=_POOL_SIZE, **args)
    else:
        import asyncmy

        connection = await asyncmy.connect(**args)
        pool = await asyncmy.create_pool(minsize=_POOL_SIZE, maxsize=_POOL_SIZE, **args)
    cursor = connection.cursor()
    if inspect.isawaitable(cursor):  # aiomysql: a coroutine; asyncmy: the cursor
        cursor = await cursor

    async def upsert() -> None:
        await cursor.execute(_MY_UPSERT, (*key, payload, None))

    async def read() -> Any:
        await cursor.execute(_MY_READ, key)
        row = await cursor.fetchone()
        return json.loads(row[0])

    async def pooled_read() -> Any:
        async with pool.acquire() as pooled, pooled.cursor() as pooled_cursor:
            await pooled_cursor.execute(_MY_READ, key)
            row = await pooled_cursor.fetchone()
            return json.loads(row[0])

    async def concurrent() -> None:
        await asyncio.gather(*(pooled_read() for _ in range(_CONCURRENCY)))

    try:
        await upsert()
        await _timed(read, 100)  # warm up
        await _timed(concurrent, 5)
        return {
            "point read": _summary(await _timed(read, n)),
            "upsert": _summary(await _timed(upsert, n)),
            "100 concurrent reads": _summary(await _timed(concurrent, max(10, n // 40)), _CONCURRENCY),
        }
    finally:
        closing = cursor.close()
        if inspect.isawaitable(closing):
            await closing
        connection.close()
        pool.close()
        await pool.wait_closed()


async def _main(url: str, n: int, rounds: int) -> None:
    backend = SqlBackend(url)  # creates the schema if the database is empty
    backend.open()
    backend.close()
    args = _connect_args(url)
    payload = json.dumps(sample_value(), separators=(",", ":"))
    tag = f"bench-drivers-{uuid.uuid4().hex[:8]}"
    results: dict[str, list[dict[str, Any]]] = {"aiomysql": [], "asyncmy": []}
    for _ in range(rounds):
        for driver in results:
            results[driver].append(await _measure(driver, args, n, (tag, driver, "bench"), payload))
    print(f"payload {len(payload)} bytes, n={n} per row, {rounds} rounds alternating; best round of each shown")
    print(f"{'driver':<9} {'operation':<21} {'ops/s':>8} {'p50 us':>8} {'p99 us':>8}")
    for driver, runs in results.items():
        for operation in runs[0]:
            ops, p50, p99 = max((run[operation] for run in runs), key=lambda figures: figures[0])
            print(f"{driver:<9} {operation:<21} {ops:>8.0f} {p50:>8.1f} {p99:>8.1f}")
    import pymysql

    cleanup = pymysql.connect(**{**args, "database": args.pop("db")})
    with cleanup.cursor() as cursor:
        cursor.execute("DELETE FROM signal_items WHERE symbol = %s", (tag,))
    cleanup.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="calls per single-connection row")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per driver")
    options = parser.parse_args()
    asyncio.run(_main(os.environ.get("PERSIST_TEST_MYSQL_URL") or _DEFAULT_URL, options.n, options.rounds))


if __name__ == "__main__":
    main()
