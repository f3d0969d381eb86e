"""The jsonl backend shared between processes: an append race, a forked writer, writers killed mid-append, an
appender racing repeated compactions, and compactors killed mid-compaction."""

from __future__ import annotations

import json
import multiprocessing
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from persist_core.backends.jsonl import COMPACTION_INFIX, JsonlBackend
from tests.jsonl.helpers import (
    LOG,
    compactor,
    entry,
    following_appender,
    insert,
    kill_loop_writer,
    lines_of,
    quarantine_files,
    race_appender,
)

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


def _ids_in(path: Path) -> list[str]:
    """The ids of the file's lines, in file order (fails the test on a line that does not parse)."""
    return [json.loads(line)["id"] for line in lines_of(path) if line.strip()]


def test_an_appender_in_another_process_loses_nothing_to_repeated_compactions(tmp_path: Path) -> None:
    """The child appends through its own instance while the parent deletes half the log, again and again: every
    append the child was acknowledged survives, and no deleted entry comes back."""
    path = tmp_path / "follow.jsonl"
    parent = JsonlBackend(path, durability="process")
    initial = {f"p{n:04d}" for n in range(300)}
    insert(parent, [entry(i, pad="p" * 100) for i in sorted(initial)])
    stop, acks = SPAWN.Event(), SPAWN.Queue()
    child = SPAWN.Process(target=following_appender, args=(str(path), stop, acks))
    child.start()
    acked: set[str] = set(acks.get(timeout=60))  # the child is appending
    deleted: set[str] = set()
    rng = random.Random(11)
    acked_before = len(acked)
    for _ in range(30):
        present = [key[0] for key, _ in parent.list_records(LOG, limit=1_000_000)]
        doomed = rng.sample(present, len(present) // 2)
        assert parent.delete_records(LOG, [(i,) for i in doomed]) == len(doomed)
        deleted.update(doomed)
        while not acks.empty():
            acked.update(acks.get())
        time.sleep(0.01)
    stop.set()
    while (ids := acks.get(timeout=60)) is not None:
        acked.update(ids)
    child.join(timeout=60)
    assert child.exitcode == 0
    parent.close()

    in_file = _ids_in(path)
    assert len(in_file) == len(set(in_file)), "an id is in the file twice"
    with JsonlBackend(path) as fresh:
        stored = {key for key, _ in fresh.scan(LOG, ())}
    assert stored == set(in_file)
    assert sorted(acked - deleted - stored) == [], "an acknowledged append was lost"
    assert sorted(deleted & stored) == [], "a deleted entry came back"
    assert stored == (initial | acked) - deleted
    assert len(acked) > acked_before + 30, "the child did not append while the parent compacted"
    assert deleted & acked, "the parent never deleted what the child appended: no race"
    assert quarantine_files(path) == []
    assert list(tmp_path.glob(f"*{COMPACTION_INFIX}*")) == []


def test_a_compactor_killed_at_random_points_leaves_the_log_whole_before_or_after(tmp_path: Path) -> None:
    """SIGKILL during a compaction of 6 MB (every other of 40,000 entries deleted): the log is byte for byte the
    one before or the one after, and the temp file left behind is ignored, then swept at the next open."""
    path = tmp_path / "big.jsonl"
    ids = [f"k{n:06d}" for n in range(40_000)]
    lines = {i: f'{{"id":"{i}","pad":"{"z" * (100 + n % 50)}"}}\n'.encode() for n, i in enumerate(ids)}
    whole_before = b"".join(lines.values())
    doomed = ids[::2]
    kept = sorted(set(ids) - set(doomed))
    whole_after = b"".join(lines[i] for i in kept)
    original = tmp_path / "original"
    original.write_bytes(whole_before)
    rng = random.Random(3)
    duration = 0.0
    outcomes: Counter[str] = Counter()
    for round_no in range(14):
        shutil.copyfile(original, path)
        receiver, sender = SPAWN.Pipe(duplex=False)
        proc = SPAWN.Process(target=compactor, args=(str(path), doomed, sender), daemon=True)
        proc.start()
        sender.close()
        assert receiver.poll(60) and receiver.recv() == "ready"
        if round_no == 0:  # the first one runs to the end: how long a compaction takes here
            assert receiver.poll(60)
            deleted, duration = receiver.recv()
            assert deleted == len(doomed)
        else:
            time.sleep(rng.uniform(0, duration * 1.2))
            proc.kill()
        proc.join(timeout=60)
        leftovers = list(tmp_path.glob(f"big.jsonl{COMPACTION_INFIX}*"))
        data = path.read_bytes()
        assert data in (whole_before, whole_after), f"round {round_no}: the log is neither before nor after"
        outcomes["after" if data == whole_after else "before, temp file left" if leftovers else "before"] += 1
        with JsonlBackend(path) as reopened:
            assert [key for key, _ in reopened.scan(LOG, ())] == (ids if data == whole_before else kept)
        assert list(tmp_path.glob(f"big.jsonl{COMPACTION_INFIX}*")) == [], "the temp file was not swept"
        if round_no >= 6 and outcomes["before, temp file left"] and outcomes["after"] > 1:
            break
    print(f"\ncompaction of {len(whole_before)} bytes took {duration:.3f} s; kill outcomes: {dict(outcomes)}")
    assert outcomes["before, temp file left"] >= 1, f"no kill landed inside the compaction: {dict(outcomes)}"
    assert quarantine_files(path) == []
