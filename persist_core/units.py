"""Units of work: the writes of one engine step, to several domains and contexts, applied all or none.

A :class:`Write` is one backend write (put, insert-if-absent, mark removed) as data, so that a backend can
apply a whole list of them at once: :meth:`persist_core.backend.Backend.apply_unit` (one SQL transaction, one
file journal, ...). The typed stores of a unit (:class:`persist_core.persist.Unit`, its asyncio twin
:class:`persist_core.async_persist.AsyncUnit`) are the ordinary stores, bound to a *collecting* backend that
validates nothing itself and only records what the stores would have written: every domain rule stays in
:mod:`persist_core.store_rules`. This module holds what both faces share: the write records, the pending list
grouped per target backend, the batching a backend applies them with, and the error of a unit that was
applied only in part.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from persist_core.backend import Key, Record
from persist_core.domains import DomainSpec
from persist_core.errors import UnitIncompleteError, UnitOfWorkError

if TYPE_CHECKING:
    from persist_core.async_backend import AsyncBackend
    from persist_core.backend import Backend

__all__ = ["Batch", "PendingWrites", "Write", "WriteOp", "batches", "calls", "refuse_read"]

log = logging.getLogger("persist")

T = TypeVar("T")


class WriteOp(enum.Enum):
    """What a :class:`Write` does, named after the :class:`~persist_core.backend.Backend` call it stands for."""

    #: :meth:`~persist_core.backend.Backend.put`: insert or replace.
    PUT = "put"
    #: :meth:`~persist_core.backend.Backend.insert_many` of one item: store it only if the key is absent.
    INSERT = "insert"
    #: :meth:`~persist_core.backend.Backend.mark_removed`: set the removed flag (``record`` is ``None``).
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class Write:
    """One write of a unit: ``op`` of ``record`` under ``key`` of ``domain`` (already validated and encoded)."""

    domain: DomainSpec
    op: WriteOp
    key: Key
    record: Record | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive writes of one op and domain, as one backend call takes them (see :func:`batches`).

    ``items`` pairs keys with records (``PUT``, ``INSERT``: keys distinct, first write of a key kept for
    ``INSERT``); ``keys`` lists the keys of ``REMOVE``.
    """

    domain: DomainSpec
    op: WriteOp
    items: list[tuple[Key, Record]]
    keys: list[Key]


def batches(writes: Sequence[Write]) -> Iterator[Batch]:
    """Group ``writes`` into runs of one op and domain, in order: what a backend applies with one call each.

    Within an ``INSERT`` run a key written twice keeps its first record (first write wins, and
    ``insert_many`` takes distinct keys); a ``PUT`` run keeps every write, so the last one wins.
    """
    current: Batch | None = None
    seen: set[Key] = set()
    for write in writes:
        if current is None or current.op is not write.op or current.domain is not write.domain:
            if current is not None:
                yield current
            current = Batch(write.domain, write.op, [], [])
            seen = set()
        if write.op is WriteOp.REMOVE:
            current.keys.append(write.key)
        elif write.record is None:  # pragma: no cover - the collectors never build one
            raise UnitOfWorkError(f"a {write.op.value} write of {write.domain.name} carries no record")
        elif write.op is WriteOp.PUT:
            current.items.append((write.key, write.record))
        elif write.key not in seen:
            seen.add(write.key)
            current.items.append((write.key, write.record))
    if current is not None:
        yield current


def calls(writes: Sequence[Write]) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """The single-write backend calls that apply ``writes`` in order, as ``(method name, arguments)``: one
    ``put_many`` / ``insert_many`` per :func:`batches` run, one ``mark_removed`` per removed key.

    The default :meth:`~persist_core.backend.Backend.apply_unit` of both faces makes these calls: not atomic.
    """
    for batch in batches(writes):
        if batch.op is WriteOp.PUT:
            yield "put_many", (batch.domain, batch.items)
        elif batch.op is WriteOp.INSERT:
            yield "insert_many", (batch.domain, batch.items)
        else:
            for key in batch.keys:
                yield "mark_removed", (batch.domain, key)


class PendingWrites(Generic[T]):
    """The writes a unit has collected, each with the backend (of either face, ``T``) it goes to.

    A unit is used once: :meth:`take` empties it and refuses later writes, so that a write after the commit
    is an error instead of a silent loss.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._parts: dict[int, tuple[T, list[Write]]] = {}
        self._count = 0
        self._state: str | None = None

    def __len__(self) -> int:
        return self._count

    def add(self, target: T, write: Write) -> None:
        """Collect ``write`` for ``target``.

        Raises:
            UnitOfWorkError: the unit was already committed or discarded.
        """
        self._check_open()
        part = self._parts.get(id(target))
        if part is None:
            part = self._parts.setdefault(id(target), (target, []))
        part[1].append(write)
        self._count += 1

    def take(self) -> list[tuple[T, list[Write]]]:
        """The writes per target backend, in the order each backend was first written to; the unit is spent."""
        self._check_open()
        self._state = "committed"
        parts, self._parts = list(self._parts.values()), {}
        return parts

    def discard(self) -> None:
        """Drop every collected write (the unit's block raised); the unit is spent."""
        self._state = self._state or "discarded"
        self._parts = {}

    def _check_open(self) -> None:
        if self._state is not None:
            raise UnitOfWorkError(f"this unit of work was {self._state}; start a new one with {self.mode}.unit()")


_warned: set[str] = set()


def note_non_atomic(target: Backend | AsyncBackend, count: int) -> None:
    """Warn once per storage that a unit's part on ``target`` is applied write by write (no ``atomic_units``)."""
    url = target.url
    if count > 1 and not target.capabilities.atomic_units and url not in _warned:
        _warned.add(url)
        log.warning(
            "%s cannot apply a unit of work atomically (capabilities.atomic_units is False): its part of a unit "
            "is applied write by write, and a crash may leave part of it",
            url,
        )


def raise_incomplete(urls: list[str], failed: int, error: Exception) -> NoReturn:
    """Raise for a unit whose part on ``urls[failed]`` raised ``error`` (the parts go in the order of ``urls``).

    With nothing applied yet that is ``error`` itself (the unit is all-or-none so far); otherwise a
    :class:`UnitIncompleteError` that names what was applied and what was not.
    """
    if failed == 0:
        raise error
    raise UnitIncompleteError(urls[:failed], urls[failed:], error) from error


def refuse_read(*_: Any, **__: Any) -> Any:
    """What a read through a unit's store does: a unit collects writes and has no state of its own to read."""
    raise UnitOfWorkError(
        "a unit of work collects writes only: read through persist.live / persist.backtest, before the unit "
        "or after it is committed"
    )
