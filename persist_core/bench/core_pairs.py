"""Benchmark pairs of the built-in file and memory backends (issue 2's targets).

Every row uses the same 1 KB JSON value, an open-position row as the engine writes it to the signal slot:

- file write: ``persist.live.signal(...).write(value)`` against a hand-written atomic write of the same
  bytes, encoded before timing (temp file, write, fsync, rename, fsync of the folder): the strict reference
  of issue 2's target;
- file write vs encoding raw: the same, with ``json.dumps`` of the value inside the raw side's timing, as a
  hand-written persister must do it (the SQL and Mongo references encode too);
- file read: ``persist.live.signal(...).read()`` against open + read + ``json.loads`` of the same value;
- memory write and read: the memory backend against ``copy.deepcopy`` of the value (what a dict-based
  store must do at least to keep callers from mutating stored state).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from typing import Any

from persist_core.bench.harness import Pair
from persist_core.config import resolve_routes
from persist_core.persist import Persist
from persist_core.stores import ObjectSlotStore

__all__ = ["TARGETS", "bench_pairs", "sample_value"]

#: Issue 2's targets (the file write's raised by issue 13): the smallest acceptable ratio ours/raw per
#: (backend, operation).
TARGETS: dict[tuple[str, str], float] = {
    ("file", "write"): 0.95,
    ("file", "read"): 0.8,
    ("memory", "write"): 0.8,
    ("memory", "read"): 0.8,
}

_CONTEXT = {"symbol": "BTC/USDT:USDT", "strategy_name": "bench", "exchange_name": "binance"}


def sample_value() -> dict[str, Any]:
    """A 1 KB open-position row (compact JSON between 1000 and 1100 bytes)."""
    return {
        "id": "sig-0b6f4c1e-2f7a-4d8e-9a51-3c2d7e8f9a10",
        "symbol": "BTC/USDT:USDT",
        "position": "long",
        "priceOpen": 42017.5,
        "priceTakeProfit": 43278.03,
        "priceStopLoss": 41597.33,
        "minuteEstimatedTime": 240,
        "cost": 100.0,
        "exchangeName": "binance",
        "strategyName": "breakout-v2",
        "frameName": "",
        "scheduledAt": 1_700_000_000_000,
        "pendingAt": 1_700_000_060_000,
        "timestamp": 1_700_000_060_000,
        "_isScheduled": False,
        "note": "breakout above the 4h range high with rising volume",
        "_partial": [
            {
                "type": "profit",
                "percent": 25,
                "currentPrice": 42648.1,
                "costBasisAtClose": 100.0,
                "entryCountAtClose": 2,
                "timestamp": 1_700_003_660_000,
            },
            {
                "type": "profit",
                "percent": 50,
                "currentPrice": 42963.26,
                "costBasisAtClose": 75.0,
                "entryCountAtClose": 2,
                "timestamp": 1_700_007_260_000,
            },
        ],
        "_entry": [
            {"price": 42017.5, "cost": 50.0, "timestamp": 1_700_000_060_000},
            {"price": 41850.25, "cost": 50.0, "timestamp": 1_700_001_860_000},
        ],
        "_trailingPriceStopLoss": 41901.12,
        "_trailingPriceTakeProfit": None,
        "_peak": {"price": 43012.9, "timestamp": 1_700_007_900_000, "pnl": 2.3731},
        "_fall": {"price": 41790.0, "timestamp": 1_700_001_200_000, "pnl": -0.5414},
        "tags": ["breakout", "4h", "volume", "btc"],
    }


def _persist(url: str) -> Persist:
    # Persist rather than setup(): a benchmark must not replace or close the process-wide setup.
    return Persist(resolve_routes(url, env={}))


class _FileRows:
    """State shared by the two file pairs: one temp folder with our store and a raw folder beside it."""

    store: ObjectSlotStore  # set by setup(); the timed calls must not pay for a check

    def __init__(self) -> None:
        self.value = sample_value()
        self.data = json.dumps(self.value, separators=(",", ":"), ensure_ascii=False).encode()
        self.root = ""
        self.raw_dir = ""
        self.raw_target = ""
        self.persist: Persist | None = None

    def setup(self) -> None:
        self.root = tempfile.mkdtemp(prefix="persist-bench-")
        self.persist = _persist(f"file:{os.path.join(self.root, 'ours')}")
        self.store = self.persist.live.signal(**_CONTEXT)
        # The raw folder sits as deep as our slot's folder, so that both fsync a folder of the same size.
        self.raw_dir = os.path.join(self.root, "raw", "signal", "a", "b", "c")
        os.makedirs(self.raw_dir)
        self.raw_target = os.path.join(self.raw_dir, "slot.json")
        self.store.write(self.value)
        self.raw_write(0)

    def teardown(self) -> None:
        if self.persist is not None:
            self.persist.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def ours_write(self, i: int) -> None:
        self.store.write(self.value)

    def raw_write(self, i: int) -> None:
        tmp = f"{self.raw_target}.{i}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, self.data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.raw_target)
        dir_fd = os.open(self.raw_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def raw_encode_write(self, i: int) -> None:
        """The raw write of a hand-written persister, which must encode the value too."""
        self.data = json.dumps(self.value, separators=(",", ":"), ensure_ascii=False).encode()
        self.raw_write(i)

    def ours_read(self, i: int) -> object:
        return self.store.read()

    def raw_read(self, i: int) -> object:
        with open(self.raw_target, "rb") as fh:
            return json.loads(fh.read())


class _MemoryRows:
    """The memory pairs: our memory backend against ``copy.deepcopy`` of the same value."""

    store: ObjectSlotStore  # set by setup()

    def __init__(self) -> None:
        self.value = sample_value()
        self.persist: Persist | None = None

    def setup(self) -> None:
        self.persist = _persist("memory://")
        self.store = self.persist.live.signal(**_CONTEXT)
        self.store.write(self.value)

    def teardown(self) -> None:
        if self.persist is not None:
            self.persist.close()

    def ours_write(self, i: int) -> None:
        self.store.write(self.value)

    def ours_read(self, i: int) -> object:
        return self.store.read()

    def raw_copy(self, i: int) -> object:
        return copy.deepcopy(self.value)


def bench_pairs(quick: bool) -> list[Pair]:
    """The file and memory rows; ``quick`` runs fewer operations."""
    file_n, memory_n = (200, 2000) if quick else (2000, 20000)
    write_rows, read_rows, memory_write, memory_read = _FileRows(), _FileRows(), _MemoryRows(), _MemoryRows()
    encode_rows = _FileRows()
    atomic = "tmp+fsync+rename+dirfsync"
    return [
        Pair(
            "file", "write", write_rows.ours_write, write_rows.raw_write, atomic,
            n=file_n, setup=write_rows.setup, teardown=write_rows.teardown,
        ),
        Pair(
            "file", "write vs encoding raw", encode_rows.ours_write, encode_rows.raw_encode_write,
            f"json.dumps+{atomic}", n=file_n, setup=encode_rows.setup, teardown=encode_rows.teardown,
        ),
        Pair(
            "file", "read", read_rows.ours_read, read_rows.raw_read, "open+read+json.loads",
            n=file_n * 10, setup=read_rows.setup, teardown=read_rows.teardown,
        ),
        Pair(
            "memory", "write", memory_write.ours_write, memory_write.raw_copy, "copy.deepcopy",
            n=memory_n, setup=memory_write.setup, teardown=memory_write.teardown,
        ),
        Pair(
            "memory", "read", memory_read.ours_read, memory_read.raw_copy, "copy.deepcopy",
            n=memory_n, setup=memory_read.setup, teardown=memory_read.teardown,
        ),
    ]  # fmt: skip
