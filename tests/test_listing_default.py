"""The default ``Backend.list_contexts`` (a third-party adapter's, built on its ``list_records``) counts what
a backend's own grouped count does, across listing pages and context cursors (CONTRACTS.md 3.8)."""

from __future__ import annotations

from persist_core.backend import PAGE_SIZE, Backend, Record
from persist_core.backends.memory import MemoryBackend
from persist_core.domains import DOMAINS


class _DefaultContexts(MemoryBackend):
    list_contexts = Backend.list_contexts  # type: ignore[assignment]


def test_the_default_context_count_agrees_with_a_grouped_one_across_pages() -> None:
    spec = DOMAINS["candle"]
    sizes = {"A": 3, "AB": PAGE_SIZE + 5, "B": 1, "C": 2 * PAGE_SIZE}  # contexts that straddle listing pages
    records = [
        ((symbol, "1m", "x", n * 60_000), Record('{"c":1}')) for symbol, count in sizes.items() for n in range(count)
    ]
    grouped, default = MemoryBackend(), _DefaultContexts()
    for backend in (grouped, default):
        backend.insert_many(spec, records)
    assert default.list_contexts(spec) == grouped.list_contexts(spec)
    assert [count for _, count in default.list_contexts(spec)] == list(sizes.values())
    for limit in (1, 2, 3):
        for after in (None, ("A", "1m", "x"), ("AB", "1m", "x"), ("C", "1m", "x")):
            assert default.list_contexts(spec, after=after, limit=limit) == grouped.list_contexts(
                spec, after=after, limit=limit
            ), (after, limit)
