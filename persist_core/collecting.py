"""The backends a unit of work's stores write to: they collect :class:`~persist_core.units.Write` records.

One class per face, because a store of the asyncio face awaits its backend; both only append to the unit's
:class:`~persist_core.units.PendingWrites`, tagged with the backend the write goes to at commit. Reads are
refused (:func:`~persist_core.units.refuse_read`): a unit has no state of its own, and a read of the stored
state would not see the unit's own writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from persist_core.async_backend import AsyncBackend
from persist_core.backend import Backend, Key, Record
from persist_core.domains import DomainSpec
from persist_core.units import PendingWrites, Write, WriteOp, refuse_read

__all__ = ["AsyncCollectingBackend", "CollectingBackend"]


class _Collector:
    """What both faces' collectors do: tag each write with its target and add it to the unit."""

    __slots__ = ("pending", "target")

    def __init__(self, target: object, pending: PendingWrites[Any]) -> None:
        self.target = target
        self.pending = pending

    def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        for key, record in items:
            self.pending.add(self.target, Write(domain, WriteOp.PUT, key, record))

    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        # Which keys are new is known only at the commit: the count is of the items collected.
        for key, record in items:
            self.pending.add(self.target, Write(domain, WriteOp.INSERT, key, record))
        return len(items)

    def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        self.pending.add(self.target, Write(domain, WriteOp.REMOVE, key))


class CollectingBackend(Backend):
    """Collects the writes of a unit's sync stores for ``target``."""

    def __init__(self, target: Backend, pending: PendingWrites[Any]) -> None:
        self.url = target.url
        self.capabilities = target.capabilities  # type: ignore[misc]
        self._collect = _Collector(target, pending)

    get = scan = read_window = list_contexts = list_records = delete_records = refuse_read

    def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        self._collect.put_many(domain, ((key, record),))

    def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        self._collect.put_many(domain, items)

    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        return self._collect.insert_many(domain, items)

    def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        self._collect.mark_removed(domain, key)


class AsyncCollectingBackend(AsyncBackend):
    """Collects the writes of a unit's asyncio stores for ``target``."""

    def __init__(self, target: AsyncBackend, pending: PendingWrites[Any]) -> None:
        self.url = target.url
        self.capabilities = target.capabilities  # type: ignore[misc]
        self._collect = _Collector(target, pending)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        refuse_read()

    scan = read_window = list_contexts = list_records = delete_records = get

    async def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        self._collect.put_many(domain, ((key, record),))

    async def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        self._collect.put_many(domain, items)

    async def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        return self._collect.insert_many(domain, items)

    async def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        self._collect.mark_removed(domain, key)
