"""Benchmark pairs of the asyncio face on PostgreSQL and MariaDB: ``asetup`` against the raw async driver
(psycopg ``AsyncConnection``, asyncmy) in the same run (issue 10).

Rows, per database:

- point read and upsert: ``await store.read()`` / ``await store.write(value)`` through ``asetup(url)`` (the
  native :class:`~persist_sql.AsyncSqlBackend`) against one raw connection (autocommit) running the same
  statement (psycopg with ``prepare=True``);
- 100 concurrent reads: 100 coroutines each reading once through one facade, against the same through a
  raw pool of the same size (a hand-rolled ``asyncio.Queue`` of connections, so that both databases are
  measured alike: psycopg_pool is not a dependency);
- the same point read through the thread-pool face (:class:`~persist_core.async_backend.ThreadedAsyncBackend`
  on the sync backend), for comparison.

The harness times sync callables: each side drives its coroutine with ``loop.run_until_complete`` on one
event loop owned by the rows, the same loop for both sides, so both pay the same loop overhead.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from persist_core.async_backend import ThreadedAsyncBackend
from persist_core.async_persist import AsyncPersist, asetup
from persist_core.async_stores import AsyncObjectSlotStore, AsyncSlotStore, make_async_store
from persist_core.bench.core_pairs import sample_value
from persist_core.bench.harness import Pair
from persist_core.domains import DOMAINS
from persist_sql import _dialects
from persist_sql._async_drivers import Asyncmy
from persist_sql.bench import _MY_READ, _MY_UPSERT, _PG_READ, _PG_UPSERT, _url

__all__ = ["TARGETS", "bench_pairs"]

#: Issue 10's targets: the smallest acceptable ratio ours/raw per (backend, operation).
TARGETS: dict[tuple[str, str], float] = {
    ("postgresql async", "point read"): 0.9,
    ("postgresql async", "upsert"): 0.9,
    ("postgresql async", "100 concurrent reads"): 0.8,
    ("mariadb async", "point read"): 0.9,
    ("mariadb async", "upsert"): 0.9,
    ("mariadb async", "100 concurrent reads"): 0.8,
}
_CONCURRENCY = 100
_POOL_SIZE = 10  # AsyncSqlBackend's default pool_size: the raw pool gets as many connections


class _RawPsycopg:
    """The raw side on PostgreSQL: psycopg ``AsyncConnection``, autocommit, statements prepared."""

    label = "psycopg AsyncConnection prepared"

    def __init__(self, url: str) -> None:
        self.conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)

    async def connect(self) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)

    async def write(self, connection: Any, params: tuple[Any, ...]) -> None:
        await connection.execute(_PG_UPSERT, params, prepare=True)

    async def read(self, connection: Any, key: tuple[str, ...]) -> Any:
        cursor = await connection.execute(_PG_READ, key, prepare=True)
        return await cursor.fetchone()

    async def delete(self, connection: Any, pattern: str) -> None:
        await connection.execute("DELETE FROM signal_items WHERE symbol LIKE %s", (pattern,))

    async def close(self, connection: Any) -> None:
        await connection.close()


class _RawAsyncmy:
    """The raw side on MariaDB: an asyncmy connection (autocommit) and its one cursor, the backend's arguments."""

    label = "asyncmy"

    def __init__(self, url: str) -> None:
        self.url = url

    async def connect(self) -> Any:
        import asyncmy

        args = Asyncmy(_dialects.parse_url(self.url).sa_url, _dialects.DEFAULT_TIMEOUT_S).args
        connection = await asyncmy.connect(**args)
        return connection, connection.cursor()

    async def write(self, connection: Any, params: tuple[Any, ...]) -> None:
        await connection[1].execute(_MY_UPSERT, params)

    async def read(self, connection: Any, key: tuple[str, ...]) -> Any:
        cursor = connection[1]
        await cursor.execute(_MY_READ, key)
        return await cursor.fetchone()

    async def delete(self, connection: Any, pattern: str) -> None:
        await connection[1].execute("DELETE FROM signal_items WHERE symbol LIKE %s", (pattern,))

    async def close(self, connection: Any) -> None:
        await connection[1].close()
        connection[0].close()


class _AsyncRows:
    """The facade and the raw connections, on one event loop of their own, on contexts of their own."""

    slot: AsyncObjectSlotStore
    threaded: AsyncObjectSlotStore

    def __init__(self, url: str, driver: _RawPsycopg | _RawAsyncmy) -> None:
        self.url = url
        self.driver = driver
        self.value = sample_value()
        self.tag = f"bench-async-{uuid.uuid4().hex[:8]}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.persist: AsyncPersist | None = None
        self.raw: Any = None
        self.raw_pool: asyncio.Queue[Any] | None = None
        self.raw_all: list[Any] = []
        self.ours_key = (f"{self.tag}-ours", "bench", "bench")
        self.raw_key = (f"{self.tag}-raw", "bench", "bench")

    def _run(self, coroutine: Any) -> Any:
        if self.loop is None:  # pragma: no cover - setup() makes it
            raise RuntimeError("setup() first")
        return self.loop.run_until_complete(coroutine)

    # -- lifecycle ----------------------------------------------------------------------------------

    def setup(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._run(self._setup())

    async def _setup(self) -> None:
        self.persist = await asetup(self.url, env={})
        symbol, strategy, exchange = self.ours_key
        self.slot = self.persist.live.signal(symbol=symbol, strategy_name=strategy, exchange_name=exchange)
        # The thread-pool face on the same (sync) backend, for comparison.
        sync_backend = self.persist.sync.store_backend("live", "signal")
        threaded = make_async_store(
            ThreadedAsyncBackend(sync_backend),
            DOMAINS["signal"],
            dict(zip(("symbol", "strategy_name", "exchange_name"), self.ours_key, strict=True)),
        )
        if not isinstance(threaded, AsyncSlotStore):  # pragma: no cover - signal is a slot domain
            raise TypeError(f"expected a slot store, got {threaded!r}")
        self.threaded = threaded
        self.raw = await self.driver.connect()
        self.raw_pool = asyncio.Queue()
        for _ in range(_POOL_SIZE):
            connection = await self.driver.connect()
            self.raw_all.append(connection)
            self.raw_pool.put_nowait(connection)
        await self.slot.write(self.value)
        await self._raw_write()

    def teardown(self) -> None:
        if self.loop is None:
            return
        try:
            self._run(self._teardown())
        finally:
            self.loop.close()
            self.loop = None

    async def _teardown(self) -> None:
        try:
            if self.raw is not None:
                await self.driver.delete(self.raw, f"{self.tag}-%")
        finally:
            for connection in [self.raw, *self.raw_all]:
                if connection is not None:
                    await self.driver.close(connection)
            if self.persist is not None:
                await self.persist.close()

    # -- the raw side -------------------------------------------------------------------------------

    async def _raw_write(self) -> None:
        await self.driver.write(self.raw, (*self.raw_key, json.dumps(self.value, separators=(",", ":")), None))

    async def _raw_read(self, connection: Any) -> object:
        row = await self.driver.read(connection, self.raw_key)
        return json.loads(row[0])

    async def _raw_pooled_read(self) -> object:
        pool = self.raw_pool
        if pool is None:  # pragma: no cover - setup() makes it
            raise RuntimeError("setup() first")
        connection = await pool.get()
        try:
            return await self._raw_read(connection)
        finally:
            pool.put_nowait(connection)

    async def _concurrently(self, read: Any) -> list[object]:
        values: list[object] = await asyncio.gather(*(read() for _ in range(_CONCURRENCY)))
        return values

    # -- the timed calls ----------------------------------------------------------------------------

    def ours_read(self, i: int) -> object:
        return self._run(self.slot.read())

    def raw_read(self, i: int) -> object:
        return self._run(self._raw_read(self.raw))

    def ours_write(self, i: int) -> None:
        self._run(self.slot.write(self.value))

    def raw_write(self, i: int) -> None:
        self._run(self._raw_write())

    def ours_concurrent(self, i: int) -> object:
        return self._run(self._concurrently(self.slot.read))

    def raw_concurrent(self, i: int) -> object:
        return self._run(self._concurrently(self._raw_pooled_read))

    def threaded_read(self, i: int) -> object:
        return self._run(self.threaded.read())


def bench_pairs(quick: bool) -> list[Pair]:
    """The asyncio rows of PostgreSQL and MariaDB; ``quick`` runs fewer operations."""
    n, concurrent_n = (300, 10) if quick else (3000, 100)
    pairs: list[Pair] = []
    for backend, variable, driver in (
        ("postgresql async", "PERSIST_TEST_POSTGRES_URL", _RawPsycopg),
        ("mariadb async", "PERSIST_TEST_MYSQL_URL", _RawAsyncmy),
    ):
        url = _url(variable)
        rows = _AsyncRows(url, driver(url))
        raw = rows.driver.label
        pairs += [
            Pair(backend, "point read", rows.ours_read, rows.raw_read, raw, n=n, setup=rows.setup),
            Pair(backend, "upsert", rows.ours_write, rows.raw_write, raw, n=n),
            Pair(
                backend, "100 concurrent reads", rows.ours_concurrent, rows.raw_concurrent,
                f"raw pool of {_POOL_SIZE} {raw} connections", n=concurrent_n,
            ),
            Pair(
                backend, "point read, thread-pool face", rows.threaded_read, rows.raw_read, raw, n=n,
                teardown=rows.teardown,
            ),
        ]  # fmt: skip
    return pairs
