"""The Redis value cache is never stale: processes writing and reading one key, Redis up, flushed, down, back.

Four processes (spawned, each with a backend of its own) write and read one record as fast as they can. Each
write logs when it was acknowledged and the version it gave the document; each read logs when it began and the
version it saw. Meanwhile this process runs a private redis-server through four phases: up, flushed every
150 ms (FLUSHALL), killed, restarted (empty). A read is stale if it saw a version older than the newest write
acknowledged before it began. CLOCK_MONOTONIC is one clock for every process of the machine.
"""

from __future__ import annotations

import bisect
import multiprocessing
import queue
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from persist_core.backend import Record
from persist_core.domains import DOMAINS
from persist_core.errors import BackendUnavailableError
from persist_mongo import MongoBackend
from tests.mongo import servers

SPEC = DOMAINS["state"]
KEY = ("race", "one-key")
WORKERS = 4
PHASE_SECONDS = 2.5
PHASES = ("up", "flushed", "down", "back")


def _worker(url: str, redis_url: str, seed: int, ready: Any, stop: Any, out: Any) -> None:
    """Write (a third of the time) and read the key until ``stop``; put the logs on ``out``."""
    rng = random.Random(seed)
    backend = MongoBackend.from_url(url, redis_url=redis_url, redis_retry_interval=0.2, timeout=5)
    backend.open()
    writes: list[tuple[int, int]] = []
    reads: list[tuple[int, int]] = []
    errors = 0
    ready.put(seed)
    n = 0
    while not stop.is_set():
        n += 1
        try:
            if rng.random() < 1 / 3:
                version = backend.put_versioned(SPEC, KEY, Record(f'{{"by":{seed},"n":{n}}}'))
                writes.append((time.monotonic_ns(), version))
            else:
                started = time.monotonic_ns()
                found = backend.get_versioned(SPEC, KEY)
                reads.append((started, -1 if found is None else found[1]))
        except BackendUnavailableError:  # a write's outcome unknown: not logged as acknowledged
            errors += 1
    stats = backend.cache_stats
    backend.close()
    out.put((writes, reads, errors, stats.hits, stats.outages))


@pytest.fixture
def database() -> Iterator[servers.ScratchDatabase]:
    db = servers.ScratchDatabase(servers.shared_mongo_url(), "st")
    yield db
    db.drop()


def _stale(writes: list[tuple[int, int]], reads: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """The reads older than the newest write acknowledged before they began: (start, seen, newest)."""
    writes.sort()
    acked = [t for t, _ in writes]
    newest: list[int] = []
    for _, version in writes:
        newest.append(max(version, newest[-1] if newest else 0))
    out = []
    for started, seen in reads:
        i = bisect.bisect_left(acked, started)  # the writes acknowledged strictly before the read began
        if i and seen < newest[i - 1]:
            out.append((started, seen, newest[i - 1]))
    return out


def test_no_read_is_older_than_an_acknowledged_write_through_flushes_and_outages(
    database: servers.ScratchDatabase, private_redis: servers.PrivateRedis
) -> None:
    setup = MongoBackend.from_url(database.url, redis_url=private_redis.url)
    setup.put(SPEC, KEY, Record('{"by":-1}'))
    setup.close()
    context = multiprocessing.get_context("spawn")
    ready, out, stop = context.Queue(), context.Queue(), context.Event()
    procs = [
        context.Process(target=_worker, args=(database.url, private_redis.url, n, ready, stop, out))
        for n in range(WORKERS)
    ]
    for proc in procs:
        proc.start()
    results = []
    try:
        for _ in procs:
            ready.get(timeout=60)
        bounds = [time.monotonic_ns()]
        time.sleep(PHASE_SECONDS)  # up
        bounds.append(time.monotonic_ns())
        client = redis.Redis.from_url(private_redis.url)
        flushes = 0
        while time.monotonic_ns() < bounds[-1] + PHASE_SECONDS * 1e9:  # flushed, again and again
            client.flushall()
            flushes += 1
            time.sleep(0.15)
        client.close()
        bounds.append(time.monotonic_ns())
        private_redis.kill()  # down
        time.sleep(PHASE_SECONDS)
        bounds.append(time.monotonic_ns())
        private_redis.start()  # back, empty
        time.sleep(PHASE_SECONDS)
        bounds.append(time.monotonic_ns())
        stop.set()
        for _ in procs:
            results.append(out.get(timeout=60))
    except queue.Empty:  # pragma: no cover - a worker died: its exit code says why
        pytest.fail(f"a worker did not report: exit codes {[proc.exitcode for proc in procs]}")
    finally:
        stop.set()
        for proc in procs:
            proc.join(timeout=30)
    writes = [w for result in results for w in result[0]]
    reads = [r for result in results for r in result[1]]
    hits = sum(result[3] for result in results)
    phases = {}
    for name, start, end in zip(PHASES, bounds[:-1], bounds[1:], strict=True):
        phases[name] = (
            sum(start <= t < end for t, _ in writes),
            sum(start <= t < end for t, _ in reads),
        )
    stale = _stale(writes, reads)
    print(
        f"\n[stale-read race] {len(writes)} writes, {len(reads)} reads ({hits} Redis hits), {flushes} flushes; "
        f"per phase (writes, reads): {phases}; errors {sum(r[2] for r in results)}; stale {len(stale)}"
    )
    assert all(w >= 10 and r >= 10 for w, r in phases.values()), phases  # every phase raced
    assert hits > len(reads) // 4  # the cache served reads (it is not bypassed)
    assert all(seen >= 1 for _, seen in reads)  # the record exists throughout
    assert stale == [], f"{len(stale)} stale reads, e.g. (start, seen, newest acknowledged) {stale[:5]}"
