"""The Redis value cache: unique key -> the record and the version of its document (CONTRACTS.md 6.4).

MongoDB is the source of truth; Redis holds copies of records, each with the version of its document (a counter
every write of the document increments in the same MongoDB command). Reads, fills and writes go through the
compare-and-set scripts of :mod:`persist_mongo._scripts`, so an older copy never replaces a newer one, and a
copy read before a write began never lands after it. The protocol and why it is never stale: docs/mongo.md,
"The Redis value cache", and docs/decisions.md.

Every failure of a Redis command is caught here: the cache marks itself down, logs one warning for the outage,
counts it, and answers "miss" / does nothing until a back-off interval has passed; then the next command probes
Redis again. Writes are the exception while Redis *refuses* connections (a refused connect costs nothing): each
write still tries to tell Redis, since a write Redis never heard of could leave an older copy readable once
Redis is back. Keys written while Redis could not be told are forgotten there as soon as it can be told.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from persist_core.backend import Key, Record
from persist_core.domains import DomainSpec, FieldType
from persist_core.urls import mask_url
from persist_mongo import _scripts
from persist_mongo._steps import Steps
from persist_mongo._wire import Wire

__all__ = ["DISABLED", "CacheStats", "Face", "ValueCache", "cache_key", "decode_entry", "encode_entry"]

log = logging.getLogger("persist.mongo")

#: ``redis_url`` values that mean "run without Redis".
DISABLED = frozenset({"none", "off", "disabled"})
#: Stamps per database: a writer's begin invalidates the misses of the keys sharing its stamp (docs/mongo.md).
_STAMPS = 1024
#: Keys remembered for forgetting while Redis cannot be told; beyond this a warning says so (docs/mongo.md).
_DIRTY_MAX = 100_000
# What the read script says of a miss (persist_mongo._scripts.READ).
_MARKED, _FOREIGN, _GARBAGE = 1, 2, 3


def _field(field_type: FieldType, value: Any) -> str:
    # One tag letter per type, then a form that never contains ":" (the field separator): percent-encoding
    # is injective and escapes ":" and "%", so no two keys share a Redis key (upstream's "_"/":" joins did).
    if field_type is FieldType.BOOL:
        return "b1" if value else "b0"
    if field_type is FieldType.INT:
        return f"i{value:d}"
    return "s" + quote(value, safe="")


def cache_key(namespace: str, spec: DomainSpec, key: Key) -> str:
    """The Redis key of a record: ``<database>:<domain>_cache:<field>:<field>...`` (see :func:`_cache_key`).

    Every read and write of a key computes it, and percent-encoding its fields costs ~3 µs: the last 4,096 are
    kept (a key with an unhashable field, which validation refuses before a backend sees it, is not).
    """
    try:
        return _cached_key(namespace, spec, key)
    except TypeError:
        return _cache_key(namespace, spec, key)


def _cache_key(namespace: str, spec: DomainSpec, key: Key) -> str:
    """The Redis key of a record: ``<database>:<domain>_cache:<field>:<field>...``.

    ``namespace`` is the percent-encoded MongoDB database name, so two databases sharing one Redis never
    share a key. Every field is typed and encoded on its own (see :func:`_field`).
    """
    fields = ":".join(_field(f.type, v) for f, v in zip(spec.key_fields, key, strict=True))
    return f"{namespace}:{spec.cache_prefix}:{fields}"


_cached_key = functools.lru_cache(maxsize=4096)(_cache_key)


def namespace_of(database: str) -> str:
    """The Redis key prefix of a MongoDB database."""
    return quote(database, safe="")


@functools.lru_cache(maxsize=4096)  # a read and a write compute it once or twice per call, for recurring keys
def stamp_key(key: str) -> str:
    """The stamp of the Redis key ``key``: one of :data:`_STAMPS` in the key's database namespace."""
    namespace = key.split(":", 1)[0]
    return f"{namespace}:stamp:{zlib.crc32(key.encode()) % _STAMPS}"


def encode_entry(version: int, record: Record) -> bytes:
    """The Redis string of a record at ``version``: ``R1|<version>|<when>|<removed>|<payload>``."""
    when = b"" if record.when is None else b"%d" % record.when
    return b"R1|%d|%s|%s|%s" % (version, when, b"1" if record.removed else b"0", record.payload.encode("utf-8"))


def decode_entry(raw: bytes) -> tuple[Record, int] | None:
    """The record and version of a cache entry, or ``None`` if it is not one of ours."""
    parts = raw.split(b"|", 4)
    try:
        if len(parts) != 5 or parts[0] != b"R1" or parts[3] not in (b"0", b"1"):
            return None
        when = None if parts[2] == b"" else int(parts[2])
        return Record(parts[4].decode("utf-8"), when, parts[3] == b"1"), int(parts[1])
    except (ValueError, UnicodeDecodeError):
        return None


def _with_stamps(keys: Iterable[str]) -> list[str]:
    return [part for key in keys for part in (key, stamp_key(key))]


def _token() -> str:
    return os.urandom(12).hex()


class Face:
    """The cache's Redis client on one face (redis-py or ``redis.asyncio``), its scripts, and its wire.

    ``Script`` (sync) and ``AsyncScript`` run ``EVALSHA`` and load the script on ``NOSCRIPT`` (a restarted Redis);
    called, one returns the reply, the other a coroutine: a generator yields either (:mod:`persist_mongo._steps`).
    A write's ``begin`` and ``commit``, two calls per write, go through :attr:`wire` (:mod:`persist_mongo._wire`).
    """

    __slots__ = ("begin", "client", "commit", "fill", "forget", "read", "release", "seed", "tombstone", "wire")

    def __init__(self, client: Any, wire: Wire) -> None:
        self.client = client
        self.wire = wire
        self.read = client.register_script(_scripts.READ)
        self.fill = client.register_script(_scripts.FILL)
        self.begin = client.register_script(_scripts.BEGIN)
        self.commit = client.register_script(_scripts.COMMIT)
        self.release = client.register_script(_scripts.RELEASE)
        self.tombstone = client.register_script(_scripts.TOMBSTONE)
        self.forget = client.register_script(_scripts.FORGET)
        self.seed = client.register_script(_scripts.SEED)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of the value cache's counters (``MongoBackend.cache_stats``).

    Attributes:
        enabled: a Redis URL was configured (``redis_url="none"`` turns the cache off).
        available: Redis answered the last command (False while an outage lasts).
        hits: reads answered by Redis alone.
        misses: reads answered by MongoDB (nothing cached, a writer's marker, a tombstone, or Redis skipped).
        stale: entries that were not ours (a key of another type, a string of another format); read from MongoDB
            and replaced.
        stores: copies written to Redis (by writes, by fills after misses, by first-write-wins inserts).
        refused: fills and commits that Redis refused because it held something as new or newer (or a marker).
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
    refused: int = 0
    errors: int = 0
    outages: int = 0
    bypassed: int = 0


class ValueCache:
    """Records in Redis, failing open: the health of one Redis (up or backing off, counters) and its clients.

    The commands (:meth:`read`, :meth:`fill`, :meth:`begin`, ...) are generators (:mod:`persist_mongo._steps`)
    run on a :class:`Face` of either face: :attr:`face` (redis-py; thread-safe) or one of :meth:`async_face`
    (``redis.asyncio``, one per event loop). Both faces of a backend share one cache, so an outage seen by one is
    seen by the other, and :meth:`stats` counts both.

    ``ttl`` (seconds) bounds how long a copy lives; ``lease_ms`` how long a writer's marker or a tombstone stands.
    """

    def __init__(
        self, url: str, *, socket_timeout: float = 0.25, retry_interval: float = 2.0, ttl: float, lease_ms: int
    ) -> None:
        self.url = mask_url(url)
        #: Seconds a command (or a connect) may take before it counts as failed: Redis's share of a deadline.
        self.socket_timeout = socket_timeout
        self.ttl_ms = max(1, round(ttl * 1000))
        self.lease_ms = lease_ms
        self._raw_url = url
        self._retry_interval = retry_interval
        # No retries inside redis-py: a failed command means "Redis is down", handled by the back-off here.
        self._options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
            "retry_on_timeout": False,
            "health_check_interval": 0,
        }
        #: The sync face's client and scripts.
        client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **self._options)
        self.face = Face(client, Wire(client.connection_pool, timeout=socket_timeout, is_async=False))
        self._lock = threading.Lock()
        self._available = True
        self._hung = False  # the last failure was a timeout: Redis may be frozen with its data
        self._dirty: dict[str, set[str]] = {}  # key -> the tokens of this process's markers that may be on it
        self._warned_foreign = False
        self._retry_at = 0.0
        self._counts = dict.fromkeys(
            ("hits", "misses", "stale", "stores", "refused", "errors", "outages", "bypassed"), 0
        )

    def async_face(self) -> Face:
        """A ``redis.asyncio`` client of the same URL and settings, for the asyncio face (bound to one event loop)."""
        from redis.asyncio import ConnectionPool, Redis
        from redis.asyncio.retry import Retry as AsyncRetry

        client = Redis.from_url(self._raw_url, retry=AsyncRetry(NoBackoff(), 0), **self._options)
        # The wire's pool of its own: no socket timeout, since the wire bounds its sends and reads itself
        # (persist_mongo._wire); the connect keeps its timeout.
        options = {**self._options, "socket_timeout": None}
        pool = ConnectionPool.from_url(self._raw_url, retry=AsyncRetry(NoBackoff(), 0), **options)
        return Face(client, Wire(pool, timeout=self.socket_timeout, is_async=True))

    # -- state ---------------------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _usable(self, write: bool) -> bool:
        """Whether to send a command now: Redis is up, or the back-off is over and this caller probes it, or this
        is a write and Redis refused connections (cheap to ask again, and the write needs Redis to know)."""
        if self._available or (write and not self._hung):
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
            self._hung = isinstance(exc, redis.TimeoutError)
            if not self._available:
                return
            self._available = False
            self._counts["outages"] += 1
        log.warning(
            "Redis cache at %s is unavailable (%s); reading and writing MongoDB alone, retrying Redis every %gs",
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
                "Redis cache at %s: key %r holds a value of another type (not written by this library); "
                "it reads as a miss and is replaced. Is another application using this Redis database?",
                self.url,
                key,
            )

    def _succeeded(self) -> None:
        if self._available:
            return
        with self._lock:  # another thread may have seen the same success: log the return once
            was_available, self._available, self._hung = self._available, True, False
        if not was_available:
            log.info("Redis cache at %s is available again; the cache refills as records are read", self.url)

    def _remember(self, keys: Iterable[str], token: str = "") -> None:
        """Keys written while Redis could not be told: forgotten (their copies deleted, their stamps replaced) before
        Redis is used again."""
        with self._lock:
            room = _DIRTY_MAX - len(self._dirty)
            keys = list(keys)
            for key in keys[: max(room, 0)]:
                tokens = self._dirty.setdefault(key, set())
                if token:
                    tokens.add(token)
        if room < len(keys):
            log.warning(
                "Redis cache at %s: over %d keys written during the outage; the ones beyond cannot be forgotten "
                "when Redis is back (entries expire after their TTL)",
                self.url,
                _DIRTY_MAX,
            )

    # -- commands (generators: persist_mongo._steps) ---------------------------------------------------

    def _command(
        self,
        face: Face,
        call: Callable[[], Any] | None = None,
        *,
        wire: Callable[[], Steps[Any]] | None = None,
        writes: Sequence[str] = (),
        token: str = "",
        probe: bool = False,
    ) -> Steps[tuple[bool, Any]]:
        """Send one command (``call`` makes it on ``face``, or ``wire`` on its wire): ``(True, reply)``,
        or ``(False, None)`` if Redis failed (an outage starts; nothing raises) or was skipped. ``writes``: the keys
        a write command is about, with ``token``, its marker's: remembered for forgetting if Redis cannot be told.
        Nothing is sent while Redis is backing off, unless ``probe``."""
        if not probe and not self._usable(write=bool(writes)):
            self._remember(writes)  # not sent: no marker of ours
            return False, None
        try:
            if self._dirty:  # first tell Redis about the keys written while it could not be told
                with self._lock:
                    dirty, self._dirty = self._dirty, {}
                try:
                    tokens = [",".join(["", *sorted(mine), ""]) for mine in dirty.values()]
                    yield face.forget(keys=_with_stamps(dirty), args=[_token(), *tokens])
                except BaseException:
                    with self._lock:
                        for key, mine in dirty.items():
                            self._dirty.setdefault(key, set()).update(mine)
                    raise
            if wire is not None:
                reply = yield from wire()
            elif call is not None:
                reply = yield call()
            else:  # pragma: no cover - every command names one
                raise TypeError("a command needs a call or a wire call")
        except redis.RedisError as exc:
            self._failed(exc)
            self._remember(writes, token)
            return False, None
        self._succeeded()
        return True, reply

    def read(self, face: Face, key: str) -> Steps[tuple[tuple[Record, int] | None, str | None]]:
        """``(record and version, None)`` on a hit; else ``(None, stamp)``, the stamp to :meth:`fill` with, or
        ``(None, None)`` when there is nothing to fill (a writer's marker, a tombstone, Redis down)."""
        sent, reply = yield from self._command(face, lambda: face.read(keys=[key, stamp_key(key)], args=[_token()]))
        if not sent:
            self._count("misses")
            return None, None
        if isinstance(reply, bytes | str):
            found = decode_entry(reply.encode() if isinstance(reply, str) else reply)
            if found is not None:
                self._count("hits")
                return found, None
            self._count("stale")  # an R1| string that does not parse: not ours
            return None, None
        stamp, kind = reply
        if kind == _FOREIGN:
            self._foreign(key)
        elif kind == _GARBAGE:
            self._count("stale")
        else:
            self._count("misses")
        stamp = stamp.decode() if isinstance(stamp, bytes) else str(stamp)
        return None, (None if kind == _MARKED else stamp)

    def fill(self, face: Face, key: str, stamp: str, version: int, record: Record) -> Steps[None]:
        """Store what a miss read from MongoDB, unless a write began since the miss or Redis holds as new or newer."""
        entry = encode_entry(version, record)
        args = [stamp, version, entry, self.ttl_ms]
        sent, stored = yield from self._command(face, lambda: face.fill(keys=[key, stamp_key(key)], args=args))
        if sent:
            self._count("stores" if stored else "refused")

    def begin(self, face: Face, key: str, token: str) -> Steps[int | None]:
        """Mark ``key`` as being written by ``token``: 0 if the marker is ours, else the ms left on another writer's
        marker, or ``None`` if Redis could not be told (the key is then forgotten there when it can be)."""
        keys, args = [key, stamp_key(key)], [token, self.lease_ms]
        sent, reply = yield from self._command(
            face, wire=lambda: face.wire.call(face.begin, keys, args), writes=[key], token=token
        )
        return int(reply) if sent else None

    def commit(self, face: Face, key: str, token: str | None, version: int, record: Record) -> Steps[None]:
        """Store a written record over a marker or an older copy (``token`` ``None``: no marker of ours), and
        replace the key's stamp."""
        keys, args = [key, stamp_key(key)], [token or "", version, encode_entry(version, record), self.ttl_ms, _token()]
        sent, stored = yield from self._command(
            face, wire=lambda: face.wire.call(face.commit, keys, args), writes=[key], token=token or ""
        )
        if sent:
            self._count("stores" if stored else "refused")

    def marker(self, face: Face, key: str) -> Steps[str | None]:
        """The token of the writer's marker on ``key``, or ``None`` (no marker, or Redis not reachable)."""
        sent, reply = yield from self._command(face, lambda: face.client.get(key))
        if not sent or not isinstance(reply, bytes | str):
            return None
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
        parts = text.split("|")
        return parts[1] if len(parts) >= 3 and parts[0] == "W" else None

    def release(self, face: Face, key: str, token: str) -> Steps[None]:
        """Delete our marker after a write that failed (its record may or may not have been written)."""
        yield from self._command(face, lambda: face.release(keys=[key], args=[token]), writes=[key], token=token)

    def tombstone(self, face: Face, keys: Sequence[str]) -> Steps[None]:
        """Tombstone deleted keys: no copy read before the deletion can be stored for the lease."""
        if keys:
            args = [_token(), self.lease_ms]
            yield from self._command(face, lambda: face.tombstone(keys=_with_stamps(keys), args=args), writes=keys)

    def seed(self, face: Face, records: Sequence[tuple[str, Record]]) -> Steps[None]:
        """Store first-write-wins records (version 1, never changed) where nothing is: one script call."""
        if records:
            keys = [key for key, _ in records]
            args = [self.ttl_ms, *(encode_entry(1, record) for _, record in records)]
            sent, stored = yield from self._command(face, lambda: face.seed(keys=keys, args=args))
            if sent:
                self._count("stores", int(stored))

    def ping(self, face: Face) -> Steps[bool]:
        """Probe Redis now (at open); a failure starts an outage, it does not raise."""
        sent, _ = yield from self._command(face, face.client.ping, probe=True)
        return bool(sent)

    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        with self._lock:
            return CacheStats(enabled=True, available=self._available, **self._counts)

    def close(self) -> None:
        """Disconnect the sync client's pool; the cache may be used again afterwards (it reconnects)."""
        self.face.client.close()
