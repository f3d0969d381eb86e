"""The typed domain stores, built once on top of :class:`~persist_core.backend.Backend`.

A store is bound to one domain and one context. There is one class per store *kind* (slot, keyed map,
candle series, collection, soft-delete bucket), driven by the domain's :class:`DomainSpec`; no class
exists per domain. Every operation validates all of its input before it calls the backend, so bad
input raises a typed error and writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from persist_core.backend import Backend, Key, Record
from persist_core.domains import CANDLE_STEPS_MS, DomainSpec, Kind, ValueKind
from persist_core.errors import CorruptRecordError, InvalidValueError
from persist_core.validation import (
    DEFAULT_MAX_VALUE_BYTES,
    TIMESTAMP_LIMIT,
    check_context,
    check_field,
    decode_stored,
    encode_value,
    to_epoch_ms,
)

__all__ = [
    "BucketStore",
    "CandleStore",
    "Clock",
    "CollectionStore",
    "KeyedStore",
    "SlotStore",
    "Store",
    "WhenLike",
    "make_store",
    "store_class",
    "wall_clock_ms",
]

#: ``when=`` / ``as_of=``: epoch milliseconds or a timezone-aware datetime.
WhenLike = Any
#: A clock returning the current time in epoch milliseconds.
Clock = Callable[[], int]


def wall_clock_ms() -> int:
    """The wall clock in epoch milliseconds (the default candle clock)."""
    return time.time_ns() // 1_000_000


class Store:
    """Base of the typed stores: one domain, one context, one backend."""

    __slots__ = ("_backend", "_context", "_max_bytes", "_spec")

    def __init__(
        self,
        backend: Backend,
        spec: DomainSpec,
        context: Key,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        self._backend = backend
        self._spec = spec
        self._context = context
        self._max_bytes = max_value_bytes

    @property
    def domain(self) -> DomainSpec:
        """The domain this store serves."""
        return self._spec

    @property
    def context(self) -> Key:
        """The validated context values, in spec order."""
        return self._context

    @property
    def backend(self) -> Backend:
        """The backend the records live in."""
        return self._backend

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={v!r}" for f, v in zip(self._spec.context, self._context, strict=True))
        return f"<{type(self).__name__} {self._spec.name}({fields}) on {self._backend!r}>"

    # -- shared helpers -------------------------------------------------------------------------

    def _encode(self, value: object) -> str:
        if self._spec.value_kind is ValueKind.OBJECT and not isinstance(value, dict):
            raise InvalidValueError("$", f"a {self._spec.name} value must be a JSON object (dict)")
        return encode_value(value, self._max_bytes)

    def _encode_item(self, value: object, index: int) -> str:
        """Encode one item of a batch; an error names the item's index in its path."""
        try:
            return self._encode(value)
        except InvalidValueError as exc:
            raise InvalidValueError(f"$[{index}]{exc.path[1:]}", exc.reason) from None

    def _item(self, item: object) -> Key:
        field = self._spec.item
        if field is None:  # pragma: no cover - slot stores never call this
            raise TypeError(f"domain {self._spec.name!r} has no item key")
        return (*self._context, check_field(field, item))

    def _decode(self, record: Record, key: Key) -> Any:
        try:
            return decode_stored(self._spec, record.payload)
        except ValueError as exc:
            raise CorruptRecordError(
                f"{self._spec.name} record {key!r} in {self._backend.url} is not a valid stored value: {exc}"
            ) from exc

    @staticmethod
    def _visible(record: Record | None, as_of: int | None) -> Record | None:
        """``record`` if it exists, is not removed and is not later than ``as_of``; else ``None``."""
        if record is None or record.removed:
            return None
        if as_of is None or record.when is None or record.when <= as_of:
            return record
        return None

    def _read_value(self, key: Key, as_of: WhenLike) -> Any:
        limit = to_epoch_ms(as_of, "as_of")
        record = self._visible(self._backend.get(self._spec, key), limit)
        value = None if record is None else self._decode(record, key)
        return self._spec.missing.make() if value is None else value


class SlotStore(Store):
    """One record per context: signal, schedule, strategy, risk, recent, state, session."""

    __slots__ = ()

    def read(self, as_of: WhenLike = None) -> Any:
        """Return the value, or the domain's missing value (``None``, or ``{}`` for risk).

        A record written with a ``when`` later than ``as_of`` reads as missing (look-ahead guard).
        """
        return self._read_value(self._context, as_of)

    def write(self, value: object, when: WhenLike = None) -> None:
        """Replace the value atomically; ``None`` clears the slot."""
        when_ms = to_epoch_ms(when)
        payload = "null" if value is None else self._encode(value)
        self._backend.put(self._spec, self._context, Record(payload, when_ms))


class KeyedStore(Store):
    """A mapping per signal id: partial, breakeven."""

    __slots__ = ()

    def read(self, signal_id: str, as_of: WhenLike = None) -> Any:
        """Return the mapping stored for ``signal_id``, or ``{}``."""
        return self._read_value(self._item(signal_id), as_of)

    def write(self, signal_id: str, value: object, when: WhenLike = None) -> None:
        """Replace the mapping stored for ``signal_id``; ``None`` clears it."""
        key = self._item(signal_id)
        when_ms = to_epoch_ms(when)
        payload = "null" if value is None else self._encode(value)
        self._backend.put(self._spec, key, Record(payload, when_ms))


class CandleStore(Store):
    """An immutable candle series of one symbol, interval and exchange: first write wins."""

    __slots__ = ("_clock", "_step")

    def __init__(
        self,
        backend: Backend,
        spec: DomainSpec,
        context: Key,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        clock: Clock = wall_clock_ms,
    ) -> None:
        super().__init__(backend, spec, context, max_value_bytes=max_value_bytes)
        interval = context[[f.name for f in spec.context].index("interval")]
        self._step = CANDLE_STEPS_MS[interval]
        self._clock = clock

    @property
    def step_ms(self) -> int:
        """The interval's step in milliseconds."""
        return self._step

    def write(self, candles: Sequence[dict[str, Any]]) -> int:
        """Store each closed candle whose timestamp is new; return how many were stored.

        A candle whose timestamp is already stored is skipped even if its values differ. A candle that
        has not closed yet (``timestamp + step > now``) is skipped. The batch is validated whole first.
        """
        now = self._clock()
        batch: dict[int, Record] = {}
        for index, candle in enumerate(_as_list(candles, "candles")):
            if not isinstance(candle, dict):
                raise InvalidValueError(f"$[{index}]", "a candle must be a JSON object (dict)")
            if "timestamp" not in candle:
                raise InvalidValueError(f"$[{index}]", "a candle needs an int 'timestamp' (open time, ms)")
            key = self._item(candle["timestamp"])
            payload = self._encode_item(candle, index)
            if key[-1] + self._step <= now:
                batch.setdefault(key[-1], Record(payload))
        if not batch:
            return 0
        items = [((*self._context, ts), record) for ts, record in batch.items()]
        return self._backend.insert_many(self._spec, items)

    def read(self, limit: int, since: int) -> list[Any] | None:
        """Return exactly ``limit`` candles at ``since + i * step``, or ``None`` if any is missing.

        Raises:
            InvalidKeyError: ``since`` is not a valid candle timestamp.
            InvalidValueError: ``limit`` is not a positive int, or the window's last timestamp is not
                below 2**53 (no candle can be stored there, and backends cannot all express the range).
        """
        if type(limit) is not int or limit < 1:
            raise InvalidValueError("limit", "must be a positive int")
        start = self._item(since)[-1]
        stop = start + limit * self._step
        # The one check of the window's range for every backend: beyond 2**53 SQLite and MongoDB
        # overflow their 64-bit ints (or doubles), PostgreSQL fails the statement, others answer None.
        if stop - self._step >= TIMESTAMP_LIMIT:
            raise InvalidValueError(
                "limit", f"the window's last timestamp {stop - self._step} is not below 2**53 (the key range)"
            )
        found = dict(self._backend.read_window(self._spec, self._context, start, stop, self._step))
        out = []
        for ts in range(start, stop, self._step):
            record = found.get(ts)
            if record is None:
                return None
            out.append(self._decode(record, (*self._context, ts)))
        return out


class CollectionStore(Store):
    """A list of items keyed by their ``id``: storage and notification upsert, log appends only."""

    __slots__ = ()

    def read(self) -> list[Any]:
        """Return every item, ascending by id (``[]`` when nothing is stored)."""
        rows = self._backend.scan(self._spec, self._context)
        return [self._decode(rec, (*self._context, item)) for item, rec in rows if not rec.removed]

    def write(self, items: Sequence[dict[str, Any]]) -> None:
        """Upsert every item by its ``id`` (log: add only ids that are new). Validated whole first."""
        batch: dict[Any, Record] = {}
        for index, item in enumerate(_as_list(items, "items")):
            if not isinstance(item, dict):
                raise InvalidValueError(f"$[{index}]", f"a {self._spec.name} item must be a JSON object")
            if "id" not in item:
                raise InvalidValueError(f"$[{index}]", f"a {self._spec.name} item needs an 'id' field")
            key = self._item(item["id"])
            record = Record(self._encode_item(item, index))
            if self._spec.first_write_wins:
                batch.setdefault(key[-1], record)
            else:
                batch[key[-1]] = record
        if not batch:
            return
        pairs = [((*self._context, item), record) for item, record in batch.items()]
        if self._spec.first_write_wins:
            self._backend.insert_many(self._spec, pairs)
        else:
            self._backend.put_many(self._spec, pairs)


class BucketStore(Store):
    """Soft-delete buckets: measure, interval (by entry key) and memory (by memory id)."""

    __slots__ = ()

    def read(self, key: str, as_of: WhenLike = None) -> Any:
        """Return the value under ``key``, or ``None`` if missing, removed or later than ``as_of``."""
        return self._read_value(self._item(key), as_of)

    def write(self, key: str, value: object, when: WhenLike = None) -> None:
        """Insert or replace the value under ``key``; writing a removed key revives it."""
        full = self._item(key)
        when_ms = to_epoch_ms(when)
        self._backend.put(self._spec, full, Record(self._encode(value), when_ms))

    def remove(self, key: str) -> None:
        """Mark ``key`` removed; the record stays in storage for the audit trail. Missing: no-op."""
        self._backend.mark_removed(self._spec, self._item(key))

    def has(self, key: str, as_of: WhenLike = None) -> bool:
        """True only for a present, non-removed entry (visible at ``as_of``)."""
        full = self._item(key)
        return self._visible(self._backend.get(self._spec, full), to_epoch_ms(as_of, "as_of")) is not None

    def keys(self, as_of: WhenLike = None) -> list[str]:
        """The non-removed keys, ascending."""
        limit = to_epoch_ms(as_of, "as_of")
        rows = self._backend.scan(self._spec, self._context)
        return [item for item, rec in rows if self._visible(rec, limit) is not None]

    def entries(self, as_of: WhenLike = None) -> Iterator[tuple[str, Any]]:
        """Yield ``(key, value)`` of the non-removed entries, ascending by key."""
        limit = to_epoch_ms(as_of, "as_of")
        for item, rec in self._backend.scan(self._spec, self._context):
            if self._visible(rec, limit) is not None:
                yield item, self._decode(rec, (*self._context, item))


def _as_list(items: object, name: str) -> list[Any]:
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Sequence):
        raise InvalidValueError("$", f"{name} must be a list")
    return list(items)


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
