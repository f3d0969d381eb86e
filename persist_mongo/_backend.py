"""The MongoDB backend with its Redis id cache (CONTRACTS.md 6.4). Design notes: docs/mongo.md."""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any
from urllib.parse import unquote, urlsplit

from bson.objectid import ObjectId
from pymongo import MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError

from persist_core.backend import Backend, Capabilities, ItemKey, Key, Record
from persist_core.config import resolve_redis_url
from persist_core.domains import DOMAINS, DomainSpec, FieldType
from persist_core.errors import ConfigurationError
from persist_core.urls import check_credentials, mask_url, parse_options
from persist_mongo._cache import DISABLED, CacheStats, IdCache, cache_key, namespace_of
from persist_mongo._codec import REMOVED, UPDATED, Layout
from persist_mongo._errors import translate
from persist_mongo._leases import LEASE_COLLECTION, MongoLeaseLog

__all__ = ["DEFAULT_DATABASE", "MongoBackend"]

#: The database used when the URL names none (``mongodb://host:27017``).
DEFAULT_DATABASE = "backtest-persist"
#: Client options we set unless the URL sets them: fail within seconds instead of pymongo's 30 s, so a
#: trading loop sees BackendUnavailableError while the server is down (docs/mongo.md, "Outages").
_CLIENT_DEFAULTS: Mapping[str, int] = {
    "serverSelectionTimeoutMS": 5_000,
    "connectTimeoutMS": 5_000,
    "socketTimeoutMS": 30_000,
}
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
_BAD_DB_CHARS = frozenset('/\\. "$*<>:|?\x00')
_first = itemgetter(0)
# (URL, database) pairs whose indexes this process has ensured: the start-up work is done once per process
# (upstream's waitForInit), not at every open; 16 createIndexes cost ~50-100 ms on FerretDB.
_ensured: set[tuple[str, str]] = set()
_ensured_lock = threading.Lock()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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


class _Open:
    """What an opened backend holds: the client, the collections by domain name and the lease collection."""

    __slots__ = ("client", "collections", "leases")

    def __init__(
        self,
        client: MongoClient[dict[str, Any]],
        collections: dict[str, Collection[dict[str, Any]]],
        leases: Collection[dict[str, Any]],
    ):
        self.client = client
        self.collections = collections
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
        """
        if redis_socket_timeout <= 0 or redis_retry_interval <= 0:
            raise ConfigurationError("redis_socket_timeout and redis_retry_interval must be positive")
        check_credentials(url)
        self._raw_url = url
        self.url = mask_url(url)
        self.database = database_of(url)
        self._namespace = namespace_of(self.database)
        given = {key.lower() for key in parse_options(url)} | {key.lower() for key in client_options or {}}
        self._client_options: dict[str, Any] = {k: v for k, v in _CLIENT_DEFAULTS.items() if k.lower() not in given}
        self._client_options.update(client_options or {})
        if not redis_url:
            redis_url = resolve_redis_url(None, os.environ)
        self._cache: IdCache | None = None
        if redis_url.strip().lower() not in DISABLED:
            check_credentials(redis_url)
            try:
                self._cache = IdCache(
                    redis_url, socket_timeout=redis_socket_timeout, retry_interval=redis_retry_interval
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

    def open(self) -> None:
        # docstring inherited
        with self._lock:
            if self._state is not None:
                return
            try:
                client: MongoClient[dict[str, Any]] = MongoClient(self._raw_url, **self._client_options)
            except PyMongoError as exc:
                raise translate(exc, self._raw_url, "opening") from exc
            try:
                client.admin.command("ping")  # fail fast (CONTRACTS.md 3.6)
                db = client[self.database]
                collections = {name: db[self._layout(spec).collection] for name, spec in DOMAINS.items()}
                with _ensured_lock:
                    if (self._raw_url, self.database) not in _ensured:
                        self._create_indexes(db, collections)
                        _ensured.add((self._raw_url, self.database))
            except PyMongoError as exc:
                client.close()
                raise translate(exc, self._raw_url, "opening") from exc
            self._state = _Open(client, collections, db[LEASE_COLLECTION])
        if self._cache is not None:
            self._cache.ping()  # a dead Redis is logged and counted here, never fatal

    def ensure_indexes(self) -> None:
        """Create the unique index of every domain's collection and the lease collection now (idempotent).

        :meth:`open` does this once per process and database; call this after dropping the database
        under a running process, before writing again.
        """
        state = self._state
        if state is None:
            self.open()
            state = self._state
        if state is not None:
            try:
                self._create_indexes(state.client[self.database], state.collections)
            except PyMongoError as exc:
                raise translate(exc, self._raw_url, "creating indexes") from exc

    def _create_indexes(
        self, db: Database[dict[str, Any]], collections: Mapping[str, Collection[dict[str, Any]]]
    ) -> None:
        for name, collection in collections.items():
            layout = self._layout(DOMAINS[name])
            collection.create_index(layout.index, unique=True, name=layout.index_name)
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
            state.client.close()
        if self._cache is not None:
            self._cache.close()

    def lease_log(self) -> MongoLeaseLog:
        # docstring inherited
        return MongoLeaseLog(self._lease_collection, self._raw_url)

    # ---------------------------------------------------------------------------------- plumbing

    def _lease_collection(self) -> Collection[dict[str, Any]]:
        state = self._state
        if state is None:
            self.open()
            state = self._state
            if state is None:  # pragma: no cover - closed by another thread meanwhile
                raise ConfigurationError(f"{self.url} was closed while it was being used")
        return state.leases

    def _layout(self, domain: DomainSpec) -> Layout:
        layout = self._layouts.get(domain.name)
        if layout is None or layout.spec is not domain:
            layout = self._layouts[domain.name] = Layout(domain)
        return layout

    def _collection(self, domain: DomainSpec) -> Collection[dict[str, Any]]:
        state = self._state
        if state is None:
            self.open()
            state = self._state
            if state is None:  # pragma: no cover - closed by another thread meanwhile
                raise ConfigurationError(f"{self.url} was closed while it was being used")
        collection = state.collections.get(domain.name)
        if collection is None:
            raise ConfigurationError(f"{domain.name!r} is not a domain of this backend")
        return collection

    # ---------------------------------------------------------------------------------- reads

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
        except PyMongoError as exc:
            raise translate(exc, self._raw_url, f"reading {domain.name}") from exc
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
        except PyMongoError as exc:
            raise translate(exc, self._raw_url, f"scanning {domain.name}") from exc
        if domain.item is not None and domain.item.type is FieldType.STR:
            # MongoDB (no collation) and FerretDB on SQLite or a C-collated PostgreSQL order strings by
            # UTF-8 bytes, which is Python's code-point order. A server configured otherwise (a collection
            # collation, FerretDB pushing the sort down to a locale-collated PostgreSQL) would not; this
            # sort costs n comparisons on already sorted rows and makes the contract hold regardless.
            rows.sort(key=_first)
        return rows

    # ---------------------------------------------------------------------------------- writes

    def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        # docstring inherited
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
                    raise translate(exc, self._raw_url, f"writing {domain.name}") from exc
            except PyMongoError as exc:
                raise translate(exc, self._raw_url, f"writing {domain.name}") from exc
        if self._cache is not None and doc is not None:
            self._cache.set(cache_key(self._namespace, domain, key), doc["_id"])

    def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        # docstring inherited
        # One find_one_and_update per item, as upstream does. A batched bulk_write of upserts is not used:
        # on FerretDB v1 a duplicate-key race inside such a batch stops the batch and returns a reply that
        # pymongo cannot parse (KeyError 'nModified'), which would lose the rest of the batch.
        for key, record in items:
            self.put(domain, key, record)

    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        # docstring inherited
        if not items:
            return 0
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
                raise translate(exc, self._raw_url, f"inserting {domain.name}") from exc
            lost = {e["index"] for e in errors}
            inserted = int(details.get("nInserted", len(docs) - len(lost)))
        except PyMongoError as exc:
            raise translate(exc, self._raw_url, f"inserting {domain.name}") from exc
        if self._cache is not None and inserted == len(docs) - len(lost):
            self._cache.set_many(
                (cache_key(self._namespace, domain, key), doc["_id"])
                for index, ((key, _), doc) in enumerate(zip(items, docs, strict=True))
                if index not in lost
            )
        return inserted

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
        except PyMongoError as exc:
            raise translate(exc, self._raw_url, f"inserting {domain.name}") from exc
        if doc is None:  # pragma: no cover - an upsert returning AFTER always returns the document
            return 0
        if self._cache is not None:
            self._cache.set(cache_key(self._namespace, domain, key), doc["_id"])
        # Our _id came back only if this call inserted the document; otherwise it is the first writer's.
        return 1 if doc["_id"] == object_id else 0

    def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        # docstring inherited
        if not domain.soft_delete:
            raise TypeError(f"the {domain.name} domain has no soft delete")
        collection = self._collection(domain)
        layout = self._layout(domain)
        try:
            doc = collection.find_one_and_update(
                layout.key_filter(key),
                {"$set": {REMOVED: True, UPDATED: _utcnow()}},
                return_document=ReturnDocument.AFTER,
            )
        except PyMongoError as exc:
            raise translate(exc, self._raw_url, f"removing from {domain.name}") from exc
        if doc is not None and self._cache is not None:
            self._cache.set(cache_key(self._namespace, domain, key), doc["_id"])
