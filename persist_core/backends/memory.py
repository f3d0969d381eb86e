"""The memory backend: a dict per process (CONTRACTS.md 6.2).

Records hold the canonical JSON text, so every read decodes a fresh object and nothing a caller does
to a value can reach stored state. It is the reference model of the contract test kit's state machine.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from typing import Any, TypeVar

from persist_core.backend import PAGE_SIZE, Backend, Capabilities, ItemKey, Key, Record
from persist_core.domains import DomainSpec
from persist_core.urls import refuse_options

__all__ = ["MemoryBackend"]

_V = TypeVar("_V")


class _Table:
    """One domain's records: key -> record, plus a sorted item list per context for scans."""

    __slots__ = ("items", "records")

    def __init__(self) -> None:
        self.records: dict[Key, Record] = {}
        self.items: dict[Key, list[Any]] = {}


class MemoryBackend(Backend):
    """Records in a process-local dict; nothing survives the process."""

    capabilities = Capabilities(
        shared_between_processes=False,
        survives_process_kill=False,
        listing=True,
        deletion=True,
        atomic_units=True,
        blocks=False,
    )

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        self._tables: dict[str, _Table] = {}

    @classmethod
    def from_url(cls, url: str) -> MemoryBackend:
        """Build from ``memory://[name]``; each distinct URL is its own store within a setup.

        Raises:
            ConfigurationError: the URL has a query; the memory backend has no options.
        """
        refuse_options(url, "memory")
        return cls(url)

    def _table(self, domain: DomainSpec) -> _Table:
        table = self._tables.get(domain.name)
        if table is None:
            table = self._tables.setdefault(domain.name, _Table())
        return table

    def _store(self, table: _Table, domain: DomainSpec, key: Key, record: Record) -> None:
        # Caller holds the lock.
        if key not in table.records and domain.item is not None:
            bisect.insort(table.items.setdefault(key[:-1], []), key[-1])
        table.records[key] = record

    # docstrings inherited from Backend

    def get(self, domain: DomainSpec, key: Key) -> Record | None:
        return self._table(domain).records.get(key)

    def scan(
        self,
        domain: DomainSpec,
        context: Key,
        start: ItemKey | None = None,
        stop: ItemKey | None = None,
    ) -> list[tuple[ItemKey, Record]]:
        table = self._table(domain)
        with self._lock:
            items = table.items.get(context, [])
            lo = 0 if start is None else bisect.bisect_left(items, start)
            hi = len(items) if stop is None else bisect.bisect_left(items, stop)
            return [(item, table.records[(*context, item)]) for item in items[lo:hi]]

    def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        table = self._table(domain)
        if domain.item is None:
            table.records[key] = record  # a single dict store is atomic under the GIL
            return
        with self._lock:
            self._store(table, domain, key, record)

    def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        table = self._table(domain)
        with self._lock:
            for key, record in items:
                self._store(table, domain, key, record)

    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        table = self._table(domain)
        stored = 0
        with self._lock:
            for key, record in items:
                if key not in table.records:
                    self._store(table, domain, key, record)
                    stored += 1
        return stored

    def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        table = self._table(domain)
        with self._lock:
            record = table.records.get(key)
            if record is not None and not record.removed:
                table.records[key] = Record(record.payload, record.when, removed=True)

    def list_contexts(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, int]]:
        table = self._table(domain)
        with self._lock:
            if domain.item is None:
                counted = [(key, 1) for key in table.records]
            else:
                counted = [(context, len(items)) for context, items in table.items.items() if items]
        counted.sort()
        return _page(counted, after, limit)

    def list_records(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, Record]]:
        table = self._table(domain)
        with self._lock:
            pairs = sorted(table.records.items())
        return _page(pairs, after, limit)

    def delete_records(self, domain: DomainSpec, keys: Sequence[Key]) -> int:
        table = self._table(domain)
        deleted = 0
        with self._lock:
            for key in keys:
                if table.records.pop(key, None) is None:
                    continue
                deleted += 1
                if domain.item is not None:
                    items = table.items[key[:-1]]
                    del items[bisect.bisect_left(items, key[-1])]
        return deleted


def _page(pairs: list[tuple[Key, _V]], after: Key | None, limit: int) -> list[tuple[Key, _V]]:
    """At most ``limit`` of the sorted ``pairs`` whose key comes after ``after`` (see ``comes_after``)."""
    start = 0 if after is None else bisect.bisect_right(pairs, after, key=lambda pair: pair[0][: len(after)])
    return pairs[start : start + limit]
