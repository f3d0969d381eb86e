"""How long the asyncio face keeps the event loop from running other tasks (issue 10's loop-stall rows).

A heartbeat posts a callback to the loop every 1 ms from its own thread and records how long each waited
until the loop ran it, while ``writes`` writes of the bench's 1 KB value go through ``asetup(url)`` one after
the other. That wait is the stall: the time a ready task could not run. The same heartbeat on an idle loop
in the same run is reported beside it, so that the machine's own scheduling noise is not counted against
the library.

Why not ``await asyncio.sleep(0.001)`` and its lateness: ``epoll_wait`` takes its timeout in whole
milliseconds and asyncio rounds it up, so a loop that wakes for any other event 0.1 ms before a timer is due
sleeps a full millisecond more. With nothing but empty callbacks posted to the loop from a thread at random,
such a heartbeat was late by 0.45 ms (p50) and 0.97 ms (p99), against 0.11 / 0.22 ms when nothing was
posted (docs/decisions.md, "Measuring the loop stall"): it measures the selector's rounding, not a stall.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from persist_core.async_persist import asetup
from persist_core.bench.core_pairs import sample_value
from persist_core.bench.harness import percentile

__all__ = ["StallResult", "format_stalls", "measure_raw_stall", "measure_stall", "stall_targets"]

_TICK = 0.001
_MIN_SECONDS = 0.3
_CONTEXT = {"symbol": "BTC/USDT:USDT", "strategy_name": "bench", "exchange_name": "binance"}


@dataclass(frozen=True)
class StallResult:
    """How long a 1 ms heartbeat's callbacks waited for the loop, in microseconds, while the writes ran and
    on an idle loop."""

    backend: str
    writes: int
    max_us: float
    p99_us: float
    idle_max_us: float
    idle_p99_us: float
    writes_per_s: float


@asynccontextmanager
async def _heartbeat(late_ns: list[int]) -> AsyncIterator[None]:
    """Post a callback to the running loop every 1 ms from a thread; ``late_ns`` gets each one's wait."""
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def ran(posted: int) -> None:
        late_ns.append(time.perf_counter_ns() - posted)

    def tick() -> None:
        while not stop.wait(_TICK):
            loop.call_soon_threadsafe(ran, time.perf_counter_ns())

    thread = threading.Thread(target=tick, name="persist-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        await loop.run_in_executor(None, thread.join)
        await asyncio.sleep(0)  # run the last posted callback


#: One awaited write of the bench's value, numbered.
Writer = Callable[[int], Awaitable[None]]


@asynccontextmanager
async def _ours(url: str, env: dict[str, str]) -> AsyncIterator[Writer]:
    """Writes of the live signal through ``asetup(url)``."""
    async with await asetup(url, env=env) as persist:
        store = persist.live.signal(**_CONTEXT)
        value = sample_value()

        async def write(n: int) -> None:
            value["minuteEstimatedTime"] = n
            await store.write(value)

        yield write


@asynccontextmanager
async def _raw_psycopg(url: str) -> AsyncIterator[Writer]:
    """The same writes as raw psycopg ``AsyncConnection`` upserts into a table of their own."""
    import psycopg

    conninfo = "postgresql://" + url.split("://", 1)[1].split("?", 1)[0]
    table = f"persist_stall_{uuid.uuid4().hex[:8]}"
    connection = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    value = sample_value()
    upsert = f"INSERT INTO {table} VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET p = excluded.p"  # noqa: S608 - our name
    try:
        await connection.execute(f"CREATE TABLE {table} (k text PRIMARY KEY, p jsonb)")

        async def write(n: int) -> None:
            value["minuteEstimatedTime"] = n
            await connection.execute(upsert, ("bench", json.dumps(value)))

        yield write
    finally:
        await connection.execute(f"DROP TABLE IF EXISTS {table}")
        await connection.close()


@asynccontextmanager
async def _raw_mongo(url: str) -> AsyncIterator[Writer]:
    """The same writes as raw ``AsyncMongoClient.find_one_and_update`` upserts into a collection of their own."""
    from pymongo import AsyncMongoClient

    client: Any = AsyncMongoClient(url)
    collection = client.get_default_database()[f"persist-stall-{uuid.uuid4().hex[:8]}"]
    value = sample_value()
    try:

        async def write(n: int) -> None:
            value["minuteEstimatedTime"] = n
            await collection.find_one_and_update({"k": "bench"}, {"$set": {"p": json.dumps(value)}}, upsert=True)

        yield write
    finally:
        await collection.drop()
        await client.close()


async def _measure(name: str, writer: AbstractAsyncContextManager[Writer], writes: int) -> StallResult:
    idle: list[int] = []
    async with _heartbeat(idle):
        await asyncio.sleep(0.3)
    async with writer as write:
        await write(0)  # opening work and the ownership claim are not part of the stall
        busy: list[int] = []
        async with _heartbeat(busy):
            started = time.perf_counter()
            done = 0
            # At least _MIN_SECONDS, so that a fast backend (memory) gives the heartbeat a few hundred ticks.
            while done < writes or time.perf_counter() - started < _MIN_SECONDS:
                await write(done)
                done += 1
            elapsed = time.perf_counter() - started
    busy.sort()
    idle.sort()
    return StallResult(
        backend=name,
        writes=done,
        max_us=busy[-1] / 1000,
        p99_us=percentile(busy, 99) / 1000,
        idle_max_us=idle[-1] / 1000,
        idle_p99_us=percentile(idle, 99) / 1000,
        writes_per_s=done / elapsed,
    )


def measure_stall(name: str, url: str, writes: int = 1000, env: dict[str, str] | None = None) -> StallResult:
    """Run the heartbeat beside ``writes`` async writes to ``url`` (labelled ``name``) in a new event loop."""
    return asyncio.run(_measure(name, _ours(url, env if env is not None else {}), writes))


def measure_raw_stall(name: str, url: str, writes: int = 1000) -> StallResult | None:
    """The same heartbeat beside the raw async driver doing the same writes (PostgreSQL, MongoDB), or ``None``
    for a backend without such a driver: what the machine and the driver alone cost the loop."""
    if name == "postgresql":
        return asyncio.run(_measure(f"{name} raw psycopg", _raw_psycopg(url), writes))
    if name == "mongodb":
        return asyncio.run(_measure(f"{name} raw pymongo", _raw_mongo(url), writes))
    return None


@contextmanager
def _scratch() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="persist-stall-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def stall_targets() -> list[tuple[str, Callable[[str], str]]]:
    """``(name, url_for(folder))`` for the backends the stall rows run on (servers from PERSIST_TEST_*)."""
    targets: list[tuple[str, Callable[[str], str]]] = [
        ("file", lambda folder: f"file:{folder}/dump"),
        ("sqlite", lambda folder: f"sqlite:///{folder}/state.db"),
        ("memory", lambda folder: "memory://"),
    ]
    for name, variable in (("postgresql", "PERSIST_TEST_POSTGRES_URL"), ("mariadb", "PERSIST_TEST_MYSQL_URL")):
        server = os.environ.get(variable)
        if server:
            # The bench's rows share the test server's database; bring its schema up to date as `migrate` would.
            url = f"{server}{'&' if '?' in server else '?'}auto_migrate=1"
            targets.append((name, lambda folder, url=url: url))  # type: ignore[misc]
    mongo = os.environ.get("PERSIST_TEST_MONGO_URL")
    if mongo:
        targets.append(("mongodb", lambda folder, mongo=mongo: mongo))  # type: ignore[misc]
    return targets


def run_stalls(names: set[str] | None, writes: int) -> tuple[list[StallResult], list[str]]:
    """Measure every target (or those in ``names``); a target that fails is reported, not fatal."""
    results: list[StallResult] = []
    skipped: list[str] = []
    env = {k: v for k, v in os.environ.items() if k == "PERSIST_REDIS_URL"}
    if "PERSIST_TEST_REDIS_URL" in os.environ:
        env["PERSIST_REDIS_URL"] = os.environ["PERSIST_TEST_REDIS_URL"]
    for name, url_for in stall_targets():
        if names and name not in names:
            continue
        with _scratch() as folder:
            try:
                results.append(measure_stall(name, url_for(folder), writes, env))
                raw = measure_raw_stall(name, url_for(folder), writes)
                if raw is not None:
                    results.append(raw)
            except Exception as exc:  # a benchmark reports a missing server, it does not crash
                skipped.append(f"loop stall {name}: {type(exc).__name__}: {exc}")
    return results, skipped


def format_stalls(results: list[StallResult]) -> str:
    """A table: backend, writes, writes/s, heartbeat lateness max/p99 (busy) beside max/p99 (idle)."""
    lines = [
        "event-loop stall (a callback posted every 1 ms beside awaited writes; microseconds it waited for the loop)",
        f"{'backend':<22} {'writes':>6} {'writes/s':>9} {'max':>8} {'p99':>8} {'idle max':>9} {'idle p99':>9}",
    ]
    for r in results:
        lines.append(
            f"{r.backend:<22} {r.writes:>6} {r.writes_per_s:>9.0f} {r.max_us:>8.0f} {r.p99_us:>8.0f} "
            f"{r.idle_max_us:>9.0f} {r.idle_p99_us:>9.0f}"
        )
    return "\n".join(lines)
