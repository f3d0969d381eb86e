"""How long the asyncio face keeps the event loop from running other tasks (issue 10's loop-stall rows).

A heartbeat task sleeps 1 ms at a time and records how late each wake-up is, while ``writes`` writes of the
bench's 1 KB value go through ``asetup(url)`` one after the other. A stall is a wake-up's lateness beyond
what the same heartbeat shows on an idle loop in the same run (the baseline, reported beside it), so that
the timer resolution of the machine is not counted against the library.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from persist_core.async_persist import asetup
from persist_core.bench.core_pairs import sample_value
from persist_core.bench.harness import percentile

__all__ = ["StallResult", "format_stalls", "measure_stall", "stall_targets"]

_TICK = 0.001
_CONTEXT = {"symbol": "BTC/USDT:USDT", "strategy_name": "bench", "exchange_name": "binance"}


@dataclass(frozen=True)
class StallResult:
    """Lateness of a 1 ms heartbeat in microseconds while the writes ran, and on an idle loop."""

    backend: str
    writes: int
    max_us: float
    p99_us: float
    idle_max_us: float
    idle_p99_us: float
    writes_per_s: float


async def _heartbeat(stop: asyncio.Event, late_ns: list[int]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(_TICK)
        late_ns.append(int((loop.time() - before - _TICK) * 1e9))


async def _measure(name: str, url: str, writes: int, env: dict[str, str]) -> StallResult:
    idle: list[int] = []
    stop = asyncio.Event()
    beat = asyncio.ensure_future(_heartbeat(stop, idle))
    await asyncio.sleep(0.3)
    stop.set()
    await beat
    async with await asetup(url, env=env) as persist:
        store = persist.live.signal(**_CONTEXT)
        value = sample_value()
        await store.write(value)  # opening work and the ownership claim are not part of the stall
        busy: list[int] = []
        stop = asyncio.Event()
        beat = asyncio.ensure_future(_heartbeat(stop, busy))
        started = time.perf_counter()
        for n in range(writes):
            value["minuteEstimatedTime"] = n
            await store.write(value)
        elapsed = time.perf_counter() - started
        stop.set()
        await beat
    busy.sort()
    idle.sort()
    return StallResult(
        backend=name,
        writes=writes,
        max_us=busy[-1] / 1000,
        p99_us=percentile(busy, 99) / 1000,
        idle_max_us=idle[-1] / 1000,
        idle_p99_us=percentile(idle, 99) / 1000,
        writes_per_s=writes / elapsed,
    )


def measure_stall(name: str, url: str, writes: int = 1000, env: dict[str, str] | None = None) -> StallResult:
    """Run the heartbeat beside ``writes`` async writes to ``url`` (labelled ``name``) in a new event loop."""
    return asyncio.run(_measure(name, url, writes, env if env is not None else {}))


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
            except Exception as exc:  # a benchmark reports a missing server, it does not crash
                skipped.append(f"loop stall {name}: {type(exc).__name__}: {exc}")
    return results, skipped


def format_stalls(results: list[StallResult]) -> str:
    """A table: backend, writes, writes/s, heartbeat lateness max/p99 (busy) beside max/p99 (idle)."""
    lines = [
        "event-loop stall (1 ms heartbeat beside awaited writes; microseconds of lateness)",
        f"{'backend':<11} {'writes':>6} {'writes/s':>9} {'max':>8} {'p99':>8} {'idle max':>9} {'idle p99':>9}",
    ]
    for r in results:
        lines.append(
            f"{r.backend:<11} {r.writes:>6} {r.writes_per_s:>9.0f} {r.max_us:>8.0f} {r.p99_us:>8.0f} "
            f"{r.idle_max_us:>9.0f} {r.idle_p99_us:>9.0f}"
        )
    return "\n".join(lines)
