"""Racing child processes of the kit: a child that fails is reported at once, with its traceback."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from persist_core.backend import Key, Record
from persist_core.backends.memory import MemoryBackend
from persist_core.domains import DomainSpec
from persist_core.testing import race_processes


class FailingInChild(MemoryBackend):
    """A backend whose first-write-wins insert fails, as a broken adapter's would in a racing child."""

    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        raise RuntimeError("insert_many exploded in the racing child")


class DiesInChild(MemoryBackend):
    """A backend that kills its process outright (no traceback to report), as a crashing driver would."""

    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        import os

        os._exit(3)


@pytest.mark.slow
def test_a_failing_racer_is_reported_at_once_with_its_traceback() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError) as info:
        race_processes(FailingInChild, "log", "fail-", racers=3, keys=5, timeout=120.0)
    elapsed = time.monotonic() - started
    assert "insert_many exploded in the racing child" in str(info.value)
    assert "Traceback" in str(info.value)
    assert elapsed < 30, f"the failure surfaced after {elapsed:.1f}s, not at once"


@pytest.mark.slow
def test_a_dying_racer_is_reported_at_once_with_its_exit_code() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match="exit code 3"):
        race_processes(DiesInChild, "log", "die-", racers=3, keys=5, timeout=120.0)
    assert time.monotonic() - started < 30
