"""The kit's listing and deletion clauses (CONTRACTS.md 3.8) catch broken adapters: each variant fails a named
clause, which passes on the correct backend."""

from __future__ import annotations

import textwrap

import pytest

from tests.test_kit_catches_broken_adapters import HEADER, TEST_CLASS

VARIANTS = {
    # Keys compared as text: candle timestamp 10 listed before 9.
    "listing_orders_ints_as_text": (
        """
        class Broken(MemoryBackend):
            def list_records(self, domain, *, after=None, limit=1000):
                pairs = sorted(self._table(domain).records.items(), key=lambda p: tuple(map(str, p[0])))
                if after is not None:
                    pairs = [p for p in pairs if tuple(map(str, p[0][: len(after)])) > tuple(map(str, after))]
                return pairs[:limit]
        FACTORY = Broken
        """,
        "test_listing_is_complete_ordered_and_paged",
    ),
    # A cursor taken as inclusive: the last record of each page comes again on the next.
    "listing_cursor_inclusive": (
        """
        class Broken(MemoryBackend):
            def list_records(self, domain, *, after=None, limit=1000):
                pairs = sorted(self._table(domain).records.items())
                if after is not None:
                    pairs = [p for p in pairs if p[0][: len(after)] >= after]
                return pairs[:limit]
        FACTORY = Broken
        """,
        "test_listing_is_complete_ordered_and_paged",
    ),
    # Removed records left out of the listing: an export would lose the audit trail.
    "listing_hides_removed": (
        """
        class Broken(MemoryBackend):
            def list_records(self, domain, *, after=None, limit=1000):
                return [p for p in super().list_records(domain, after=after, limit=limit) if not p[1].removed]
        FACTORY = Broken
        """,
        "test_listing_is_complete_ordered_and_paged",
    ),
    # Counts that forget removed records.
    "contexts_count_live_records_only": (
        """
        class Broken(MemoryBackend):
            def list_contexts(self, domain, *, after=None, limit=1000):
                out = []
                for context, count in super().list_contexts(domain, after=after, limit=limit):
                    removed = sum(1 for k, r in self._table(domain).records.items()
                                  if k[: len(context)] == context and r.removed)
                    out.append((context, count - removed))
                return out
        FACTORY = Broken
        """,
        "test_contexts_are_listed_in_order_with_their_counts",
    ),
    # Deletion of a key that takes its whole context with it.
    "deletion_takes_the_context": (
        """
        class Broken(MemoryBackend):
            def delete_records(self, domain, keys):
                width = len(domain.context)
                doomed = [k for k in self._table(domain).records if any(k[:width] == key[:width] for key in keys)]
                super().delete_records(domain, doomed)
                return len(keys)
        FACTORY = Broken
        """,
        "test_deletion_removes_exactly_the_named_records",
    ),
}


CORRECT = """
class Broken(FileBackend):
    pass
FACTORY = None
"""


def test_each_broken_listing_fails_its_clause_which_passes_on_the_correct_backend(pytester: pytest.Pytester) -> None:
    """One pytest session (they are slow to start) with a module per variant and one for the correct backend."""
    modules = {f"test_{name}": HEADER + textwrap.dedent(body) + TEST_CLASS for name, (body, _) in VARIANTS.items()}
    modules["test_correct"] = HEADER + textwrap.dedent(CORRECT) + TEST_CLASS
    pytester.makepyfile(**modules)
    clauses = sorted({clause for _, clause in VARIANTS.values()})
    selection = " or ".join(clauses)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-rfEp", "-W", "error", "-k", selection)
    report = result.stdout.str()
    for name, (_, clause) in VARIANTS.items():
        assert f"FAILED test_{name}.py::TestVariant::{clause}" in report, f"{clause} missed {name}:\n{report[-3000:]}"
    assert "FAILED test_correct.py" not in report and "ERROR" not in report, report[-3000:]
    for clause in clauses:
        assert f"PASSED test_correct.py::TestVariant::{clause}" in report, f"{clause} did not run:\n{report[-3000:]}"
