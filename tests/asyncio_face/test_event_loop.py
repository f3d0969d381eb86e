"""Where the asyncio face runs a backend's operations, and the loop-stall measure that checks it (issue 10)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from persist_core import asetup, registry
from persist_core.backend import Key, Record
from persist_core.backends.memory import MemoryBackend
from persist_core.bench import loop_stall
from persist_core.domains import DomainSpec

CONTEXT = {"symbol": "BTC/USDT", "strategy_name": "s", "exchange_name": "e"}


class _ThreadRecordingMemory(MemoryBackend):
    """The memory backend, noting the thread of every put."""

    threads: list[int] = []

    def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        self.threads.append(threading.get_ident())
        super().put(domain, key, record)


async def _write(url: str, writes: int) -> None:
    async with await asetup(url, env={}) as persist:
        store = persist.live.signal(**CONTEXT)
        for n in range(writes):
            await store.write({"n": n})


def test_a_backend_that_never_blocks_runs_on_the_loop_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._registered, "memory-threads", _ThreadRecordingMemory)
    _ThreadRecordingMemory.threads.clear()
    asyncio.run(_write("memory-threads://", 20))
    assert _ThreadRecordingMemory.threads == [threading.get_ident()] * 20


def test_a_blocking_backend_runs_in_the_thread_pool(tmp_path: Path) -> None:
    seen: list[str] = []

    async def main() -> None:
        async with await asetup(f"file:{tmp_path}/dump", env={}) as persist:
            backend = persist.sync.store_backend("live", "signal")
            original = backend.put

            def put(*args: object) -> None:
                seen.append(threading.current_thread().name)
                original(*args)  # type: ignore[arg-type]

            backend.put = put  # type: ignore[method-assign]
            await persist.live.signal(**CONTEXT).write({"n": 1})

    asyncio.run(main())
    assert len(seen) == 1 and seen[0].startswith("persist-io"), seen


def test_writes_on_the_loop_thread_still_let_other_tasks_run() -> None:
    """A loop of awaited memory writes yields once per write, as I/O would, so other tasks are not starved."""
    ticks = 0

    async def counter(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(counter(stop))
        await asyncio.sleep(0)
        before = ticks
        await _write("memory://", 200)
        during = ticks - before
        stop.set()
        await task
        assert during >= 200, f"another task ran {during} times during 200 writes"

    asyncio.run(main())


def test_the_heartbeat_measures_a_loop_held_by_a_blocking_call() -> None:
    async def main() -> tuple[list[int], list[int]]:
        idle: list[int] = []
        async with loop_stall._heartbeat(idle):
            await asyncio.sleep(0.1)
        held: list[int] = []
        async with loop_stall._heartbeat(held):
            await asyncio.sleep(0.01)
            time.sleep(0.05)  # what a blocking call on the loop does
            await asyncio.sleep(0.01)
        return idle, held

    idle, held = asyncio.run(main())
    assert len(idle) >= 20  # a tick every millisecond, give or take the machine's scheduling
    assert max(held) >= 30_000_000, f"a 50 ms block measured as {max(held) / 1e6:.1f} ms"


def test_the_stall_rows_run_on_the_memory_backend() -> None:
    result = loop_stall.measure_stall("memory", "memory://", writes=200)
    assert result.writes >= 200 and result.writes_per_s > 0
    assert 0 <= result.p99_us <= result.max_us


@pytest.mark.parametrize("name", ["postgresql", "mongodb"])
def test_the_raw_driver_rows_run_beside_ours_and_clean_up(name: str) -> None:
    """The stall of the raw async driver doing the same writes, for the native backends' rows."""
    if name == "postgresql":
        from tests.sql import servers as sql_servers

        url = sql_servers.driver_url("postgresql")
    else:
        from tests.mongo import servers as mongo_servers

        url = mongo_servers.shared_mongo_url()
    result = loop_stall.measure_raw_stall(name, url, writes=50)
    assert result is not None and result.backend.startswith(f"{name} raw")
    assert result.writes >= 50 and 0 <= result.p99_us <= result.max_us
    assert loop_stall.measure_raw_stall("file", "file:/nowhere") is None
