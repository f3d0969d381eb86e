"""Issue 13: a unit writer on the file backend killed with SIGKILL 1,000 times; every unit all or none.

The kit's clause runs 20 rounds on every adapter; this runs the issue's count on the file backend, with both
durability options, and checks that the kills did land inside units: in some rounds the unit after the last
acknowledged one was committed and is found whole (the kill fell between its journal and its acknowledgement),
in others its files were staged but it is absent (the kill fell before its journal was committed).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from persist_core.backends.file import TEMP_PREFIX, FileBackend, encode_segment
from persist_core.domains import DOMAINS
from persist_core.testing.units import run_unit_kill_test

#: durability -> kill rounds: 1,000 kills in all (issue 13), most with the default durability.
ROUNDS = {"full": 600, "process": 400}


class _Factory:
    """Builds the backend; in the test process (the check after each kill) it first notes whether the killed
    writer left staged temp files of a unit in its signal folder, before ``open`` replays anything."""

    def __init__(self, root: Path, durability: str) -> None:
        self.root = root
        self.durability = durability
        self.parent = os.getpid()
        self.rounds = 0
        self.staged: list[bool] = []

    def __call__(self) -> FileBackend:
        if os.getpid() == self.parent:
            self.staged.append(self._staged(f"k{self.rounds}-"))
            self.rounds += 1
        return FileBackend(self.root, durability=self.durability)

    def _staged(self, namespace: str) -> bool:
        context = (f"{namespace}U/USDT", "unit", "kit")
        fields = DOMAINS["signal"].context
        folder = self.root.joinpath("signal", *(encode_segment(f, v) for f, v in zip(fields, context, strict=True)))
        try:
            return any(name.startswith(TEMP_PREFIX) for name in os.listdir(folder))
        except FileNotFoundError:
            return False


@pytest.mark.parametrize("durability", sorted(ROUNDS))
def test_units_survive_sigkill_all_or_none(tmp_path: Path, durability: str) -> None:
    factory = _Factory(tmp_path / "dump", durability)
    rounds = ROUNDS[durability]
    # Kills from 0 to 8 ms after the first unit: most land inside a unit, and a round stays short.
    reports = run_unit_kill_test(factory, rounds=rounds, min_delay=0.0, max_delay=0.008, seed=13)
    assert [p for r in reports for p in r.problems] == []
    assert all(r.acked >= 0 for r in reports)
    assert factory.rounds == rounds
    committed_unacked = sum(r.found == r.acked + 1 for r in reports)
    staged_absent = sum(staged and r.found == r.acked for r, staged in zip(reports, factory.staged, strict=True))
    # In-flight kills happen, so the check above saw some. How many depends on the machine's load: with
    # durability=full 367 and 154 of 600 rounds on a loaded machine, 440 and 24 on a quiet one, 425 and 1 in a
    # CI run; with process 127 and 187 of 400 under load, 11 and 2 in a CI run.
    assert committed_unacked + staged_absent >= 1, (committed_unacked, staged_absent)
