"""The typed domain stores of the sync face, built once on top of :class:`~persist_core.backend.Backend`.

A store is bound to one domain and one context. There is one class per store *kind* (slot, keyed map,
candle series, collection, soft-delete bucket), driven by the domain's :class:`DomainSpec`; no class
exists per domain. The rules live in :mod:`persist_core.store_rules`, shared with the asyncio face
(:mod:`persist_core.async_stores`); these classes add the backend calls. Every operation validates all of
its input before it calls the backend, so bad input raises a typed error and writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

from persist_core.backend import Backend
from persist_core.domains import DomainSpec, Kind
from persist_core.json_types import JsonLike, JsonObject, JsonObjectLike, JsonValue
from persist_core.store_rules import (
    BucketRules,
    CandleRules,
    Clock,
    CollectionRules,
    KeyedRules,
    R,
    SlotRules,
    StoreRules,
    W,
    WhenLike,
    wall_clock_ms,
)
from persist_core.validation import DEFAULT_MAX_VALUE_BYTES, check_context, to_epoch_ms

__all__ = [
    "BucketStore",
    "CandleStore",
    "Clock",
    "CollectionStore",
    "KeyedStore",
    "MappingSlotStore",
    "ObjectSlotStore",
    "SlotStore",
    "Store",
    "ValueSlotStore",
    "WhenLike",
    "make_store",
    "store_class",
    "wall_clock_ms",
]


class Store(StoreRules[Backend]):
    """Base of the typed stores of the sync face: one domain, one context, one backend."""

    __slots__ = ()


class SlotStore(SlotRules[Backend, W, R], Store):
    """One record per context: signal, schedule, strategy, risk, recent, state, session.

    ``SlotStore[W, R]``: ``write`` takes a ``W``, ``read`` returns an ``R``. The accessors of
    :class:`~persist_core.persist.ModeStores` pick them per domain: a JSON object for signal, schedule,
    strategy, recent and risk (which reads ``{}`` when missing, the others ``None``), any JSON value for
    state and session.
    """

    __slots__ = ()

    def read(self, as_of: WhenLike = None) -> R:
        """Return the value, or the domain's missing value (``None``, or ``{}`` for risk).

        A record written with a ``when`` later than ``as_of`` reads as missing (look-ahead guard).
        """
        limit = to_epoch_ms(as_of, "as_of")
        return self._slot_value(self._backend.get(self._spec, self._context), limit)

    def write(self, value: W, when: WhenLike = None) -> None:
        """Replace the value atomically; ``None`` clears the slot."""
        self._backend.put(self._spec, self._context, self._record(value, when))


#: The store of signal, schedule, strategy and recent: a JSON object, ``None`` when missing.
ObjectSlotStore: TypeAlias = SlotStore[JsonObjectLike | None, JsonObject | None]
#: The store of risk: a JSON object, ``{}`` when missing.
MappingSlotStore: TypeAlias = SlotStore[JsonObjectLike | None, JsonObject]
#: The store of state and session: any JSON value, ``None`` when missing.
ValueSlotStore: TypeAlias = SlotStore[JsonLike, JsonValue]


class KeyedStore(KeyedRules[Backend], Store):
    """A mapping per signal id: partial, breakeven."""

    __slots__ = ()

    def read(self, signal_id: str, as_of: WhenLike = None) -> JsonObject:
        """Return the mapping stored for ``signal_id``, or ``{}``."""
        key = self._item(signal_id)
        limit = to_epoch_ms(as_of, "as_of")
        return self._mapping_value(self._backend.get(self._spec, key), key, limit)

    def write(self, signal_id: str, value: JsonObjectLike | None, when: WhenLike = None) -> None:
        """Replace the mapping stored for ``signal_id``; ``None`` clears it."""
        key = self._item(signal_id)
        self._backend.put(self._spec, key, self._record(value, when))


class CandleStore(CandleRules[Backend], Store):
    """An immutable candle series of one symbol, interval and exchange: first write wins."""

    __slots__ = ()

    def write(self, candles: Sequence[JsonObjectLike]) -> int:
        """Store each closed candle whose timestamp is new; return how many were stored.

        A candle whose timestamp is already stored is skipped even if its values differ. A candle that
        has not closed yet (``timestamp + step > now``) is skipped. The batch is validated whole first.
        """
        items = self._candle_batch(candles)
        return self._backend.insert_many(self._spec, items) if items else 0

    def read(self, limit: int, since: int) -> list[JsonObject] | None:
        """Return exactly ``limit`` candles at ``since + i * step``, or ``None`` if any is missing.

        Raises:
            InvalidKeyError: ``since`` is not a valid candle timestamp.
            InvalidValueError: ``limit`` is not a positive int, or the window's last timestamp is not
                below 2**53 (no candle can be stored there).
        """
        start, stop = self._window(limit, since)
        found = self._backend.read_window(self._spec, self._context, start, stop, self._step)
        return self._window_values(found, start, stop)


class CollectionStore(CollectionRules[Backend], Store):
    """A list of items keyed by their ``id``: storage and notification upsert, log appends only."""

    __slots__ = ()

    def read(self) -> list[JsonObject]:
        """Return every item, ascending by id (``[]`` when nothing is stored)."""
        return self._items(self._backend.scan(self._spec, self._context))

    def write(self, items: Sequence[JsonObjectLike]) -> None:
        """Upsert every item by its ``id`` (log: add only ids that are new). Validated whole first."""
        pairs = self._collection_batch(items)
        if not pairs:
            return
        if self._spec.first_write_wins:
            self._backend.insert_many(self._spec, pairs)
        else:
            self._backend.put_many(self._spec, pairs)


class BucketStore(BucketRules[Backend], Store):
    """Soft-delete buckets: measure, interval (by entry key) and memory (by memory id)."""

    __slots__ = ()

    def read(self, key: str, as_of: WhenLike = None) -> JsonValue:
        """Return the value under ``key``, or ``None`` if missing, removed or later than ``as_of``."""
        full = self._item(key)
        limit = to_epoch_ms(as_of, "as_of")
        return self._bucket_value(self._backend.get(self._spec, full), full, limit)

    def write(self, key: str, value: JsonLike, when: WhenLike = None) -> None:
        """Insert or replace the value under ``key``; writing a removed key revives it."""
        full = self._item(key)
        self._backend.put(self._spec, full, self._bucket_record(value, when))

    def remove(self, key: str) -> None:
        """Mark ``key`` removed; the record stays in storage for the audit trail. Missing: no-op."""
        self._backend.mark_removed(self._spec, self._item(key))

    def has(self, key: str, as_of: WhenLike = None) -> bool:
        """True only for a present, non-removed entry (visible at ``as_of``)."""
        full = self._item(key)
        return self._visible(self._backend.get(self._spec, full), to_epoch_ms(as_of, "as_of")) is not None

    def keys(self, as_of: WhenLike = None) -> list[str]:
        """The non-removed keys, ascending."""
        return self._keys(self._backend.scan(self._spec, self._context), as_of)

    def entries(self, as_of: WhenLike = None) -> Iterator[tuple[str, JsonValue]]:
        """Yield ``(key, value)`` of the non-removed entries, ascending by key."""
        to_epoch_ms(as_of, "as_of")  # a bad as_of fails at the call, not at the first next()
        return self._entries(self._backend.scan(self._spec, self._context), as_of)


_STORE_CLASSES: dict[Kind, type[Store]] = {
    Kind.SLOT: SlotStore,
    Kind.KEYED: KeyedStore,
    Kind.CANDLE: CandleStore,
    Kind.COLLECTION: CollectionStore,
    Kind.BUCKET: BucketStore,
}


def store_class(spec: DomainSpec) -> type[Store]:
    """The store class that serves ``spec``'s kind."""
    return _STORE_CLASSES[spec.kind]


def make_store(
    backend: Backend,
    spec: DomainSpec,
    context: dict[str, Any],
    *,
    clock: Clock = wall_clock_ms,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
) -> Store:
    """Validate ``context`` and return the typed store of ``spec`` on ``backend``.

    This is how :class:`~persist_core.persist.Persist` builds stores; tests and tools use it to drive a
    backend directly without ``setup()``.
    """
    values = check_context(spec, context)
    if spec.kind is Kind.CANDLE:
        return CandleStore(backend, spec, values, max_value_bytes=max_value_bytes, clock=clock)
    return _STORE_CLASSES[spec.kind](backend, spec, values, max_value_bytes=max_value_bytes)
