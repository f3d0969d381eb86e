"""The kit's state machine reaches the records it wrote: removes, revivals and reopens meet existing keys.

Issue 12: with names, contexts and keys drawn independently, 0 of 134 removes in an instrumented run hit a key
that existed, and no run reopened the backend after a remove. The machine now draws from the keys it wrote.
The run here has the kit's settings (but 50 examples of up to 25 steps, derandomized as under CI) on a memory
backend whose instances share one store, so that a reopen keeps the records, as on a real shared backend.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from persist_core.backend import Capabilities
from persist_core.backends.memory import MemoryBackend
from persist_core.testing import state_machine_for


class SharedMemory(MemoryBackend):
    """Memory backends that share one store: a new instance is a reopen of the same storage."""

    capabilities = Capabilities(survives_process_kill=False)
    tables: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        self._tables = SharedMemory.tables


def test_removes_revivals_and_reopens_meet_written_keys() -> None:
    machine = state_machine_for(SharedMemory)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=50,
            stateful_step_count=25,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    stats = machine.stats
    print(dict(stats))  # the figures for the record: pytest -s shows them
    assert stats["removes"] >= 50, stats
    assert stats["removes_of_existing_keys"] >= 0.8 * stats["removes"], stats
    assert stats["removes_of_live_keys"] >= 0.5 * stats["removes"], stats
    assert stats["revivals"] >= 10, stats
    assert stats["reopens_after_remove"] >= 20, stats
