"""The MongoDB backend with its Redis value cache (CONTRACTS.md 6.4). Design notes: docs/mongo.md."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.common import URI_OPTIONS_VALIDATOR_MAP
from pymongo.database import Database
from pymongo.errors import OperationFailure

from persist_core.backend import PAGE_SIZE, Backend, Capabilities, ItemKey, Key, Record
from persist_core.config import resolve_redis_url
from persist_core.domains import DOMAINS, DomainSpec
from persist_core.errors import ConfigurationError, PersistError
from persist_core.units import Write
from persist_core.urls import check_credentials, mask_url, masks_driver_errors, parse_options
from persist_mongo import _operations as operations
from persist_mongo import _units as units
from persist_mongo._cache import DISABLED, CacheStats, ValueCache, namespace_of
from persist_mongo._deadline import DEFAULT_TIMEOUT, deadline, parse_timeout, remaining, split_timeout
from persist_mongo._errors import DRIVER_ERRORS, timed_out, translate
from persist_mongo._leases import LEASE_COLLECTION, MongoLeaseLog
from persist_mongo._operations import LOCK_COLLECTION, LOCK_INDEX, Handles, Settings
from persist_mongo._steps import Steps, run

__all__ = ["DEFAULT_DATABASE", "DEFAULT_TIMEOUT", "LOCK_COLLECTION", "MongoBackend"]

log = logging.getLogger("persist.mongo")

#: The database used when the URL names none (``mongodb://host:27017``).
DEFAULT_DATABASE = "backtest-persist"
#: Client options we set to the deadline (``timeout``, in ms) unless the URL or ``client_options`` set them. Every
#: operation also runs under ``pymongo.timeout(timeout)``, which caps each of them by the time left; these bound
#: what runs outside an operation (the monitor's connection and heartbeat: connectTimeoutMS). docs/mongo.md,
#: "Deadlines".
_CLIENT_TIMEOUTS = ("serverSelectionTimeoutMS", "connectTimeoutMS", "socketTimeoutMS")
#: pymongo's own client-wide operation timeout: refused, because ``timeout`` (seconds) is that setting here.
_PYMONGO_TIMEOUT = "timeoutms"
#: Redis's share of a deadline: one Redis command (connect included) may take at most this fraction of it (and
#: at most ``redis_socket_timeout``). A failed command marks Redis down and the rest of the operation skips it.
_REDIS_SHARE = 0.25
# A lock-holding write keeps this fraction of its deadline (at most 1 s) for deleting its lock afterwards.
_RELEASE_SHARE = 0.2
_NAMESPACE_EXISTS = 48

# Key locks of the soft-delete domains: see persist_mongo._operations (LOCK_COLLECTION) and docs/mongo.md.
#: A lock older than this belongs to a holder that died between taking and releasing it, and is broken.
#: A holder keeps a lock for one update (milliseconds); the lease only bounds the wait after a crash. A holder
#: with a longer deadline writes a longer lease (twice its deadline), so that no lock is broken while its
#: holder's update may still be running.
_LOCK_LEASE_MS = 10_000
_BAD_DB_CHARS = frozenset('/\\. "$*<>:|?\x00')
# (URL, database) pairs whose indexes this process has ensured: the start-up work is done once per process
# (upstream's waitForInit), not at every open; 16 createIndexes cost ~50-100 ms on FerretDB.
_ensured: set[tuple[str, str]] = set()
_ensured_lock = threading.Lock()


def _check_uri_options(url: str) -> None:
    """Refuse a URI option that pymongo does not validate; pymongo only warns of one and then ignores it.

    ``url`` is the URL without the backend's one option of its own (``timeout``); the pass-through list is
    pymongo's validated URI options (docs/mongo.md), compared without case as pymongo does.
    """
    known = {name.lower(): name for name in URI_OPTIONS_VALIDATOR_MAP}
    query = parse_options(url)
    if any(name.lower() == _PYMONGO_TIMEOUT for name in query):
        raise ConfigurationError(
            f"timeoutMS in {mask_url(url)!r}: give the deadline as timeout=<seconds> (the backend applies it to "
            "every operation with pymongo's own timeout; docs/mongo.md, Deadlines)"
        )
    unknown = sorted(name for name in query if name.lower() not in known)
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(mask_url(name) for name in unknown)} in {mask_url(url)!r}; the mongodb "
            f"backend's own option: timeout (seconds); passed to pymongo: {', '.join(sorted(known.values()))} "
            "(docs/mongo.md)"
        )


def database_of(url: str) -> str:
    """The database a ``mongodb://`` URL names in its path, or :data:`DEFAULT_DATABASE`."""
    path = urlsplit(url).path.lstrip("/")
    name = unquote(path) if path else DEFAULT_DATABASE
    if set(name) & _BAD_DB_CHARS or len(name.encode("utf-8")) > 63:
        raise ConfigurationError(
            f'bad MongoDB database name {name!r} in {mask_url(url)!r}: at most 63 bytes, none of / \\ . space " $ '
            "* < > : | ?"
        )
    return name


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _bounded(method: Callable[Concatenate[MongoBackend, _P], _T]) -> Callable[Concatenate[MongoBackend, _P], _T]:
    """Run ``method`` within the backend's deadline (nested calls share the outer, earlier one)."""

    @functools.wraps(method)
    def wrapper(self: MongoBackend, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with deadline(self._timeout):
            return method(self, *args, **kwargs)

    return wrapper


class MongoBackend(Backend):
    """Records in MongoDB (one ``<domain>-items`` collection per domain), copies of them cached in Redis.

    MongoDB is the source of truth; a read that Redis holds is one Redis round trip, never older than a write
    acknowledged before it began (docs/mongo.md, "The Redis value cache"). Without Redis (down,
    flushed, or ``redis_url="none"``) every operation works against MongoDB alone. Thread-safe: the
    MongoClient and redis-py's connection pool are. Ownership leases live in the ``persist-leases``
    collection, never in Redis.
    """

    capabilities = Capabilities(ownership=True, listing=True, deletion=True, atomic_units=True)

    def __init__(
        self,
        url: str,
        *,
        redis_url: str | None = None,
        redis_socket_timeout: float = 0.25,
        redis_retry_interval: float = 2.0,
        redis_ttl: float = 600.0,
        client_options: Mapping[str, Any] | None = None,
        timeout: float | str | None = None,
    ) -> None:
        """Build an unopened backend.

        Args:
            url: ``mongodb://[user:password@]host[:port][,host...]/database[?options]``.
            redis_url: the Redis value cache, e.g. ``redis://127.0.0.1:6379/0``; ``"none"`` runs without Redis;
                ``None`` resolves it like ``setup()`` does (``PERSIST_REDIS_URL``, then ``CC_REDIS_*``).
            redis_socket_timeout: seconds before a Redis command counts as failed (keep it short: a
                blackholed Redis must not stall the trading loop).
            redis_retry_interval: seconds between probes of Redis while it is down.
            redis_ttl: seconds a record's copy lives in Redis (it bounds Redis's memory; docs/mongo.md).
            client_options: extra keyword arguments for :class:`pymongo.MongoClient`.
            timeout: seconds within which every operation completes or raises ``BackendTimeoutError``
                (default 5; overrides the URL's ``timeout`` option). Redis gets at most a quarter of it.
        """
        if not all(value > 0 for value in (redis_socket_timeout, redis_retry_interval, redis_ttl)):
            raise ConfigurationError("redis_socket_timeout, redis_retry_interval and redis_ttl must be positive")
        check_credentials(url)
        self._raw_url = url
        self.url = mask_url(url)
        self.database = database_of(url)
        # ``timeout`` is ours: pymongo never sees it (it would warn of an unknown option and ignore it).
        self._client_url, in_url = split_timeout(url)
        _check_uri_options(self._client_url)
        if timeout is None:
            timeout = DEFAULT_TIMEOUT if in_url is None else parse_timeout(in_url, f"in {self.url!r}")
        self._timeout = parse_timeout(timeout, f"for {self.url}")
        if any(key.lower() == _PYMONGO_TIMEOUT for key in client_options or {}):
            raise ConfigurationError("client_options timeoutMS: give the deadline as timeout=<seconds> instead")
        given = {key.lower() for key in parse_options(self._client_url)} | {k.lower() for k in client_options or {}}
        self._client_options: dict[str, Any] = {
            name: max(1, round(self._timeout * 1000)) for name in _CLIENT_TIMEOUTS if name.lower() not in given
        }
        self._client_options.update(client_options or {})
        if not redis_url:
            redis_url = resolve_redis_url(None, os.environ)
        lease_ms = max(_LOCK_LEASE_MS, round(2_000 * self._timeout))
        cache: ValueCache | None = None
        if redis_url.strip().lower() not in DISABLED:
            check_credentials(redis_url)
            try:
                cache = ValueCache(
                    redis_url,
                    socket_timeout=min(redis_socket_timeout, _REDIS_SHARE * self._timeout),
                    retry_interval=redis_retry_interval,
                    ttl=redis_ttl,
                    lease_ms=lease_ms,
                )
            except ValueError as exc:  # redis-py's verdict on a malformed URL
                raise ConfigurationError(f"bad Redis URL {mask_url(redis_url)!r}: {mask_url(str(exc))}") from exc
        self._cache = cache
        #: What the asyncio face (AsyncMongoBackend) shares with this backend: all but the driver objects.
        self.settings = Settings(
            url=url,
            namespace=namespace_of(self.database),
            timeout=self._timeout,
            lock_lease_ms=lease_ms,
            release_reserve=min(1.0, _RELEASE_SHARE * self._timeout),
            cache=cache,
        )
        self._lock = threading.Lock()
        self._state: Handles | None = None

    @classmethod
    def from_url(cls, url: str, *, redis_url: str | None = None, **options: Any) -> MongoBackend:
        """Build from a ``mongodb://`` URL (the registry's factory); see :meth:`__init__` for the options."""
        return cls(url, redis_url=redis_url, **options)

    # ---------------------------------------------------------------------------------- introspection

    @property
    def timeout(self) -> float:
        """The deadline of every operation, in seconds (``timeout`` option; default 5)."""
        return self._timeout

    @property
    def client_options(self) -> dict[str, Any]:
        """The keyword arguments given to :class:`pymongo.MongoClient` besides the URL (a copy)."""
        return dict(self._client_options)

    @property
    def redis_socket_timeout(self) -> float | None:
        """Seconds a Redis command (or connect) may take before Redis counts as down; ``None`` without Redis."""
        return None if self._cache is None else self._cache.socket_timeout

    @property
    def redis_url(self) -> str | None:
        """The Redis URL of the value cache (password masked), or ``None`` when running without Redis."""
        return None if self._cache is None else self._cache.url

    @property
    def cache_stats(self) -> CacheStats:
        """Counters of the value cache: hits, misses, stores, outages, ... (see :class:`CacheStats`)."""
        if self._cache is None:
            return CacheStats(enabled=False, available=False)
        return self._cache.stats()

    # ---------------------------------------------------------------------------------- lifecycle

    @masks_driver_errors
    @_bounded
    def open(self) -> None:
        # docstring inherited
        # Another thread opening a frozen server holds the lock until its own deadline: wait no longer than ours.
        if not self._lock.acquire(timeout=max(remaining(), 0.0)):
            raise timed_out(self._raw_url, "opening", self._timeout, "another thread is still opening it")
        try:
            if self._state is not None:
                return
            try:
                client: MongoClient[dict[str, Any]] = MongoClient(self._client_url, **self._client_options)
            except DRIVER_ERRORS as exc:
                raise self._translate(exc, "opening") from exc
            try:
                client.admin.command("ping")  # fail fast (CONTRACTS.md 3.6)
                db = client[self.database]
                collections = {name: db[self.settings.layout(spec).collection] for name, spec in DOMAINS.items()}
                locks = db[LOCK_COLLECTION]
                if not _ensured_lock.acquire(timeout=max(remaining(), 0.0)):
                    raise timed_out(self._raw_url, "opening", self._timeout, "another backend is creating indexes")
                try:
                    if (self._client_url, self.database) not in _ensured:
                        self._create_indexes(db, collections, locks)
                        _ensured.add((self._client_url, self.database))
                finally:
                    _ensured_lock.release()
                redis = None if self._cache is None else self._cache.face
                state = Handles(client, collections, locks, db[LEASE_COLLECTION], redis, time.sleep)
                run(units.replay(self.settings, state))  # units whose writer died, before any write of ours
            except BaseException as exc:
                with contextlib.suppress(*DRIVER_ERRORS):
                    client.close()
                if isinstance(exc, DRIVER_ERRORS):
                    raise self._translate(exc, "opening") from exc
                raise
            self._state = state
        finally:
            self._lock.release()
        if self._cache is not None:  # a dead Redis is logged and counted here, never fatal (bounded by its timeout)
            run(self._cache.ping(state.redis))

    @masks_driver_errors
    @_bounded
    def ensure_indexes(self) -> None:
        """Create the unique index of every domain's collection and the lease collection now (idempotent).

        :meth:`open` does this once per process and database; call this after dropping the database
        under a running process, before writing again.
        """
        state = self._started()
        try:
            self._create_indexes(state.client[self.database], state.collections, state.locks)
        except DRIVER_ERRORS as exc:
            raise self._translate(exc, "creating indexes") from exc

    def _create_indexes(
        self,
        db: Database[dict[str, Any]],
        collections: Mapping[str, Collection[dict[str, Any]]],
        locks: Collection[dict[str, Any]],
    ) -> None:
        for name, collection in collections.items():
            layout = self.settings.layout(DOMAINS[name])
            collection.create_index(layout.index, unique=True, name=layout.index_name)
        locks.create_index("lock", unique=True, name=LOCK_INDEX)
        # The lease and unit journal collections need no index of their own (claims and journals rely on the
        # _id index every collection has). They are created here rather than by the first claim or unit, so
        # that neither costs a table creation (FerretDB) and the one-winner race of claims never depends on
        # concurrent implicit creation.
        for name in (LEASE_COLLECTION, units.JOURNAL_COLLECTION):
            try:
                db.command("create", name)
            except OperationFailure as exc:
                if exc.code != _NAMESPACE_EXISTS:
                    raise

    def close(self) -> None:
        # docstring inherited
        with self._lock:
            state, self._state = self._state, None
        if state is not None:
            with deadline(self._timeout):  # closing ends the server sessions, a command to a maybe frozen server
                state.client.close()
        if self._cache is not None:
            self._cache.close()

    def lease_log(self) -> MongoLeaseLog:
        # docstring inherited
        return MongoLeaseLog(self._lease_collection, self._raw_url, self._timeout)

    # ---------------------------------------------------------------------------------- plumbing

    def _translate(self, exc: Exception, action: str) -> PersistError:
        return translate(exc, self._raw_url, action, self._timeout)

    def _started(self) -> Handles:
        """The open state, opening the backend first if needed (a closed backend reopens on use)."""
        state = self._state
        if state is None:
            self.open()
            state = self._state
            if state is None:  # pragma: no cover - closed by another thread meanwhile
                raise ConfigurationError(f"{self.url} was closed while it was being used")
        return state

    def _lease_collection(self) -> Collection[dict[str, Any]]:
        leases: Collection[dict[str, Any]] = self._started().leases
        return leases

    @masks_driver_errors
    def _run(self, operation: Callable[..., Steps[_T]], *args: Any) -> _T:
        """Run one of :mod:`persist_mongo._operations` on this (sync) face, within the deadline."""
        with deadline(self._timeout):
            return run(operation(self.settings, self._started(), *args))

    # ---------------------------------------------------------------------------------- operations
    # docstrings inherited from Backend; the bodies are persist_mongo._operations, shared with AsyncMongoBackend

    def get(self, domain: DomainSpec, key: Key) -> Record | None:
        return self._run(operations.get, domain, key)

    def scan(
        self,
        domain: DomainSpec,
        context: Key,
        start: ItemKey | None = None,
        stop: ItemKey | None = None,
    ) -> list[tuple[ItemKey, Record]]:
        return self._run(operations.scan, domain, context, start, stop)

    def read_window(
        self, domain: DomainSpec, context: Key, start: int, stop: int, step: int
    ) -> list[tuple[ItemKey, Record]]:
        return self._run(operations.read_window, domain, context, start, stop, step)

    def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        self._run(operations.put, domain, key, record)

    def get_versioned(self, domain: DomainSpec, key: Key) -> tuple[Record, int] | None:
        """:meth:`get`, with the version of the record's document: how many times it was written (the order the
        Redis cache keeps; 0 for a document written before versions existed)."""
        return self._run(operations.get_versioned, domain, key)

    def put_versioned(self, domain: DomainSpec, key: Key, record: Record) -> int:
        """:meth:`put`, returning the version the write gave the record's document."""
        return self._run(operations.put, domain, key, record)

    def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        self._run(operations.put_many, domain, items)

    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        return self._run(operations.insert_many, domain, items)

    def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        self._run(operations.mark_removed, domain, key)

    def list_contexts(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, int]]:
        return self._run(operations.list_contexts, domain, after, limit)

    def list_records(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, Record]]:
        return self._run(operations.list_records, domain, after, limit)

    def delete_records(self, domain: DomainSpec, keys: Sequence[Key]) -> int:
        return self._run(operations.delete_records, domain, keys)

    def apply_unit(self, writes: Sequence[Write]) -> None:
        # docstring inherited; one journal document commits the unit (persist_mongo._units, docs/mongo.md)
        self._run(units.apply_unit, writes)
