"""The 16 persistence domains, as data.

Each :class:`DomainSpec` says which fields pick a record (context fields, then the item key), what kind of
store the domain is, what a missing record reads as, and which rule applies (first write wins, soft
delete). Everything else (the typed stores, the file layout, SQL tables, Mongo indexes, Redis keys) is
derived from these specs, so a domain's rule lives here and nowhere else.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CANDLE_STEPS_MS",
    "DOMAINS",
    "CandleInterval",
    "DomainSpec",
    "FieldType",
    "KeyField",
    "Kind",
    "Missing",
    "ValueKind",
    "domain",
]

#: The candle intervals (CONTRACTS.md 3.3), for type checkers; ``check_field`` enforces the same set at run time.
CandleInterval = Literal["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "1d"]

#: Candle intervals and their step in milliseconds (CONTRACTS.md 3.3).
CANDLE_STEPS_MS: Mapping[str, int] = {
    "1m": 60_000,
    "3m": 3 * 60_000,
    "5m": 5 * 60_000,
    "15m": 15 * 60_000,
    "30m": 30 * 60_000,
    "1h": 3_600_000,
    "2h": 2 * 3_600_000,
    "4h": 4 * 3_600_000,
    "6h": 6 * 3_600_000,
    "8h": 8 * 3_600_000,
    "1d": 86_400_000,
}


class Kind(enum.Enum):
    """The shape of a domain's store (CONTRACTS.md 3.1-3.5)."""

    SLOT = "slot"  #: one record per context
    KEYED = "keyed"  #: a mapping per item key (partial, breakeven)
    CANDLE = "candle"  #: an immutable series keyed by open time
    COLLECTION = "collection"  #: a list of items keyed by their ``id``
    BUCKET = "bucket"  #: soft-delete buckets keyed by entry key / memory id


class FieldType(enum.Enum):
    """The Python type of a key field."""

    STR = "str"
    BOOL = "bool"
    INT = "int"


class Missing(enum.Enum):
    """What a missing record reads as."""

    NONE = "none"
    MAPPING = "mapping"
    LIST = "list"

    def make(self) -> Any:
        """A fresh "missing" value."""
        if self is Missing.MAPPING:
            return {}
        if self is Missing.LIST:
            return []
        return None


class ValueKind(enum.Enum):
    """What a stored value must be, on top of being valid JSON (CONTRACTS.md 4)."""

    ANY = "any"  #: any JSON document
    OBJECT = "object"  #: a JSON object (``dict``)


@dataclass(frozen=True, slots=True)
class KeyField:
    """One field of a domain's unique key.

    Attributes:
        name: the Python keyword / SQL column name (snake_case).
        type: the Python type of the field.
        may_be_empty: only ``frame_name`` may be the empty string.
        choices: when set, the only accepted values (candle ``interval``).
    """

    name: str
    type: FieldType = FieldType.STR
    may_be_empty: bool = False
    choices: frozenset[str] | None = None

    @property
    def camel(self) -> str:
        """The field's camelCase name, as upstream's MongoDB documents spell it."""
        head, *rest = self.name.split("_")
        return head + "".join(part.title() for part in rest)


@dataclass(frozen=True, slots=True)
class DomainSpec:
    """Everything the generic machinery needs to know about one domain.

    Attributes:
        name: the domain name, e.g. ``"signal"``.
        kind: the store shape.
        context: the fields that pick which instance of the domain a store is bound to.
        item: the field that picks a record inside one context; ``None`` for slot domains.
        value_kind: what a value must be.
        missing: what a missing record reads as.
        first_write_wins: an existing key is never overwritten (candle, log).
        soft_delete: ``remove`` marks the record removed and keeps it (measure, interval, memory).
        isolate_modes: live position state whose key carries no mode (signal, schedule, strategy, risk,
            partial, breakeven): a backtest's records of it never share storage with live ones unless the
            user opts in (CONTRACTS.md 3.7; :mod:`persist_core.config`).
        timed: writes accept ``when=`` and reads accept ``as_of=``.
        item_id_field: for collections, the field of each item that holds its key.
    """

    name: str
    kind: Kind
    context: tuple[KeyField, ...]
    item: KeyField | None = None
    value_kind: ValueKind = ValueKind.ANY
    missing: Missing = Missing.NONE
    first_write_wins: bool = False
    soft_delete: bool = False
    item_id_field: str | None = None
    isolate_modes: bool = False
    description: str = ""
    timed: bool = field(init=False)

    def __post_init__(self) -> None:
        timed = self.kind in (Kind.SLOT, Kind.KEYED, Kind.BUCKET)
        object.__setattr__(self, "timed", timed)

    @property
    def key_fields(self) -> tuple[KeyField, ...]:
        """Context fields followed by the item key: the domain's unique key."""
        return self.context if self.item is None else (*self.context, self.item)

    @property
    def table_name(self) -> str:
        """SQL table name: ``<domain>_items``."""
        return f"{self.name}_items"

    @property
    def collection_name(self) -> str:
        """MongoDB collection name: ``<domain>-items``."""
        return f"{self.name}-items"

    @property
    def cache_prefix(self) -> str:
        """Redis key prefix: ``<domain>_cache``."""
        return f"{self.name}_cache"


_SYMBOL = KeyField("symbol")
_STRATEGY = KeyField("strategy_name")
_EXCHANGE = KeyField("exchange_name")
_FRAME = KeyField("frame_name", may_be_empty=True)
_BACKTEST = KeyField("backtest", FieldType.BOOL)
_SIGNAL_ID = KeyField("signal_id")
_BUCKET_NAME = KeyField("bucket_name")
_TRIPLE = (_SYMBOL, _STRATEGY, _EXCHANGE)

_SPECS = (
    DomainSpec(
        "signal", Kind.SLOT, _TRIPLE, value_kind=ValueKind.OBJECT, isolate_modes=True, description="open position row"
    ),
    DomainSpec(
        "schedule",
        Kind.SLOT,
        _TRIPLE,
        value_kind=ValueKind.OBJECT,
        isolate_modes=True,
        description="scheduled (limit-order) signal row",
    ),
    DomainSpec(
        "strategy",
        Kind.SLOT,
        _TRIPLE,
        value_kind=ValueKind.OBJECT,
        isolate_modes=True,
        description="deferred strategy state: commit queue, retry counters, pause flag",
    ),
    DomainSpec(
        "risk",
        Kind.SLOT,
        (KeyField("risk_name"), _EXCHANGE),
        value_kind=ValueKind.OBJECT,
        missing=Missing.MAPPING,
        isolate_modes=True,
        description="mapping position-key -> position",
    ),
    DomainSpec(
        "partial",
        Kind.KEYED,
        _TRIPLE,
        _SIGNAL_ID,
        value_kind=ValueKind.OBJECT,
        missing=Missing.MAPPING,
        isolate_modes=True,
        description="profit/loss levels reached",
    ),
    DomainSpec(
        "breakeven",
        Kind.KEYED,
        _TRIPLE,
        _SIGNAL_ID,
        value_kind=ValueKind.OBJECT,
        missing=Missing.MAPPING,
        isolate_modes=True,
        description="breakeven reached",
    ),
    DomainSpec(
        "candle",
        Kind.CANDLE,
        (_SYMBOL, KeyField("interval", choices=frozenset(CANDLE_STEPS_MS)), _EXCHANGE),
        KeyField("timestamp", FieldType.INT),
        value_kind=ValueKind.OBJECT,
        first_write_wins=True,
        item_id_field="timestamp",
        description="OHLCV candle, immutable",
    ),
    DomainSpec(
        "storage",
        Kind.COLLECTION,
        (_BACKTEST,),
        _SIGNAL_ID,
        value_kind=ValueKind.OBJECT,
        missing=Missing.LIST,
        item_id_field="id",
        description="public signal rows with status",
    ),
    DomainSpec(
        "notification",
        Kind.COLLECTION,
        (_BACKTEST,),
        KeyField("notification_id"),
        value_kind=ValueKind.OBJECT,
        missing=Missing.LIST,
        item_id_field="id",
        description="notifications",
    ),
    DomainSpec(
        "log",
        Kind.COLLECTION,
        (),
        KeyField("entry_id"),
        value_kind=ValueKind.OBJECT,
        missing=Missing.LIST,
        first_write_wins=True,
        item_id_field="id",
        description="structured log entries, append-only",
    ),
    DomainSpec(
        "measure",
        Kind.BUCKET,
        (KeyField("bucket"),),
        KeyField("entry_key"),
        soft_delete=True,
        description="cached LLM/API responses",
    ),
    DomainSpec(
        "interval",
        Kind.BUCKET,
        (KeyField("bucket"),),
        KeyField("entry_key"),
        soft_delete=True,
        description="time-window markers",
    ),
    DomainSpec(
        "memory",
        Kind.BUCKET,
        (_SIGNAL_ID, _BUCKET_NAME),
        KeyField("memory_id"),
        soft_delete=True,
        description="persistent LLM context entries",
    ),
    DomainSpec(
        "recent",
        Kind.SLOT,
        (_SYMBOL, _STRATEGY, _EXCHANGE, _FRAME, _BACKTEST),
        value_kind=ValueKind.OBJECT,
        description="last-seen signal of the context",
    ),
    DomainSpec("state", Kind.SLOT, (_SIGNAL_ID, _BUCKET_NAME), description="arbitrary strategy state of a signal"),
    DomainSpec(
        "session",
        Kind.SLOT,
        (_STRATEGY, _EXCHANGE, _FRAME, _SYMBOL, _BACKTEST),
        description="cached indicator calculations",
    ),
)


class _Registry(Mapping[str, DomainSpec]):
    """Read-only name -> spec mapping, in the order of CONTRACTS.md section 2."""

    def __init__(self, specs: tuple[DomainSpec, ...]) -> None:
        self._by_name = {spec.name: spec for spec in specs}

    def __getitem__(self, name: str) -> DomainSpec:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)


#: All 16 domains by name.
DOMAINS: Mapping[str, DomainSpec] = _Registry(_SPECS)


def domain(name: str) -> DomainSpec:
    """The spec of the domain called ``name``; an unknown name is a :class:`ConfigurationError`."""
    try:
        return DOMAINS[name]
    except KeyError:
        from persist_core.errors import ConfigurationError

        known = ", ".join(DOMAINS)
        raise ConfigurationError(f"unknown domain {name!r}; the domains are: {known}") from None
