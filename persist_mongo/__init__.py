"""The MongoDB backend of backtest-persist, with a Redis cache of its records (extra ``mongo``).

``mongodb://host:port/database`` URLs open a :class:`MongoBackend`, and on the asyncio face (``asetup``) an
:class:`AsyncMongoBackend` beside it; see docs/mongo.md.
"""

from persist_mongo._async_backend import AsyncMongoBackend
from persist_mongo._backend import DEFAULT_DATABASE, MongoBackend
from persist_mongo._cache import CacheStats

__all__ = ["DEFAULT_DATABASE", "AsyncMongoBackend", "CacheStats", "MongoBackend"]
