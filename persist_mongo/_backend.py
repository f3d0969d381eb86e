"""The MongoDB backend with its Redis id cache (CONTRACTS.md 6.4). Design notes: docs/mongo.md."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

import pymongo
from bson.int64 import Int64
from bson.objectid import ObjectId
from pymongo import MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.common import URI_OPTIONS_VALIDATOR_MAP
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError

from persist_core.backend import Backend, Capabilities, ItemKey, Key, Record
from persist_core.config import resolve_redis_url
from persist_core.domains import DOMAINS, DomainSpec, FieldType
from persist_core.errors import ConfigurationError, InvalidValueError, PersistError
from persist_core.urls import check_credentials, mask_url, masks_driver_errors, parse_options
from persist_mongo._cache import DISABLED, CacheStats, IdCache, cache_key, namespace_of
from persist_mongo._codec import REMOVED, UPDATED, Layout
from persist_mongo._deadline import DEFAULT_TIMEOUT, deadline, parse_timeout, remaining, split_timeout
from persist_mongo._errors import DRIVER_ERRORS, timed_out, translate
from persist_mongo._leases import LEASE_COLLECTION, MongoLeaseLog

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
_DUPLICATE_KEY = 11000
_NAMESPACE_EXISTS = 48
# Two upserts of one new key can both miss the document and both insert: the unique index lets one in
# and the other gets DuplicateKeyError (MongoDB >= 4.2 retries that itself; FerretDB does not). The
# loser's retry then matches the winner's document and updates it. One retry suffices; three tolerate
# a burst of new writers.
_UPSERT_ATTEMPTS = 3
# A scan returns everything it finds; a large first batch (the server still caps it at 16 MiB) spares the
# getMore round trips that the default first batch of 101 documents would cost.
_SCAN_BATCH = 10_000
# MongoDB's document limit (maxBsonObjectSize, 16 MiB on every server version since 1.8) less room for the
# key fields, times and field names around the payload (a few hundred bytes at most). A payload above it is
# refused before anything of its batch is sent: the server would refuse the document (or pymongo the
# command) with a batch already half-inserted, and FerretDB would even store it.
_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024 - 16 * 1024

# Key locks of the soft-delete domains (docs/mongo.md, "Atomicity on FerretDB"): FerretDB 1.24 runs every
# update as a SELECT, then an UPDATE of the whole document by _id, so a remove ($set removed) racing a write
# wrote the payload it had read back over the write (1,446 older payloads in a 20 s race). Its one atomic
# test-and-set is an insert into a unique index: a lock is a document of this collection, taken by inserting
# it and released by deleting it by its own _id.
LOCK_COLLECTION = "persist-locks"
_LOCK_INDEX = "persist_locks_uq"
#: A lock older than this belongs to a holder that died between taking and releasing it, and is broken.
#: A holder keeps a lock for one update (milliseconds); the lease only bounds the wait after a crash. A holder
#: with a longer deadline writes a longer lease (twice its deadline), so that no lock is broken while its
#: holder's update may still be running.
_LOCK_LEASE_MS = 10_000
_LOCK_BACKOFF_MAX = 0.02
_BAD_DB_CHARS = frozenset('/\\. "$*<>:|?\x00')
_first = itemgetter(0)
# (URL, database) pairs whose indexes this process has ensured: the start-up work is done once per process
# (upstream's waitForInit), not at every open; 16 createIndexes cost ~50-100 ms on FerretDB.
_ensured: set[tuple[str, str]] = set()
_ensured_lock = threading.Lock()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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


def _check_size(domain: DomainSpec, record: Record) -> None:
    """Raise :class:`InvalidValueError` if ``record``'s payload cannot fit in one MongoDB document."""
    payload = record.payload
    # len() counts code points, each at most 4 bytes of UTF-8: only a payload near the limit is encoded.
    if len(payload) * 4 > _MAX_PAYLOAD_BYTES and len(payload.encode("utf-8")) > _MAX_PAYLOAD_BYTES:
        raise InvalidValueError(
            "$", f"a {domain.name} value over {_MAX_PAYLOAD_BYTES} bytes does not fit in one MongoDB document"
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


class _Open:
    """What an opened backend holds: the client, the collections by domain name and the lease collection."""

    __slots__ = ("client", "collections", "leases", "locks")

    def __init__(
        self,
        client: MongoClient[dict[str, Any]],
        collections: dict[str, Collection[dict[str, Any]]],
        locks: Collection[dict[str, Any]],
        leases: Collection[dict[str, Any]],
    ):
        self.client = client
        self.collections = collections
        self.locks = locks
        self.leases = leases


class MongoBackend(Backend):
    """Records in MongoDB (one ``<domain>-items`` collection per domain), ``_id`` s cached in Redis.

    MongoDB is the source of truth; Redis only spares the indexed query of a read. Without Redis (down,
    flushed, or ``redis_url="none"``) every operation works against MongoDB alone. Thread-safe: the
    MongoClient and redis-py's connection pool are. Ownership leases live in the ``persist-leases``
    collection, never in Redis.
    """

    capabilities = Capabilities(ownership=True)

    def __init__(
        self,
        url: str,
        *,
        redis_url: str | None = None,
        redis_socket_timeout: float = 0.25,
        redis_retry_interval: float = 2.0,
        client_options: Mapping[str, Any] | None = None,
        timeout: float | str | None = None,
    ) -> None:
        """Build an unopened backend.

        Args:
            url: ``mongodb://[user:password@]host[:port][,host...]/database[?options]``.
            redis_url: the Redis id cache, e.g. ``redis://127.0.0.1:6379/0``; ``"none"`` runs without Redis;
                ``None`` resolves it like ``setup()`` does (``PERSIST_REDIS_URL``, then ``CC_REDIS_*``).
            redis_socket_timeout: seconds before a Redis command counts as failed (keep it short: a
                blackholed Redis must not stall the trading loop).
            redis_retry_interval: seconds between probes of Redis while it is down.
            client_options: extra keyword arguments for :class:`pymongo.MongoClient`.
            timeout: seconds within which every operation completes or raises ``BackendTimeoutError``
                (default 5; overrides the URL's ``timeout`` option). Redis gets at most a quarter of it.
        """
        if redis_socket_timeout <= 0 or redis_retry_interval <= 0:
            raise ConfigurationError("redis_socket_timeout and redis_retry_interval must be positive")
        check_credentials(url)
        self._raw_url = url
        self.url = mask_url(url)
        self.database = database_of(url)
        self._namespace = namespace_of(self.database)
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
        self._lock_lease_ms = max(_LOCK_LEASE_MS, round(2_000 * self._timeout))
        self._release_reserve = min(1.0, _RELEASE_SHARE * self._timeout)
        if not redis_url:
            redis_url = resolve_redis_url(None, os.environ)
        self._cache: IdCache | None = None
        if redis_url.strip().lower() not in DISABLED:
            check_credentials(redis_url)
            try:
                self._cache = IdCache(
                    redis_url,
                    socket_timeout=min(redis_socket_timeout, _REDIS_SHARE * self._timeout),
                    retry_interval=redis_retry_interval,
                )
            except ValueError as exc:  # redis-py's verdict on a malformed URL
                raise ConfigurationError(f"bad Redis URL {mask_url(redis_url)!r}: {mask_url(str(exc))}") from exc
        self._layouts: dict[str, Layout] = {}
        self._lock = threading.Lock()
        self._state: _Open | None = None

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
        """The Redis URL of the id cache (password masked), or ``None`` when running without Redis."""
        return None if self._cache is None else self._cache.url

    @property
    def cache_stats(self) -> CacheStats:
        """Counters of the id cache: hits, misses, stale ids, outages, ... (see :class:`CacheStats`)."""
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
                collections = {name: db[self._layout(spec).collection] for name, spec in DOMAINS.items()}
                locks = db[LOCK_COLLECTION]
                if not _ensured_lock.acquire(timeout=max(remaining(), 0.0)):
                    raise timed_out(self._raw_url, "opening", self._timeout, "another backend is creating indexes")
                try:
                    if (self._client_url, self.database) not in _ensured:
                        self._create_indexes(db, collections, locks)
                        _ensured.add((self._client_url, self.database))
                finally:
                    _ensured_lock.release()
            except BaseException as exc:
                with contextlib.suppress(*DRIVER_ERRORS):
                    client.close()
                if isinstance(exc, DRIVER_ERRORS):
                    raise self._translate(exc, "opening") from exc
                raise
            self._state = _Open(client, collections, locks, db[LEASE_COLLECTION])
        finally:
            self._lock.release()
        if self._cache is not None:
            self._cache.ping()  # a dead Redis is logged and counted here, never fatal (bounded by its timeout)

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
            layout = self._layout(DOMAINS[name])
            collection.create_index(layout.index, unique=True, name=layout.index_name)
        locks.create_index("lock", unique=True, name=_LOCK_INDEX)
        # The lease collection needs no index of its own (claims rely on the _id index every collection
        # has). It is created here rather than by the first claim, so that a claim costs no table creation
        # (FerretDB) and the one-winner race never depends on concurrent implicit creation.
        try:
            db.command("create", LEASE_COLLECTION)
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

    def _started(self) -> _Open:
        """The open state, opening the backend first if needed (a closed backend reopens on use)."""
        state = self._state
        if state is None:
            self.open()
            state = self._state
            if state is None:  # pragma: no cover - closed by another thread meanwhile
                raise ConfigurationError(f"{self.url} was closed while it was being used")
        return state

    def _lease_collection(self) -> Collection[dict[str, Any]]:
        return self._started().leases

    def _layout(self, domain: DomainSpec) -> Layout:
        layout = self._layouts.get(domain.name)
        if layout is None or layout.spec is not domain:
            layout = self._layouts[domain.name] = Layout(domain)
        return layout

    def _collection(self, domain: DomainSpec) -> Collection[dict[str, Any]]:
        state = self._started()
        collection = state.collections.get(domain.name)
        if collection is None:
            raise ConfigurationError(f"{domain.name!r} is not a domain of this backend")
        return collection

    # ---------------------------------------------------------------------------------- reads

    @masks_driver_errors
    @_bounded
    def get(self, domain: DomainSpec, key: Key) -> Record | None:
        # docstring inherited
        collection = self._collection(domain)
        layout = self._layout(domain)
        cache = self._cache
        ckey = ""
        object_id = None
        try:
            if cache is not None:
                ckey = cache_key(self._namespace, domain, key)
                object_id = cache.get(ckey)
                if object_id is not None:
                    doc = collection.find_one({"_id": object_id})
                    # The cached id must lead to this very key's document: a flushed-and-refilled or
                    # shared Redis, or a dropped and recreated database, can leave ids of other documents.
                    if doc is not None and layout.matches(doc, key):
                        cache.hit()
                        return layout.record(doc)
                    cache.stale()
            doc = collection.find_one(layout.key_filter(key))
        except DRIVER_ERRORS as exc:
            raise self._translate(exc, f"reading {domain.name}") from exc
        if doc is None:
            if object_id is not None and cache is not None:
                cache.delete(ckey)  # a stale id of a key that has no document: do not follow it again
            return None
        if cache is not None:
            cache.set(ckey, doc["_id"])
        return layout.record(doc)

    def scan(
        self,
        domain: DomainSpec,
        context: Key,
        start: ItemKey | None = None,
        stop: ItemKey | None = None,
    ) -> list[tuple[ItemKey, Record]]:
        # docstring inherited
        layout = self._layout(domain)
        return self._find(domain, layout, layout.scan_filter(context, start, stop), batch_size=_SCAN_BATCH)

    def read_window(
        self, domain: DomainSpec, context: Key, start: int, stop: int, step: int
    ) -> list[tuple[ItemKey, Record]]:
        # docstring inherited
        layout = self._layout(domain)
        # One range query; a first batch large enough for the whole window keeps it one round trip.
        expected = max(1, -(-(stop - start) // step))
        rows = self._find(domain, layout, layout.scan_filter(context, start, stop), batch_size=expected + 1)
        return [(item, record) for item, record in rows if (item - start) % step == 0]

    @masks_driver_errors
    @_bounded
    def _find(
        self, domain: DomainSpec, layout: Layout, query: dict[str, Any], *, batch_size: int
    ) -> list[tuple[ItemKey, Record]]:
        collection = self._collection(domain)
        item_field = layout.item_field
        if item_field is None:
            raise TypeError(f"the {domain.name} domain has no item key to scan")
        try:
            cursor = collection.find(query, layout.scan_projection, batch_size=batch_size).sort(item_field, 1)
            rows = [(layout.item_of(doc), layout.record(doc)) for doc in cursor]
        except DRIVER_ERRORS as exc:
            raise self._translate(exc, f"scanning {domain.name}") from exc
        if domain.item is not None and domain.item.type is FieldType.STR:
            # MongoDB (no collation) and FerretDB on SQLite or a C-collated PostgreSQL order strings by
            # UTF-8 bytes, which is Python's code-point order. A server configured otherwise (a collection
            # collation, FerretDB pushing the sort down to a locale-collated PostgreSQL) would not; this
            # sort costs n comparisons on already sorted rows and makes the contract hold regardless.
            rows.sort(key=_first)
        return rows

    # ---------------------------------------------------------------------------------- writes

    @masks_driver_errors
    @_bounded
    def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        # docstring inherited
        _check_size(domain, record)
        if domain.soft_delete:
            # Serialised with mark_removed of the key, whose update is a read-modify-write on FerretDB.
            with self._key_lock(domain, key, f"writing {domain.name}"):
                self._upsert(domain, key, record)
        else:
            # A full $set of every stored field is safe without a lock even on FerretDB: the document it
            # leaves does not depend on what the server read first (docs/mongo.md, "Atomicity on FerretDB").
            self._upsert(domain, key, record)

    def _upsert(self, domain: DomainSpec, key: Key, record: Record) -> None:
        collection = self._collection(domain)
        layout = self._layout(domain)
        query = layout.key_filter(key)
        update = layout.upsert(record, _utcnow())
        for attempt in range(_UPSERT_ATTEMPTS):
            try:
                doc = collection.find_one_and_update(query, update, upsert=True, return_document=ReturnDocument.AFTER)
                break
            except DuplicateKeyError as exc:  # a concurrent upsert inserted the key first: update it now
                if attempt + 1 == _UPSERT_ATTEMPTS:
                    raise self._translate(exc, f"writing {domain.name}") from exc
            except DRIVER_ERRORS as exc:
                raise self._translate(exc, f"writing {domain.name}") from exc
        if self._cache is not None and doc is not None:
            self._cache.set(cache_key(self._namespace, domain, key), doc["_id"])

    @_bounded
    def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        # docstring inherited
        # One find_one_and_update per item, as upstream does. A batched bulk_write of upserts is not used:
        # on FerretDB v1 a duplicate-key race inside such a batch stops the batch and returns a reply that
        # pymongo cannot parse (KeyError 'nModified'), which would lose the rest of the batch.
        for _, record in items:
            _check_size(domain, record)  # the whole batch first: nothing is written if one item is too large
        for key, record in items:
            self.put(domain, key, record)

    @masks_driver_errors
    @_bounded
    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        # docstring inherited
        if not items:
            return 0
        for _, record in items:
            _check_size(domain, record)
        if len(items) == 1:
            return self._insert_one(domain, *items[0])
        collection = self._collection(domain)
        layout = self._layout(domain)
        now = _utcnow()
        docs = [layout.document(key, record, now, ObjectId()) for key, record in items]
        lost: set[int] = set()
        try:
            # ordered=False: every new key is inserted even when others exist; the unique index makes each
            # insert first-write-wins, between processes too, and reports the existing keys as code 11000.
            collection.insert_many(docs, ordered=False)
            inserted = len(docs)
        except BulkWriteError as exc:
            details = exc.details
            errors = details.get("writeErrors", [])
            if details.get("writeConcernErrors") or any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise self._translate(exc, f"inserting {domain.name}") from exc
            lost = {e["index"] for e in errors}
            inserted = int(details.get("nInserted", len(docs) - len(lost)))
        except DRIVER_ERRORS as exc:
            raise self._translate(exc, f"inserting {domain.name}") from exc
        if self._cache is not None and inserted == len(docs) - len(lost):
            self._cache.set_many(
                (cache_key(self._namespace, domain, key), doc["_id"])
                for index, ((key, _), doc) in enumerate(zip(items, docs, strict=True))
                if index not in lost
            )
        return inserted

    @masks_driver_errors
    def _insert_one(self, domain: DomainSpec, key: Key, record: Record) -> int:
        collection = self._collection(domain)
        layout = self._layout(domain)
        object_id = ObjectId()
        try:
            doc = collection.find_one_and_update(
                layout.key_filter(key),
                layout.insert_only(record, _utcnow(), object_id),
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return 0  # a concurrent writer inserted the key between our lookup and our insert: it won
        except DRIVER_ERRORS as exc:
            raise self._translate(exc, f"inserting {domain.name}") from exc
        if doc is None:  # pragma: no cover - an upsert returning AFTER always returns the document
            return 0
        if self._cache is not None:
            self._cache.set(cache_key(self._namespace, domain, key), doc["_id"])
        # Our _id came back only if this call inserted the document; otherwise it is the first writer's.
        return 1 if doc["_id"] == object_id else 0

    @masks_driver_errors
    @_bounded
    def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        # docstring inherited
        if not domain.soft_delete:
            raise TypeError(f"the {domain.name} domain has no soft delete")
        collection = self._collection(domain)
        layout = self._layout(domain)
        # Under the key's lock: on FerretDB this update rewrites the whole document as the server read it,
        # payload included, and would undo a put that landed in between (docs/mongo.md).
        with self._key_lock(domain, key, f"removing from {domain.name}"):
            try:
                doc = collection.find_one_and_update(
                    layout.key_filter(key),
                    {"$set": {REMOVED: True, UPDATED: _utcnow()}},
                    return_document=ReturnDocument.AFTER,
                )
            except DRIVER_ERRORS as exc:
                raise self._translate(exc, f"removing from {domain.name}") from exc
        if doc is not None and self._cache is not None:
            self._cache.set(cache_key(self._namespace, domain, key), doc["_id"])

    # ---------------------------------------------------------------------------------- key locks

    @contextlib.contextmanager
    def _key_lock(self, domain: DomainSpec, key: Key, what: str) -> Iterator[None]:
        """Hold the lock of one record's key for the ``with`` block (soft-delete domains only).

        Taking it inserts ``{lock: <key>, expires}`` into the unique index of :data:`LOCK_COLLECTION`; a
        duplicate key means another holder, and the caller waits (0.5 ms, doubling to 20 ms) until the
        operation's deadline, then raises :class:`BackendTimeoutError`. A lock past its lease belongs to a
        holder that died and is deleted by its ``_id``, so that only that very lock goes. The block runs
        with a part of the deadline kept back for the release, which deletes the lock by its ``_id``; if
        that fails, the lease frees the key.
        """
        locks = self._started().locks
        name = cache_key(self._namespace, domain, key)
        lock_id = ObjectId()
        delay = 0.0005
        lease_ms = self._lock_lease_ms
        held_by = ""  # set once another writer was seen holding the lock
        try:
            while True:
                now_ms = time.time_ns() // 1_000_000
                try:
                    locks.insert_one({"_id": lock_id, "lock": name, "expires": Int64(now_ms + lease_ms)})
                    break
                except DuplicateKeyError:
                    holder = locks.find_one({"lock": name})
                    if holder is None:
                        continue  # released meanwhile
                    expires = holder.get("expires")
                    if not isinstance(expires, int) or expires < now_ms:
                        log.warning("breaking the expired lock of %s (a writer died holding it)", name)
                        locks.delete_one({"_id": holder["_id"]})
                        continue
                    held_by = f"the key's lock is held by another writer (lock {name!r}, lease until {expires} ms)"
                left = remaining()
                if left <= delay:  # the holder will not release it in time (its lease ends later)
                    time.sleep(max(left, 0.0))
                    raise timed_out(self._raw_url, what, self._timeout, held_by)
                time.sleep(delay)
                delay = min(delay * 2, _LOCK_BACKOFF_MAX)
        except DRIVER_ERRORS as exc:
            if held_by and isinstance(exc, PyMongoError) and exc.timeout:  # the deadline ran out in a retry
                raise timed_out(self._raw_url, what, self._timeout, f"{held_by}; {type(exc).__name__}") from exc
            raise self._translate(exc, what) from exc
        try:
            # Keep part of the deadline for the release: a lock left behind blocks the key until its lease ends.
            budget = remaining() - self._release_reserve
            if budget <= 0:
                raise timed_out(self._raw_url, what, self._timeout, "no time left after taking the key's lock")
            with pymongo.timeout(budget):
                yield
        finally:
            try:
                locks.delete_one({"_id": lock_id})
            except DRIVER_ERRORS as exc:  # the lease frees the key; the operation itself has its own verdict
                reason = type(exc).__name__
                log.warning("could not release the lock of %s (%s); it expires in %d s", name, reason, lease_ms // 1000)
