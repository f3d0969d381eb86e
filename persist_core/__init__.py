"""backtest-persist core: crash-safe, pluggable persistence for a trading engine.

Quick start::

    from persist_core import setup

    persist = setup()  # file backend under ./dump, or PERSIST_URL
    signal = persist.live.signal(symbol="BTC/USDT", strategy_name="s1", exchange_name="binance")
    signal.write({"id": "sig-1", "position": "long", "priceOpen": 42000.0})
    row = signal.read()  # a JsonObject, or None when no position is open
    assert row is not None and row["id"] == "sig-1"

Reads and writes are typed per domain (:mod:`persist_core.json_types`); ``mypy --strict`` checks a bot's calls.
"""

from persist_core.async_backend import AsyncBackend, ThreadedAsyncBackend
from persist_core.async_persist import AsyncModeStores, AsyncPersist, asetup
from persist_core.backend import Backend, Capabilities, Record
from persist_core.domains import DOMAINS, CandleInterval, DomainSpec, Kind
from persist_core.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    ClosedError,
    ConfigurationError,
    CorruptRecordError,
    InvalidKeyError,
    InvalidValueError,
    OwnershipError,
    PersistError,
    SchemaAheadError,
    SchemaBehindError,
    SchemaError,
)
from persist_core.json_types import JsonLike, JsonObject, JsonObjectLike, JsonValue
from persist_core.persist import ModeStores, Persist, get_persist, setup
from persist_core.registry import register_backend
from persist_core.stores import (
    BucketStore,
    CandleStore,
    CollectionStore,
    KeyedStore,
    MappingSlotStore,
    ObjectSlotStore,
    SlotStore,
    Store,
    ValueSlotStore,
    WhenLike,
)

__version__ = "0.1.0"

__all__ = [
    "DOMAINS",
    "AsyncBackend",
    "AsyncModeStores",
    "AsyncPersist",
    "Backend",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BucketStore",
    "CandleInterval",
    "CandleStore",
    "Capabilities",
    "ClosedError",
    "CollectionStore",
    "ConfigurationError",
    "CorruptRecordError",
    "DomainSpec",
    "InvalidKeyError",
    "InvalidValueError",
    "JsonLike",
    "JsonObject",
    "JsonObjectLike",
    "JsonValue",
    "KeyedStore",
    "Kind",
    "MappingSlotStore",
    "ModeStores",
    "ObjectSlotStore",
    "OwnershipError",
    "Persist",
    "PersistError",
    "Record",
    "SchemaAheadError",
    "SchemaBehindError",
    "SchemaError",
    "SlotStore",
    "Store",
    "ThreadedAsyncBackend",
    "ValueSlotStore",
    "WhenLike",
    "__version__",
    "asetup",
    "get_persist",
    "register_backend",
    "setup",
]
