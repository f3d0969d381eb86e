"""Where the file write's time goes against the raw atomic write (issue 13, fifth round; docs/decisions.md).

Runs the bench's own "file write" pair (``persist_core.bench.core_pairs``) through the bench harness, once per
variant and round, each variant changing one thing in this process only:

* ``main``: the code as it is;
* ``pre-encoded``: our side writes a record encoded before timing, as the raw side's bytes are (what the
  validation and encoding cost in context);
* ``journal-fstat``: the unit journal check as ``fstat`` of a kept descriptor of its folder (no path walk);
* ``folder-fds``: the write through a kept descriptor of its folder (``openat``, ``renameat``, ``fsync`` of
  the kept descriptor): two system calls fewer than the raw side;
* ``both``, ``both pre-encoded``: the two together, without and with the encoding.

The variants are measurement prototypes, not fixes: they ignore what the real write handles (threads sharing
a descriptor, folders removed or moved, failures). The variants run in a fresh process each, in a shuffled
order per round, since a process's first runs and the disk's state move the ratio.

Usage::

    python bench/file_write_parts.py                  # 3 rounds of every variant
    python bench/file_write_parts.py --rounds 5 --variants main pre-encoded
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import subprocess
import sys
from typing import Any

VARIANTS = ("main", "pre-encoded", "journal-fstat", "folder-fds", "both", "both pre-encoded")


def _patch(variant: str) -> None:
    """Install ``variant``'s prototypes into the file backend of this process."""
    from persist_core.backends import file as file_module

    backend_class: Any = file_module.FileBackend
    if "journal-fstat" in variant or variant.startswith("both"):
        journal_fds: dict[int, int] = {}

        def _replay_if_due(self: Any) -> None:
            fd = journal_fds.get(id(self))
            if fd is None:
                try:
                    fd = journal_fds[id(self)] = os.open(self._journal.folder, os.O_RDONLY | os.O_DIRECTORY)
                except FileNotFoundError:
                    return
            mtime = os.fstat(fd).st_mtime_ns
            if mtime != self._journals_seen or self._journals_held:
                self._replay_units()
                self._journals_seen = mtime

        backend_class._replay_if_due = _replay_if_due
    if "folder-fds" in variant or variant.startswith("both"):
        folder_fds: dict[str, int] = {}
        names = file_module._temp_names

        def _replace(self: Any, folder: str, name: str, record: Any) -> None:
            folder_fd = folder_fds.get(folder)
            if folder_fd is None:
                os.makedirs(folder, exist_ok=True)
                folder_fd = folder_fds[folder] = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            tmp = f"{file_module.TEMP_PREFIX}{names.token}{next(names.counter):x}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=folder_fd)
            try:
                os.write(fd, file_module._format(record))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
            os.fsync(folder_fd)

        backend_class._replace = _replace


def _measure(variant: str) -> float:
    """One harness run of the file write pair under ``variant``: ours ops/s over raw ops/s."""
    from persist_core.bench import core_pairs
    from persist_core.bench.harness import run_pair

    _patch(variant)
    pair = next(p for p in core_pairs.bench_pairs(False) if p.backend == "file" and p.operation == "write")
    if variant.endswith("pre-encoded"):
        rows: Any = pair.ours.__self__  # type: ignore[attr-defined]
        records: dict[int, Any] = {}

        def ours_pre_encoded(i: int) -> None:
            store = rows.store
            record = records.get(id(store))
            if record is None:  # once per store (setup makes a new one)
                record = records[id(store)] = store._record(rows.value, None)
            store._backend.put(store._spec, store._context, record)

        pair = dataclasses.replace(pair, ours=ours_pre_encoded)
    result = run_pair(pair)
    return result.ours.ops_per_s / result.raw.ops_per_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant (default 3)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # a child process: one run
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_measure(args.one)))
        return 0
    ratios: dict[str, list[float]] = {variant: [] for variant in args.variants}
    for round_number in range(args.rounds):
        order = list(args.variants)
        random.shuffle(order)
        for variant in order:
            out = subprocess.run(
                [sys.executable, __file__, "--one", variant], check=True, capture_output=True, text=True, timeout=600
            ).stdout
            ratios[variant].append(json.loads(out.strip().splitlines()[-1]))
        print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{'variant':<18} {'median':>7}  runs (ours ops/s over raw ops/s)")
    for variant, values in ratios.items():
        runs = ", ".join(f"{value:.3f}" for value in values)
        print(f"{variant:<18} {statistics.median(values):>7.3f}  {runs}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    raise SystemExit(main())
