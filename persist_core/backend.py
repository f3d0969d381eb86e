"""The small abstract backend surface that every backend implements.

A backend stores :class:`Record` objects for every domain under the domain's unique key (context
fields followed by the item key, as a tuple in spec order). It knows nothing about slots, candles or
buckets: the typed stores in :mod:`persist_core.stores` build the 16 domain contracts once, on top of
these few operations. A third-party adapter implements this class and nothing else.

The contract of each operation is documented here, once; implementations inherit it.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from persist_core.domains import DomainSpec

if TYPE_CHECKING:
    from persist_core.ownership import LeaseLog
    from persist_core.units import Write

__all__ = ["PAGE_SIZE", "Backend", "Capabilities", "ContextTally", "ItemKey", "Key", "Record", "comes_after"]

#: A record's unique key: the domain's context values followed by its item key (if any).
Key = tuple[Any, ...]
#: An item key alone (``str`` or, for candles, ``int``).
ItemKey = Any
#: The default page of :meth:`Backend.list_contexts` and :meth:`Backend.list_records`.
PAGE_SIZE = 1000


class ContextTally:
    """Counts the records per context of pages of keys listed in key order, up to ``limit`` contexts: the
    default :meth:`Backend.list_contexts` for a backend that cannot count without listing."""

    def __init__(self, width: int, limit: int) -> None:
        self.width = width
        self.limit = limit
        self.counts: list[tuple[Key, int]] = []

    def add(self, keys: Iterable[Key]) -> bool:
        """Count ``keys``; ``True`` once a context beyond the ``limit``-th shows that the last one is complete."""
        counts = self.counts
        for key in keys:
            context = key[: self.width]
            if counts and counts[-1][0] == context:
                counts[-1] = (context, counts[-1][1] + 1)
            elif len(counts) == self.limit:
                return True
            else:
                counts.append((context, 1))
        return False


def comes_after(key: Key, after: Key | None) -> bool:
    """Whether ``key`` is listed after the cursor ``after``: its first ``len(after)`` fields sort after it."""
    return after is None or key[: len(after)] > after


@dataclass(frozen=True, slots=True)
class Record:
    """One stored record.

    Attributes:
        payload: the value as canonical JSON text (validated and encoded by the store layer; a backend
            stores it and gives it back unchanged, or an equal JSON text).
        when: the logical time of the write in epoch milliseconds, or ``None``.
        removed: soft-delete flag (measure, interval, memory).
    """

    payload: str
    when: int | None = None
    removed: bool = False


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do; the contract test kit skips clauses by these flags, never by type.

    Attributes:
        domains: the domains the backend accepts (``None`` means all 16).
        shared_between_processes: two processes opening the same URL see one store.
        survives_process_kill: an acknowledged write survives SIGKILL of the writing process.
        keeps_removed_records: soft-deleted records stay in storage (readable through the back door).
        ownership: :meth:`Backend.lease_log` keeps ownership leases, so a live process can own the storage
            (CONTRACTS.md 3.7). A backend shared between processes without it runs live without that guard,
            and ``setup()`` logs a warning.
        listing: :meth:`Backend.list_contexts` and :meth:`Backend.list_records` enumerate what is stored
            (CONTRACTS.md 3.8), which the operator tools (``ls``, ``show``, ``export``, ``copy``) need.
        deletion: :meth:`Backend.delete_records` removes records for good, which ``prune`` needs.
        atomic_units: :meth:`Backend.apply_unit` applies a unit of work all or none: after a crash (of the kind
            ``survives_process_kill`` names) either every write of the unit is visible or none is. ``False``: the
            default :meth:`Backend.apply_unit` applies the writes one by one, and a unit is logged as not atomic.
        deletion_batch: how many keys ``prune`` collects before it calls :meth:`Backend.delete_records`. A
            backend whose every call costs in proportion to what it stores (jsonl rewrites its file) asks for
            large batches; the keys are held in memory meanwhile.
        blocks: an operation may wait: on I/O, a server, or a lock another process holds. ``False`` declares
            that every operation is a short in-memory step (memory); the asyncio face then calls it on the
            event loop, because a hop to the thread pool and back costs more than the operation.
    """

    domains: frozenset[str] | None = None
    shared_between_processes: bool = True
    survives_process_kill: bool = True
    keeps_removed_records: bool = True
    ownership: bool = False
    listing: bool = False
    deletion: bool = False
    atomic_units: bool = False
    deletion_batch: int = PAGE_SIZE
    blocks: bool = True

    def supports(self, domain_name: str) -> bool:
        """Whether the backend accepts records of ``domain_name``."""
        return self.domains is None or domain_name in self.domains


class Backend(abc.ABC):
    """A storage technology that keeps records for the persistence domains.

    Keys and records passed in are already validated; a backend never validates user input again.
    All methods must be safe to call from several threads at once. A backend raises only
    :class:`~persist_core.errors.PersistError` subclasses, translating its driver's errors in one place.
    """

    #: Declared capabilities; override in subclasses (class attribute or property).
    capabilities: ClassVar[Capabilities] = Capabilities()

    #: The URL the backend was opened with, password masked; for messages and logs.
    url: str = ""

    def open(self) -> None:  # noqa: B027 - optional hook, intentionally empty
        """Do the start-up work once (create folders, sweep temp files, check the schema, connect).

        Idempotent: a second call does nothing. Fails fast with a clear error if the backend is unusable.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, intentionally empty
        """Release connections and file handles. Idempotent."""

    @abc.abstractmethod
    def get(self, domain: DomainSpec, key: Key) -> Record | None:
        """Return the record stored under ``key`` (removed ones included), or ``None``."""

    @abc.abstractmethod
    def scan(
        self,
        domain: DomainSpec,
        context: Key,
        start: ItemKey | None = None,
        stop: ItemKey | None = None,
    ) -> list[tuple[ItemKey, Record]]:
        """Return ``(item key, record)`` pairs of one context, ascending by item key.

        Only for domains with an item key. ``start`` is inclusive and ``stop`` exclusive; ``None``
        leaves that end open. Removed records are included. Strings order by code point (which is the
        byte order of their UTF-8), ints numerically.
        """

    def read_window(
        self, domain: DomainSpec, context: Key, start: int, stop: int, step: int
    ) -> list[tuple[ItemKey, Record]]:
        """Return the records at ``start + i * step`` below ``stop`` that exist (a candle window), ascending.

        It may stop at the first missing key: a window with a gap is a cache miss however much of it exists.
        Defaults to one :meth:`scan`; a backend without a range scan (files) looks the keys up instead.
        """
        return [(item, rec) for item, rec in self.scan(domain, context, start, stop) if (item - start) % step == 0]

    @abc.abstractmethod
    def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        """Insert or replace the record under ``key`` atomically (a reader sees the old or the new)."""

    def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        """:meth:`put` every item; a backend overrides this when one batch beats many round trips."""
        for key, record in items:
            self.put(domain, key, record)

    @abc.abstractmethod
    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        """Store each item whose key is absent; never change an existing one. Return how many were stored.

        First write wins, also between threads and processes sharing the backend: of two concurrent
        inserts of one key exactly one is stored. Keys within ``items`` are distinct.
        """

    @abc.abstractmethod
    def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        """Set the ``removed`` flag of the record under ``key`` and keep it; no-op if it is missing."""

    def apply_unit(self, writes: Sequence[Write]) -> None:
        """Apply the writes of a unit of work, in order, each with the contract of the call it stands for
        (:class:`~persist_core.units.WriteOp`: :meth:`put`, :meth:`insert_many` of one item,
        :meth:`mark_removed`), as one atomic step if ``capabilities.atomic_units``: once it returns all are
        stored, and after a crash before it returns all or none are visible, also to other processes once the
        storage is opened again. Domains and contexts may differ; the writes are already validated.

        A backend overrides it with one transaction, one journal, one round trip where it can. The default
        applies :func:`~persist_core.units.batches` of the writes through :meth:`put_many`,
        :meth:`insert_many` and :meth:`mark_removed`: not atomic.
        """
        from persist_core.units import calls  # units imports this module

        for name, args in calls(writes):
            getattr(self, name)(*args)

    # ------------------------------------------------------------------ operating the state (3.8)
    #
    # Key order, here and in scan: keys compare as tuples of their fields in spec order, strings by code
    # point, ints numerically, False before True (Python's own tuple order for the domain's field types).

    def list_contexts(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, int]]:
        """Return the contexts of ``domain`` that hold records, ascending, each with its number of records.

        A context is the tuple of the domain's context values; removed records count. Only contexts after
        ``after`` (exclusive), at most ``limit`` of them: page by passing the last context of a page as the
        next ``after``. Only if ``capabilities.listing``. The default groups :meth:`list_records`; a backend
        that can count without reading the records overrides it.
        """
        tally = ContextTally(len(domain.context), limit)
        cursor = after
        while True:
            page = self.list_records(domain, after=cursor, limit=PAGE_SIZE)
            if tally.add(key for key, _ in page) or len(page) < PAGE_SIZE:
                return tally.counts
            cursor = page[-1][0]

    def list_records(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, Record]]:
        """Return ``(key, record)`` pairs of ``domain`` ascending by key, removed ones included.

        Only keys whose first ``len(after)`` fields come after ``after``, at most ``limit``: with a whole key
        that is every later key (page by passing a page's last key as the next ``after``); with a shorter
        prefix (a context) every record under that prefix is skipped too (:func:`comes_after`). Records of
        other domains never appear, nor do temp files or other storage litter. A record written or deleted
        while a listing pages may or may not appear; every record present throughout appears exactly once.
        Only if ``capabilities.listing``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list records (capabilities.listing is False)")

    def delete_records(self, domain: DomainSpec, keys: Sequence[Key]) -> int:
        """Remove the records under ``keys`` for good (unlike :meth:`mark_removed`); return how many existed.

        Missing keys are skipped. Each record goes whole; other records, of this domain or another, are never
        touched. Only if ``capabilities.deletion``; a write, so a live process must own the storage.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot delete records (capabilities.deletion is False)")

    def lease_log(self) -> LeaseLog:
        """The storage of ownership leases (only if ``capabilities.ownership``); see :mod:`persist_core.ownership`.

        Called after :meth:`open`. The log lives in the backend's own storage, so that every process opening
        the same storage sees the same leases.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no ownership leases")

    def leave_interrupted_write(self, domain: DomainSpec, key: Key, record: Record) -> bool:
        """Leave in storage what a write of ``record`` under ``key`` leaves behind when its process dies before the
        write completes (a temp file, a torn line), without completing it. Return ``False`` (the default) if the
        backend has no such intermediate state.

        A hook of the contract kit's storage litter clauses, not for use in production: they plant the litter and
        check that no read or scan shows it, before and after a reopen, and that it blocks no later write.
        """
        return False

    def __enter__(self) -> Backend:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"
