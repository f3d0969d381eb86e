"""Choose the asyncio MariaDB/MySQL driver by measurement: aiomysql against asyncmy (issue 10).

Both drivers run the same statements on the same table (``signal_items``, the backend's own schema) of the
test server (``PERSIST_TEST_MYSQL_URL``, default the server of ``scripts/services.sh``):

- point read by primary key and upsert (``INSERT ... ON DUPLICATE KEY UPDATE``) of a ~1 KB JSON payload on
  one connection (autocommit): ops/s, p50 and p99 of each call;
- 100 concurrent coroutines reading once each, over the driver's own pool of 10 connections: reads/s, p50
  and p99 of one round of 100.

The drivers take turns every 50 calls (every 2 rounds of 100), so that a drift of the machine (2 shared
cores) falls on both alike. Run: ``python bench/mysql_async_drivers.py [--n 4000]``; needs
``pip install aiomysql asyncmy``.
The figures and the choice are in docs/decisions.md ("Native async MariaDB").
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
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


def _summary(times: list[float], per_call: int = 1) -> tuple[float, float, float]:
    """ops/s, p50 and p99 in microseconds."""
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return per_call * len(times) / sum(times), statistics.median(ordered) * 1e6, p99 * 1e6


class _Driver:
    """One driver's connection (with its cursor) and pool, and the three timed operations."""

    def __init__(self, name: str, key: tuple[str, ...], payload: str) -> None:
        self.name = name
        self.key = key
        self.payload = payload
        self.connection: Any = None
        self.cursor: Any = None
        self.pool: Any = None

    async def open(self, args: dict[str, Any]) -> None:
        module = importlib.import_module(self.name)
        self.connection = await module.connect(**args)
        cursor = self.connection.cursor()
        self.cursor = await cursor if inspect.isawaitable(cursor) else cursor  # aiomysql: a coroutine
        self.pool = await module.create_pool(minsize=_POOL_SIZE, maxsize=_POOL_SIZE, **args)

    async def close(self) -> None:
        closing = self.cursor.close()
        if inspect.isawaitable(closing):
            await closing
        self.connection.close()
        self.pool.close()
        await self.pool.wait_closed()

    async def upsert(self) -> None:
        await self.cursor.execute(_MY_UPSERT, (*self.key, self.payload, None))

    async def read(self) -> Any:
        await self.cursor.execute(_MY_READ, self.key)
        row = await self.cursor.fetchone()
        return json.loads(row[0])

    async def _pooled_read(self) -> Any:
        async with self.pool.acquire() as pooled, pooled.cursor() as cursor:
            await cursor.execute(_MY_READ, self.key)
            row = await cursor.fetchone()
            return json.loads(row[0])

    async def concurrent(self) -> None:
        await asyncio.gather(*(self._pooled_read() for _ in range(_CONCURRENCY)))


async def _interleaved(drivers: list[_Driver], operation: str, n: int, chunk: int) -> dict[str, list[float]]:
    """``n`` timed calls of ``operation`` per driver, the drivers taking turns every ``chunk`` calls."""
    times: dict[str, list[float]] = {driver.name: [] for driver in drivers}
    for _ in range(0, n, chunk):
        for driver in drivers:
            call: Callable[[], Awaitable[Any]] = getattr(driver, operation)
            spent = times[driver.name]
            for _ in range(chunk):
                start = time.perf_counter()
                await call()
                spent.append(time.perf_counter() - start)
    return times


async def _main(url: str, n: int) -> None:
    backend = SqlBackend(url)  # creates the schema if the database is empty
    backend.open()
    backend.close()
    args = _connect_args(url)
    payload = json.dumps(sample_value(), separators=(",", ":"))
    tag = f"bench-drivers-{uuid.uuid4().hex[:8]}"
    drivers = [_Driver(name, (tag, name, "bench"), payload) for name in ("aiomysql", "asyncmy")]
    rows: dict[tuple[str, str], tuple[float, float, float]] = {}
    try:
        for driver in drivers:
            await driver.open(args)
            await driver.upsert()
        await _interleaved(drivers, "read", 200, 50)  # warm up
        for operation, label, count, chunk, per_call in (
            ("read", "point read", n, 50, 1),
            ("upsert", "upsert", n, 50, 1),
            ("concurrent", "100 concurrent reads", max(10, n // 20), 2, _CONCURRENCY),
        ):
            for name, spent in (await _interleaved(drivers, operation, count, chunk)).items():
                rows[(name, label)] = _summary(spent, per_call)
    finally:
        for driver in drivers:
            if driver.pool is not None:
                await driver.close()
        import pymysql

        cleanup = pymysql.connect(**{**args, "database": args.pop("db")})
        with cleanup.cursor() as cursor:
            cursor.execute("DELETE FROM signal_items WHERE symbol = %s", (tag,))
        cleanup.close()
    print(f"payload {len(payload)} bytes; {n} calls per single-connection row, drivers taking turns every 50")
    print(f"{'driver':<9} {'operation':<21} {'ops/s':>8} {'p50 us':>8} {'p99 us':>8}")
    for (name, label), (ops, p50, p99) in sorted(rows.items()):
        print(f"{name:<9} {label:<21} {ops:>8.0f} {p50:>8.1f} {p99:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="calls per driver in a single-connection row")
    options = parser.parse_args()
    asyncio.run(_main(os.environ.get("PERSIST_TEST_MYSQL_URL") or _DEFAULT_URL, options.n))


if __name__ == "__main__":
    main()
