"""The Redis id cache: unique key -> the MongoDB ``_id`` of its document (CONTRACTS.md 6.4).

Redis is never the source of truth. Every failure of a Redis command is caught here: the cache marks
itself down, logs one warning for the outage, counts it, and answers "miss" / does nothing until a
back-off interval has passed; then the next command probes Redis again. So a dead Redis costs one failed
command per interval (with a short socket timeout), not one per operation, and no reconnect storm.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import redis
from bson.errors import InvalidId
from bson.objectid import ObjectId
from redis.backoff import NoBackoff
from redis.retry import Retry

from persist_core.backend import Key
from persist_core.domains import DomainSpec, FieldType
from persist_core.urls import mask_url
from persist_mongo._steps import Steps

__all__ = ["DISABLED", "CacheStats", "IdCache", "cache_key"]

log = logging.getLogger("persist.mongo")

#: ``redis_url`` values that mean "run without Redis".
DISABLED = frozenset({"none", "off", "disabled"})


def _field(field_type: FieldType, value: Any) -> str:
    # One tag letter per type, then a form that never contains ":" (the field separator): percent-encoding
    # is injective and escapes ":" and "%", so no two keys share a Redis key (upstream's "_"/":" joins did).
    if field_type is FieldType.BOOL:
        return "b1" if value else "b0"
    if field_type is FieldType.INT:
        return f"i{value:d}"
    return "s" + quote(value, safe="")


def cache_key(namespace: str, spec: DomainSpec, key: Key) -> str:
    """The Redis key of a record: ``<database>:<domain>_cache:<field>:<field>...``.

    ``namespace`` is the percent-encoded MongoDB database name, so two databases sharing one Redis never
    share a key. Every field is typed and encoded on its own (see :func:`_field`).
    """
    fields = ":".join(_field(f.type, v) for f, v in zip(spec.key_fields, key, strict=True))
    return f"{namespace}:{spec.cache_prefix}:{fields}"


def namespace_of(database: str) -> str:
    """The Redis key prefix of a MongoDB database."""
    return quote(database, safe="")


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of the id cache's counters (``MongoBackend.cache_stats``).

    Attributes:
        enabled: a Redis URL was configured (``redis_url="none"`` turns the cache off).
        available: Redis answered the last command (False while an outage lasts).
        hits: reads served by a cached ``_id`` whose document carried the requested key.
        misses: reads whose key was not in Redis (then answered by the indexed query).
        stale: cached entries that led to no document or to another key's document, or were not ours at all
            (a key of another type, say a list; then read by key and re-cached).
        stores: ``_id`` s written to Redis (after writes and after misses).
        errors: Redis commands that failed.
        outages: times Redis went from available to unavailable (one warning each).
        bypassed: operations that skipped Redis because it was down or backing off.
    """

    enabled: bool
    available: bool
    hits: int = 0
    misses: int = 0
    stale: int = 0
    stores: int = 0
    errors: int = 0
    outages: int = 0
    bypassed: int = 0


class IdCache:
    """key -> ``_id`` in Redis, failing open: the health of one Redis (up or backing off, counters) and its clients.

    The commands (:meth:`get`, :meth:`set`, ...) are generators (:mod:`persist_mongo._steps`) run on a client
    of either face: :attr:`client` (redis-py; thread-safe) or one of :meth:`async_client` (``redis.asyncio``,
    one per event loop). Both faces of a backend share one ``IdCache``, so an outage seen by one is seen by
    the other, and :meth:`stats` counts both.
    """

    def __init__(self, url: str, *, socket_timeout: float = 0.25, retry_interval: float = 2.0) -> None:
        self.url = mask_url(url)
        #: Seconds a command (or a connect) may take before it counts as failed: Redis's share of a deadline.
        self.socket_timeout = socket_timeout
        self._raw_url = url
        self._retry_interval = retry_interval
        # No retries inside redis-py: a failed command means "Redis is down", handled by the back-off here.
        self._options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
            "retry_on_timeout": False,
            "health_check_interval": 0,
        }
        #: The sync face's client.
        self.client: redis.Redis = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **self._options)
        self._lock = threading.Lock()
        self._available = True
        self._warned_foreign = False
        self._retry_at = 0.0
        self._counts = dict.fromkeys(("hits", "misses", "stale", "stores", "errors", "outages", "bypassed"), 0)

    def async_client(self) -> redis.asyncio.Redis:
        """A ``redis.asyncio`` client of the same URL and settings, for the asyncio face (bound to one event loop)."""
        import redis.asyncio
        import redis.asyncio.retry

        return redis.asyncio.Redis.from_url(
            self._raw_url, retry=redis.asyncio.retry.Retry(NoBackoff(), 0), **self._options
        )

    # -- state ---------------------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _usable(self) -> bool:
        """Whether to send a command now: Redis is up, or the back-off is over and this caller probes it."""
        if self._available:
            return True
        with self._lock:
            now = time.monotonic()
            if now >= self._retry_at:
                self._retry_at = now + self._retry_interval  # one probe per interval, whatever the threads
                return True
            self._counts["bypassed"] += 1
            return False

    def _failed(self, exc: redis.RedisError) -> None:
        with self._lock:
            self._counts["errors"] += 1
            self._retry_at = time.monotonic() + self._retry_interval
            if not self._available:
                return
            self._available = False
            self._counts["outages"] += 1
        log.warning(
            "Redis id cache at %s is unavailable (%s); reading and writing MongoDB alone, retrying Redis every %gs",
            self.url,
            mask_url(f"{type(exc).__name__}: {exc}"),
            self._retry_interval,
        )

    def _foreign(self, key: str) -> None:
        with self._lock:
            self._counts["stale"] += 1
            first, self._warned_foreign = not self._warned_foreign, True
        if first:  # once per cache: a namespace full of foreign keys must not flood the log
            log.warning(
                "Redis id cache at %s: key %r holds a value of another type (not written by this library); "
                "it reads as a miss and is replaced. Is another application using this Redis database?",
                self.url,
                key,
            )

    def _succeeded(self) -> None:
        if self._available:
            return
        with self._lock:  # another thread may have seen the same success: log the return once
            was_available, self._available = self._available, True
        if not was_available:
            log.info("Redis id cache at %s is available again; the cache refills as records are read", self.url)

    # -- commands (generators: persist_mongo._steps) ---------------------------------------------------

    def _command(self, call: Callable[[], Any], *, probe: bool = False) -> Steps[tuple[bool, Any]]:
        """Send one command (``call`` makes it on the face's client): ``(True, reply)``, or ``(False, None)`` if
        Redis failed (an outage starts; nothing raises). Nothing is sent while Redis is backing off, unless
        ``probe``."""
        if not probe and not self._usable():
            return False, None
        try:
            reply = yield call()
        except redis.RedisError as exc:
            self._failed(exc)
            return False, None
        self._succeeded()
        return True, reply

    def get(self, client: Any, key: str) -> Steps[ObjectId | None]:
        """The cached ``_id`` of ``key``, or ``None`` (not cached, unreadable, or Redis down)."""
        if not self._usable():
            return None
        try:
            raw = yield client.get(key)
        except redis.ResponseError as exc:
            if not str(exc).startswith("WRONGTYPE"):
                self._failed(exc)
                return None
            # A key of another type (a list, a hash) under our name: Redis answered, so this is no outage.
            # It reads as a stale entry, a miss; the caller's SET after the MongoDB read replaces it.
            self._succeeded()
            self._foreign(key)
            return None
        except redis.RedisError as exc:
            self._failed(exc)
            return None
        self._succeeded()
        if raw is None:
            self._count("misses")
            return None
        try:
            return ObjectId(raw.decode("ascii") if isinstance(raw, bytes) else str(raw))
        except (InvalidId, UnicodeDecodeError):  # not ours: treat as stale, re-cached by the caller
            self._count("stale")
            return None

    def set(self, client: Any, key: str, object_id: object) -> Steps[None]:
        """Cache ``key`` -> ``object_id`` (only ObjectIds are cached; other ``_id`` types are read by key)."""
        if isinstance(object_id, ObjectId):
            sent, _ = yield from self._command(lambda: client.set(key, str(object_id)))
            if sent:
                self._count("stores")

    def set_many(self, client: Any, pairs: Iterable[tuple[str, object]]) -> Steps[None]:
        """Cache several keys with one ``MSET`` (one round trip; ~10x cheaper to send than a pipeline of SETs)."""
        mapping = {key: str(object_id) for key, object_id in pairs if isinstance(object_id, ObjectId)}
        if mapping:
            sent, _ = yield from self._command(lambda: client.mset(mapping))
            if sent:
                self._count("stores", len(mapping))

    def delete(self, client: Any, key: str) -> Steps[None]:
        """Forget ``key`` (its cached ``_id`` led nowhere and the key has no document)."""
        yield from self._command(lambda: client.delete(key))

    def ping(self, client: Any) -> Steps[bool]:
        """Probe Redis now (at open); a failure starts an outage, it does not raise."""
        sent, _ = yield from self._command(client.ping, probe=True)
        return bool(sent)

    def hit(self) -> None:
        """Count a read served through the cache."""
        self._count("hits")

    def stale(self) -> None:
        """Count a cached ``_id`` that did not lead to the requested key's document."""
        self._count("stale")

    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        with self._lock:
            return CacheStats(enabled=True, available=self._available, **self._counts)

    def close(self) -> None:
        """Disconnect the sync client's pool; the cache may be used again afterwards (it reconnects)."""
        self.client.close()
