"""backtest-persist core: crash-safe, pluggable persistence for a trading engine.

Quick start::

    from persist_core import setup

    persist = setup()  # file backend under ./dump, or PERSIST_URL
    signal = persist.live.signal(symbol="BTC/USDT", strategy_name="s1", exchange_name="binance")
    signal.write({"id": "sig-1", "position": "long", "priceOpen": 42000.0})
    assert signal.read()["id"] == "sig-1"
"""

from persist_core.async_backend import AsyncBackend, ThreadedAsyncBackend
from persist_core.async_persist import AsyncModeStores, AsyncPersist, asetup
from persist_core.backend import Backend, Capabilities, Record
from persist_core.domains import DOMAINS, DomainSpec, Kind
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
from persist_core.persist import ModeStores, Persist, get_persist, setup
from persist_core.registry import register_backend
from persist_core.stores import BucketStore, CandleStore, CollectionStore, KeyedStore, SlotStore, Store

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
    "CandleStore",
    "Capabilities",
    "ClosedError",
    "CollectionStore",
    "ConfigurationError",
    "CorruptRecordError",
    "DomainSpec",
    "InvalidKeyError",
    "InvalidValueError",
    "KeyedStore",
    "Kind",
    "ModeStores",
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
    "__version__",
    "asetup",
    "get_persist",
    "register_backend",
    "setup",
]
