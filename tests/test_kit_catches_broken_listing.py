"""The kit's listing and deletion clauses (CONTRACTS.md 3.8) catch broken adapters: each variant fails a named
clause, which passes on the correct backend (tests/test_kit_catches_broken_adapters.py runs the controls)."""

from __future__ import annotations

import pytest

from tests.test_kit_catches_broken_adapters import _run

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


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kit_catches_broken_listing(pytester: pytest.Pytester, variant: str) -> None:
    body, clause = VARIANTS[variant]
    result = _run(pytester, body, clause)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, f"{clause} did not catch {variant}:\n{result.stdout.str()[-3000:]}"


@pytest.mark.parametrize("clause", sorted({clause for _, clause in VARIANTS.values()}))
def test_listing_clause_passes_on_the_correct_backend(pytester: pytest.Pytester, clause: str) -> None:
    correct = """
    class Broken(FileBackend):
        pass
    FACTORY = None
    """
    result = _run(pytester, correct, clause)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()[-3000:]
    assert outcomes.get("passed", 0) >= 1, result.stdout.str()[-3000:]
