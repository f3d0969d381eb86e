"""Benchmark pairs of the jsonl backend (issue 6): appending a batch of 100 log entries.

- ``append 100``: ``persist.live.log().write(batch)`` (validation, encoding, dedup against the index, flock,
  one ``write``, one ``fdatasync``) against ``os.write`` + ``os.fsync`` of the same bytes to a file opened
  with ``O_APPEND``;
- ``append 100 vs encoding raw``: the same, with the raw side encoding each entry inside its timing, as a
  hand-written JSONL logger must;
- ``append 100 process``: the same with ``?durability=process`` (no sync) against ``os.write`` alone;
- ``insert_many 100``: the backend alone, ``JsonlBackend.insert_many`` of records the store layer already
  validated and encoded, against ``os.write`` + ``os.fsync``: what the backend adds to the raw append.

Every call appends 100 new entries (upstream-shaped log entries of about 380 bytes each), so dedup never
turns a timed call into a no-op; the batches are built before timing, on both sides.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from typing import Any

from persist_core.backend import Key, Record
from persist_core.bench.harness import Pair
from persist_core.domains import DOMAINS
from persist_core.persist import Persist
from persist_core.stores import CollectionStore
from persist_core.validation import encode_value

__all__ = ["BATCH", "bench_pairs", "log_entry"]

BATCH = 100


_METHOD_CONTEXT = {"strategyName": "breakout-v2", "exchangeName": "binance", "frameName": ""}
_EXECUTION_CONTEXT = {"symbol": "BTC/USDT:USDT", "when": 1_700_000_000_000, "backtest": False}
_ARGS = [{"price": 42017.5, "signal": None, "note": "no entry: volume below the 20-bar mean"}]


def log_entry(entry_id: str, n: int) -> dict[str, Any]:
    """A log entry shaped like upstream's ``ILogEntry`` (the nested parts are shared, to keep memory low)."""
    return {
        "id": entry_id,
        "type": "info",
        "timestamp": 1_700_000_000_000 + n,
        "createdAt": "2023-11-14T22:13:20.000Z",
        "methodContext": _METHOD_CONTEXT,
        "executionContext": _EXECUTION_CONTEXT,
        "topic": "strategy.tick",
        "args": _ARGS,
    }


class _AppendRows:
    """Our jsonl store and a raw ``O_APPEND`` file side by side in one temp folder."""

    store: CollectionStore  # set by setup(); the timed calls must not pay for a check

    def __init__(self, calls: int, durability: str) -> None:
        self.calls = calls
        self.durability = durability
        self.root = ""
        self.persist: Persist | None = None
        self.raw_fd = -1
        self.batches: list[list[dict[str, Any]]] = []
        self.records: list[list[tuple[Key, Record]]] = []
        self.raw_bytes: list[bytes] = []
        self.next_ours = itertools.count()
        self.next_raw = itertools.count()

    def setup(self) -> None:
        self.root = tempfile.mkdtemp(prefix="persist-bench-jsonl-")
        url = f"jsonl:{os.path.join(self.root, 'ours.jsonl')}?durability={self.durability}"
        # Persist rather than setup(): a benchmark must not replace or close the process-wide setup.
        self.persist = Persist({("live", "log"): url})
        store = self.persist.live.log()
        self.store = store
        self.raw_fd = os.open(os.path.join(self.root, "raw.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        for call in range(self.calls):
            batch = [log_entry(f"e{call:06d}-{n:03d}", n) for n in range(BATCH)]
            self.batches.append(batch)
            self.records.append([((e["id"],), Record(encode_value(e))) for e in batch])
            lines = (json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n" for e in batch)
            self.raw_bytes.append("".join(lines).encode())

    def teardown(self) -> None:
        if self.persist is not None:
            self.persist.close()
        if self.raw_fd >= 0:
            os.close(self.raw_fd)
        shutil.rmtree(self.root, ignore_errors=True)

    def ours(self, i: int) -> None:
        self.store.write(self.batches[next(self.next_ours)])

    def ours_backend(self, i: int) -> None:
        self.store.backend.insert_many(DOMAINS["log"], self.records[next(self.next_ours)])

    def raw_sync(self, i: int) -> None:
        os.write(self.raw_fd, self.raw_bytes[next(self.next_raw)])
        os.fsync(self.raw_fd)

    def raw_encode_sync(self, i: int) -> None:
        """What a hand-written JSONL logger does: encode each entry, one write, one fsync."""
        batch = self.batches[next(self.next_raw)]
        lines = [json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n" for e in batch]
        os.write(self.raw_fd, "".join(lines).encode())
        os.fsync(self.raw_fd)

    def raw_nosync(self, i: int) -> None:
        os.write(self.raw_fd, self.raw_bytes[next(self.next_raw)])


def bench_pairs(quick: bool) -> list[Pair]:
    """The jsonl rows; ``quick`` runs fewer operations."""
    n_sync, n_process = (50, 100) if quick else (300, 500)
    # Each call appends fresh ids; the harness warms up with at most n extra calls.
    full, process = _AppendRows(2 * n_sync, "full"), _AppendRows(2 * n_process, "process")
    encoding = _AppendRows(2 * n_sync, "full")
    backend = _AppendRows(2 * n_sync, "full")
    return [
        Pair(
            "jsonl", f"append {BATCH}", full.ours, full.raw_sync, "os.write+os.fsync O_APPEND",
            n=n_sync, setup=full.setup, teardown=full.teardown,
        ),
        Pair(
            "jsonl", f"append {BATCH} vs encoding raw", encoding.ours, encoding.raw_encode_sync,
            "json.dumps+os.write+os.fsync", n=n_sync, setup=encoding.setup, teardown=encoding.teardown,
        ),
        Pair(
            "jsonl", f"append {BATCH} process", process.ours, process.raw_nosync, "os.write O_APPEND",
            n=n_process, setup=process.setup, teardown=process.teardown,
        ),
        Pair(
            "jsonl", f"insert_many {BATCH}", backend.ours_backend, backend.raw_sync, "os.write+os.fsync O_APPEND",
            n=n_sync, setup=backend.setup, teardown=backend.teardown,
        ),
    ]  # fmt: skip
