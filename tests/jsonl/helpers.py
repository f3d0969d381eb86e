"""Helpers shared by the jsonl tests, importable by spawned child processes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from persist_core.backend import Record
from persist_core.backends.jsonl import QUARANTINE_INFIX, JsonlBackend
from persist_core.domains import DOMAINS
from persist_core.validation import encode_value

LOG = DOMAINS["log"]


def entry(entry_id: str, **fields: Any) -> dict[str, Any]:
    """A log entry shaped like upstream's: ``id`` first."""
    return {"id": entry_id, **fields}


def insert(backend: JsonlBackend, entries: list[dict[str, Any]]) -> int:
    """Insert ``entries`` through the backend surface, as the log store does."""
    return backend.insert_many(LOG, [((e["id"],), Record(encode_value(e))) for e in entries])


def lines_of(path: Path) -> list[bytes]:
    """The file's lines without their newline; the last one is kept even if it has none."""
    data = path.read_bytes()
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def parsed_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the file as JSON (fails the test if one is not), blank lines left out."""
    return [json.loads(line) for line in lines_of(path) if line.strip()]


def quarantine_files(path: Path) -> list[Path]:
    """The quarantine files next to the log, oldest first."""
    return sorted(path.parent.glob(f"{path.name}{QUARANTINE_INFIX}*"))


# ------------------------------------------------------------------------------- child processes


def race_appender(path: str, who: int, rounds: int, batch: int, overlap_step: int, results: Any) -> None:
    """Append ``rounds`` batches whose ids overlap with the other racer's; report the ids stored."""
    backend = JsonlBackend(path, durability="process")
    backend.open()
    stored = 0
    try:
        for r in range(rounds):
            # Both racers walk the same id space; racer 1 is shifted half a batch, so every batch overlaps.
            base = r * overlap_step + who * (batch // 2)
            entries = [entry(f"id-{n:06d}", who=who, r=r, pad="x" * (n % 300)) for n in range(base, base + batch)]
            stored += insert(backend, entries)
    finally:
        backend.close()
    results.put((who, stored))


def kill_loop_writer(path: str, prefix: str, conn: Any) -> None:
    """Append large batches until killed; acknowledge every batch that returned."""
    backend = JsonlBackend(path, durability="process")
    backend.open()
    batch_no = 0
    while True:
        entries = [entry(f"{prefix}{batch_no:05d}-{n:03d}", pad="p" * 2000) for n in range(200)]
        if insert(backend, entries) != len(entries):
            raise AssertionError(f"batch {batch_no} was not stored whole")
        conn.send(f"{prefix}{batch_no:05d}")
        batch_no += 1


def following_appender(path: str, stop: Any, acks: Any) -> None:
    """Append small batches of new ids until ``stop`` is set, while another process compacts the file; put
    the ids of every batch the backend acknowledged on ``acks``, then ``None``."""
    backend = JsonlBackend(path, durability="process")
    backend.open()
    batch_no = 0
    try:
        while not stop.is_set():
            ids = [f"c{batch_no:06d}-{n}" for n in range(5)]
            if insert(backend, [entry(i, pad="q" * 100) for i in ids]) != len(ids):
                raise AssertionError(f"batch {batch_no} was not stored whole")
            acks.put(ids)
            batch_no += 1
    finally:
        backend.close()
        acks.put(None)


def compactor(path: str, doomed: list[str], conn: Any) -> None:
    """Index the log, say so, then delete ``doomed`` (a large compaction) and say how long it took."""
    backend = JsonlBackend(path)
    backend.open()
    conn.send("ready")
    started = time.monotonic()
    deleted = backend.delete_records(LOG, [(i,) for i in doomed])
    conn.send((deleted, time.monotonic() - started))
    backend.close()
