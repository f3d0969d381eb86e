"""The MongoDB backend of backtest-persist, with a Redis cache of document ids (extra ``mongo``).

``mongodb://host:port/database`` URLs open a :class:`MongoBackend`; see docs/mongo.md.
"""

from persist_mongo._backend import DEFAULT_DATABASE, MongoBackend
from persist_mongo._cache import CacheStats

__all__ = ["DEFAULT_DATABASE", "CacheStats", "MongoBackend"]
