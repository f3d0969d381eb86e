"""The kit's summary at the end of a pytest run: how much of each adapter the clauses tested.

Clauses are of two levels. *Store-level* clauses check rules that the typed stores of ``persist_core`` enforce
before a backend is called (key and value validation, the look-ahead of unclosed candles, fresh objects on
reads); they pass on any backend that stores and reads, so they say little about an adapter. *Adapter*
clauses are all the others. The summary counts both apart, and lists the clauses skipped or deselected by a
declared capability, so that a green run with 36 skips says so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STORE_LEVEL_CLAUSES", "KitTally", "is_store_level"]

#: Clauses that check what the stores validate or decide before a backend is called.
STORE_LEVEL_CLAUSES = frozenset(
    {
        "test_invalid_when_is_rejected_and_nothing_written",
        "test_candle_unclosed_is_skipped",
        "test_candle_unknown_interval_is_invalid_key",
        "test_candle_bad_timestamp_rejected_and_nothing_written",
        "test_candle_window_beyond_the_key_range_is_invalid",
        "test_collection_bad_item_rejects_whole_batch",
        "test_collection_item_without_id_is_invalid_value",
        "test_invalid_context_key_is_rejected",
        "test_invalid_item_key_is_rejected_and_nothing_written",
        "test_bool_field_accepts_only_bool",
        "test_invalid_value_is_rejected_and_nothing_written",
        "test_object_domains_reject_non_objects",
        "test_oversized_value_is_rejected_and_nothing_written",
        "test_reads_return_fresh_objects",
        "test_property_invalid_values_write_nothing",
    }
)

ADAPTER, STORE = "adapter", "store-level"


def is_store_level(item: Any) -> bool:
    """Whether a collected kit clause is store-level (listed above, or marked ``persist_store_level``)."""
    return bool(
        getattr(item, "originalname", "") in STORE_LEVEL_CLAUSES or item.get_closest_marker("persist_store_level")
    )


@dataclass
class _Level:
    passed: int = 0
    failed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> clauses
    clauses: dict[str, set[str]] = field(default_factory=dict)  # reason -> clause names


@dataclass
class KitTally:
    """Outcomes of the kit's clauses per test class, filled by the plugin's hooks."""

    #: nodeid -> (test class, level, clause name)
    tracked: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    levels: dict[tuple[str, str], _Level] = field(default_factory=dict)
    deselected: dict[str, Counter[str]] = field(default_factory=dict)  # class -> reason -> clauses
    _done: set[str] = field(default_factory=set)

    def track(self, item: Any) -> None:
        """Count ``item`` (a collected kit clause) in the summary."""
        level = STORE if is_store_level(item) else ADAPTER
        self.tracked[item.nodeid] = (item.cls.__name__, level, getattr(item, "originalname", item.name))

    def deselect(self, item: Any, reason: str) -> None:
        """Count ``item`` as deselected at collection for ``reason``."""
        self.deselected.setdefault(item.cls.__name__, Counter())[reason] += 1

    def record(self, report: Any) -> None:
        """Count one phase report of a tracked clause (setup, call or teardown)."""
        entry = self.tracked.get(report.nodeid)
        if entry is None or report.nodeid in self._done:
            return
        cls, level, clause = entry
        tally = self.levels.setdefault((cls, level), _Level())
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            reason = reason.removeprefix("Skipped: ")
            tally.skipped[reason] += 1
            tally.clauses.setdefault(reason, set()).add(clause)
        elif report.failed:
            tally.failed += 1
        elif report.when == "call":
            tally.passed += 1
        else:
            return  # a passed setup: the call decides
        self._done.add(report.nodeid)

    def lines(self) -> list[str]:
        """The summary, one block per test class."""
        out: list[str] = []
        for cls in sorted({cls for cls, _ in self.levels}):
            parts = []
            for level in (ADAPTER, STORE):
                tally = self.levels.get((cls, level), _Level())
                skipped = sum(tally.skipped.values())
                text = f"{level} clauses: {tally.passed} passed"
                if tally.failed:
                    text += f", {tally.failed} failed"
                if skipped:
                    text += f", {skipped} skipped by capability"
                parts.append(text)
            out.append(f"{cls}: " + "; ".join(parts))
            for level in (ADAPTER, STORE):
                tally = self.levels.get((cls, level), _Level())
                for reason, count in tally.skipped.most_common():
                    names = ", ".join(sorted(tally.clauses[reason]))
                    out.append(f"  skipped {count} ({level}): {reason}: {names}")
            for reason, count in sorted(self.deselected.get(cls, Counter()).items()):
                out.append(f"  deselected {count}: {reason}")
        return out
