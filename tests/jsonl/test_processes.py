"""The jsonl backend shared between processes: an append race, a forked writer, and writers killed mid-append."""

from __future__ import annotations

import json
import multiprocessing
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from persist_core.backends.jsonl import JsonlBackend
from tests.jsonl.helpers import LOG, entry, insert, kill_loop_writer, lines_of, quarantine_files, race_appender

SPAWN = multiprocessing.get_context("spawn")


def test_two_processes_appending_overlapping_ids_store_each_once(tmp_path: Path) -> None:
    path = tmp_path / "race.jsonl"
    rounds, batch, step = 150, 20, 10  # consecutive batches overlap too, so every id is offered 2-4 times
    results = SPAWN.Queue()
    procs = [SPAWN.Process(target=race_appender, args=(str(path), who, rounds, batch, step, results)) for who in (0, 1)]
    for proc in procs:
        proc.start()
    stored = dict(results.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
    assert [proc.exitcode for proc in procs] == [0, 0]

    data = path.read_bytes()
    assert data.endswith(b"\n")
    entries = [json.loads(line) for line in lines_of(path)]  # every line whole: nothing torn
    counts = Counter(e["id"] for e in entries)
    offered = {
        f"id-{n:06d}"
        for r in range(rounds)
        for who in (0, 1)
        for n in range(r * step + who * 10, r * step + who * 10 + batch)
    }
    assert set(counts) == offered
    assert [i for i, c in counts.items() if c != 1] == []
    assert stored[0] + stored[1] == len(offered)
    assert stored[0] > 0 and stored[1] > 0, "the processes did not actually race"
    assert quarantine_files(path) == []
    with JsonlBackend(path) as backend:
        assert [k for k, _ in backend.scan(LOG, ())] == sorted(offered)


def test_a_forked_child_does_not_share_the_parents_lock(tmp_path: Path) -> None:
    """After fork both processes hold one open file description, whose flock does not exclude the other."""
    path = tmp_path / "fork.jsonl"
    backend = JsonlBackend(path, durability="process")
    insert(backend, [entry("before-fork")])
    fork = multiprocessing.get_context("fork")
    for attempt in range(20):
        barrier = fork.Barrier(2)

        child = fork.Process(target=_forked_append, args=(backend, barrier, attempt, 1))
        child.start()
        _forked_append(backend, barrier, attempt, 0)
        child.join(timeout=60)
        assert child.exitcode == 0
    counts = Counter(e["id"] for e in map(json.loads, lines_of(path)))
    assert len(counts) == 1 + 20 * 30 * 5
    assert [i for i, c in counts.items() if c != 1] == []
    backend.close()


def _forked_append(backend: JsonlBackend, barrier: Any, attempt: int, who: int) -> None:
    barrier.wait()
    for k in range(30):
        insert(backend, [entry(f"f{attempt}-{k}-{n}", who=who) for n in range(5)])


@pytest.mark.slow
def test_writers_killed_mid_append_lose_nothing_acknowledged(tmp_path: Path) -> None:
    """SIGKILL during 400 KB appends: a kill inside write() leaves a torn tail, which the next open quarantines."""
    path = tmp_path / "kill.jsonl"
    rng = random.Random(6)
    acked: set[str] = set()
    for round_no in range(8):
        receiver, sender = SPAWN.Pipe(duplex=False)
        proc = SPAWN.Process(target=kill_loop_writer, args=(str(path), f"r{round_no}-", sender), daemon=True)
        proc.start()
        sender.close()
        assert receiver.poll(60), "the writer never acknowledged a batch"
        deadline = time.monotonic() + rng.uniform(0.05, 0.4)
        while time.monotonic() < deadline:
            if receiver.poll(0.001):
                acked.add(receiver.recv())
        proc.kill()
        proc.join()
        try:
            while receiver.poll(0):
                acked.add(receiver.recv())
        except EOFError:
            pass
        with JsonlBackend(path) as backend:  # the open repairs a torn tail
            stored = {k for k, _ in backend.scan(LOG, ())}
        assert path.read_bytes().endswith(b"\n")
        for line in lines_of(path):
            json.loads(line)
        for batch in acked:
            assert {f"{batch}-{n:03d}" for n in range(200)} <= stored, f"acknowledged batch {batch} lost"
    for quarantine in quarantine_files(path):  # what was cut off is the unfinished line of an unacknowledged batch
        data = quarantine.read_bytes()
        assert data.startswith(b'{"id":"r')
        assert b"\n" not in data
        assert data[7:19].decode() not in acked
