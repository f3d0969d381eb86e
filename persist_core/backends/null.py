"""The null backend, ``null://`` (CONTRACTS.md 6.5; upstream's ``useDummy``): for dry runs.

Every read finds nothing, so the stores return their missing value; every write is accepted and discarded.
A strategy runs unchanged against it, and nothing it does is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from persist_core.backend import PAGE_SIZE, Backend, Capabilities, ItemKey, Key, Record
from persist_core.domains import DomainSpec
from persist_core.urls import refuse_options

__all__ = ["NullBackend"]


class NullBackend(Backend):
    """Stores nothing: reads miss, writes are discarded."""

    capabilities = Capabilities(
        shared_between_processes=False,
        survives_process_kill=False,
        keeps_removed_records=False,
        listing=True,
        deletion=True,
        atomic_units=True,
        blocks=False,
    )

    def __init__(self, url: str = "null://") -> None:
        self.url = url

    @classmethod
    def from_url(cls, url: str) -> NullBackend:
        """Build from ``null://``.

        Raises:
            ConfigurationError: the URL has a query; the null backend has no options.
        """
        refuse_options(url, "null")
        return cls(url)

    # docstrings inherited from Backend

    def get(self, domain: DomainSpec, key: Key) -> Record | None:
        return None

    def scan(
        self, domain: DomainSpec, context: Key, start: ItemKey | None = None, stop: ItemKey | None = None
    ) -> list[tuple[ItemKey, Record]]:
        return []

    def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        pass

    def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        pass

    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        return 0  # nothing was stored

    def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        pass

    def list_contexts(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, int]]:
        return []

    def list_records(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, Record]]:
        return []

    def delete_records(self, domain: DomainSpec, keys: Sequence[Key]) -> int:
        return 0
