"""The rules of the typed stores, shared by the sync face (:mod:`persist_core.stores`) and the asyncio face
(:mod:`persist_core.async_stores`).

Each store kind (slot, keyed map, candle series, collection, soft-delete bucket) has one rules class here:
validation, encoding, the look-ahead guard, first-write-wins batching, decoding and the missing value. The
two faces only add the I/O, one backend call per operation, so a domain's rule lives here and nowhere else.
No method here touches the backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Generic, TypeAlias, TypeVar, cast

from persist_core.backend import Key, Record
from persist_core.domains import CANDLE_STEPS_MS, DomainSpec, ValueKind
from persist_core.errors import CorruptRecordError, InvalidValueError
from persist_core.json_types import JsonObject, JsonObjectLike, JsonValue
from persist_core.validation import (
    DEFAULT_MAX_VALUE_BYTES,
    TIMESTAMP_LIMIT,
    check_field,
    decode_stored,
    encode_value,
    to_epoch_ms,
)

__all__ = [
    "BucketRules",
    "CandleRules",
    "Clock",
    "CollectionRules",
    "KeyedRules",
    "SlotRules",
    "StoreRules",
    "WhenLike",
    "wall_clock_ms",
]

#: ``when=`` / ``as_of=``: epoch milliseconds or a timezone-aware datetime (``None``: no time).
WhenLike: TypeAlias = int | datetime | None
#: A clock returning the current time in epoch milliseconds.
Clock = Callable[[], int]
#: The backend type of a face: :class:`~persist_core.backend.Backend` or its asyncio counterpart.
B = TypeVar("B")
#: What a slot store's ``write`` accepts and its ``read`` returns (by domain: an object or any JSON value).
W = TypeVar("W")
R = TypeVar("R")


def wall_clock_ms() -> int:
    """The wall clock in epoch milliseconds (the default candle clock)."""
    return time.time_ns() // 1_000_000


class StoreRules(Generic[B]):
    """What every store kind shares: one domain, one validated context, one backend of either face."""

    __slots__ = ("_backend", "_context", "_max_bytes", "_spec")

    def __init__(
        self,
        backend: B,
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
    def backend(self) -> B:
        """The backend the records live in."""
        return self._backend

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={v!r}" for f, v in zip(self._spec.context, self._context, strict=True))
        return f"<{type(self).__name__} {self._spec.name}({fields}) on {self._backend!r}>"

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
                f"{self._spec.name} record {key!r} in {self._backend!r} is not a valid stored value: {exc}"
            ) from exc

    @staticmethod
    def _visible(record: Record | None, as_of: int | None) -> Record | None:
        """``record`` if it exists, is not removed and is not later than ``as_of``; else ``None``."""
        if record is None or record.removed:
            return None
        if as_of is None or record.when is None or record.when <= as_of:
            return record
        return None

    def _value(self, record: Record | None, key: Key, as_of: int | None) -> Any:
        """What a read returns for ``record``: its value if visible at ``as_of``, else the missing value."""
        visible = self._visible(record, as_of)
        value = None if visible is None else self._decode(visible, key)
        return self._spec.missing.make() if value is None else value

    def _record(self, value: object, when: WhenLike) -> Record:
        """The record a slot, keyed or bucket write stores; ``None`` stores ``null`` (reads as missing)."""
        when_ms = to_epoch_ms(when)
        return Record("null" if value is None else self._encode(value), when_ms)


class SlotRules(StoreRules[B], Generic[B, W, R]):
    """One record per context: signal, schedule, strategy, risk, recent, state, session.

    ``W`` and ``R`` are the value types of the domain, chosen by the accessor that builds the store.
    """

    __slots__ = ()

    def _slot_value(self, record: Record | None, as_of: int | None) -> R:
        # decode_stored enforces the domain's value kind, which the accessor's type arguments state.
        return cast(R, self._value(record, self._context, as_of))


class KeyedRules(StoreRules[B]):
    """A mapping per signal id: partial, breakeven."""

    __slots__ = ()

    def _mapping_value(self, record: Record | None, key: Key, as_of: int | None) -> JsonObject:
        # An object domain whose missing value is {}: decode_stored lets nothing else through.
        return cast(JsonObject, self._value(record, key, as_of))


class CandleRules(StoreRules[B]):
    """An immutable candle series of one symbol, interval and exchange: first write wins."""

    __slots__ = ("_clock", "_step")

    def __init__(
        self,
        backend: B,
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

    def _candle_batch(self, candles: Sequence[JsonObjectLike]) -> list[tuple[Key, Record]]:
        """The closed candles to insert, validated whole; the first of two equal timestamps wins."""
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
        return [((*self._context, ts), record) for ts, record in batch.items()]

    def _window(self, limit: int, since: int) -> tuple[int, int]:
        """``(start, stop)`` of a window read, validated."""
        if type(limit) is not int or limit < 1:
            raise InvalidValueError("limit", "must be a positive int")
        start = self._item(since)[-1]
        stop = start + limit * self._step
        # One check of the window's range for every backend: beyond 2**53 SQLite and MongoDB overflow their
        # 64-bit ints (or doubles) and PostgreSQL fails the statement, while no candle can be stored there.
        if stop - self._step >= TIMESTAMP_LIMIT:
            raise InvalidValueError(
                "limit", f"the window's last timestamp {stop - self._step} is not below 2**53 (the key range)"
            )
        return start, stop

    def _window_values(self, found: list[tuple[Any, Record]], start: int, stop: int) -> list[JsonObject] | None:
        """The window's candles in order, or ``None`` if any position is missing (a partial window is a miss)."""
        records = dict(found)
        out: list[JsonObject] = []
        for ts in range(start, stop, self._step):
            record = records.get(ts)
            if record is None:
                return None
            out.append(self._decode(record, (*self._context, ts)))
        return out


class CollectionRules(StoreRules[B]):
    """A list of items keyed by their ``id``: storage and notification upsert, log appends only."""

    __slots__ = ()

    def _collection_batch(self, items: Sequence[JsonObjectLike]) -> list[tuple[Key, Record]]:
        """Every item as a record under its ``id``, validated whole (log: the first of two equal ids wins)."""
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
        return [((*self._context, item), record) for item, record in batch.items()]

    def _items(self, rows: list[tuple[Any, Record]]) -> list[JsonObject]:
        return [self._decode(rec, (*self._context, item)) for item, rec in rows if not rec.removed]


class BucketRules(StoreRules[B]):
    """Soft-delete buckets: measure, interval (by entry key) and memory (by memory id)."""

    __slots__ = ()

    def _bucket_value(self, record: Record | None, key: Key, as_of: int | None) -> JsonValue:
        return cast(JsonValue, self._value(record, key, as_of))

    def _bucket_record(self, value: object, when: WhenLike) -> Record:
        when_ms = to_epoch_ms(when)
        return Record(self._encode(value), when_ms)

    def _keys(self, rows: list[tuple[Any, Record]], as_of: WhenLike) -> list[str]:
        limit = to_epoch_ms(as_of, "as_of")
        return [item for item, rec in rows if self._visible(rec, limit) is not None]

    def _entries(self, rows: list[tuple[Any, Record]], as_of: WhenLike) -> Iterator[tuple[str, JsonValue]]:
        limit = to_epoch_ms(as_of, "as_of")
        for item, rec in rows:
            if self._visible(rec, limit) is not None:
                yield item, self._decode(rec, (*self._context, item))


def _as_list(items: object, name: str) -> list[Any]:
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Sequence):
        raise InvalidValueError("$", f"{name} must be a list")
    return list(items)
