"""The Mongo backend's operations, written once for its sync and asyncio faces (issue 10).

Each operation is a generator (:mod:`persist_mongo._steps`) over the driver objects of one face
(:class:`Handles`): the queries and documents (:class:`~persist_mongo._codec.Layout`), the Redis value cache
(:mod:`persist_mongo._cache`), the key locks of the soft-delete domains, first-write-wins inserts and the
translation of driver errors (:func:`persist_mongo._errors.translate`) are the same on both faces.
:class:`~persist_mongo.MongoBackend` runs them on pymongo's ``MongoClient`` and redis-py,
:class:`~persist_mongo.AsyncMongoBackend` on ``AsyncMongoClient`` and ``redis.asyncio``. Design notes:
docs/mongo.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import pymongo
from bson.int64 import Int64
from bson.objectid import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from persist_core.backend import PAGE_SIZE, ContextTally, ItemKey, Key, Record
from persist_core.domains import DomainSpec, FieldType
from persist_core.errors import ConfigurationError, InvalidValueError, PersistError
from persist_core.ownership import ProcessIdentity, this_process
from persist_mongo._cache import ValueCache, cache_key
from persist_mongo._codec import BUMP, REMOVED, UPDATED, Layout
from persist_mongo._deadline import remaining
from persist_mongo._errors import DRIVER_ERRORS, timed_out, translate
from persist_mongo._steps import Steps

__all__ = ["LOCK_COLLECTION", "LOCK_INDEX", "SCAN_BATCH", "Handles", "Settings"]

log = logging.getLogger("persist.mongo")

_DUPLICATE_KEY = 11000
# Two upserts of one new key can both miss the document and both insert: the unique index lets one in
# and the other gets DuplicateKeyError (MongoDB >= 4.2 retries that itself; FerretDB does not). The
# loser's retry then matches the winner's document and updates it. One retry suffices; three tolerate
# a burst of new writers.
_UPSERT_ATTEMPTS = 3
#: A scan returns everything it finds; a large first batch (the server still caps it at 16 MiB) spares the
#: getMore round trips that the default first batch of 101 documents would cost.
SCAN_BATCH = 10_000
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
LOCK_INDEX = "persist_locks_uq"
_LOCK_BACKOFF_MAX = 0.02
_first = itemgetter(0)
_identity: ProcessIdentity | None = None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_size(domain: DomainSpec, record: Record) -> None:
    """Raise :class:`InvalidValueError` if ``record``'s payload cannot fit in one MongoDB document."""
    payload = record.payload
    # len() counts code points, each at most 4 bytes of UTF-8: only a payload near the limit is encoded.
    if len(payload) * 4 > _MAX_PAYLOAD_BYTES and len(payload.encode("utf-8")) > _MAX_PAYLOAD_BYTES:
        raise InvalidValueError(
            "$", f"a {domain.name} value over {_MAX_PAYLOAD_BYTES} bytes does not fit in one MongoDB document"
        )


@dataclass(slots=True)
class Settings:
    """What both faces of one backend share: fixed when the sync backend is built.

    ``url`` is the raw URL (for :func:`translate`, which masks it); ``lock_lease_ms`` how long a key lock
    stands before another writer may break it (twice the deadline, at least 10 s); ``release_reserve`` the
    seconds of a locked write's deadline kept back for releasing its lock.
    """

    url: str
    namespace: str
    timeout: float
    lock_lease_ms: int
    release_reserve: float
    cache: ValueCache | None
    layouts: dict[str, Layout] = field(default_factory=dict)

    def layout(self, domain: DomainSpec) -> Layout:
        """The document layout of ``domain`` (made once per domain spec)."""
        layout = self.layouts.get(domain.name)
        if layout is None or layout.spec is not domain:
            layout = self.layouts[domain.name] = Layout(domain)
        return layout

    def translate(self, exc: Exception, action: str) -> PersistError:
        """The persist error of a driver error raised while doing ``action``."""
        return translate(exc, self.url, action, self.timeout)


class Handles:
    """The driver objects of one opened backend on one face: pymongo's sync or async client and collections,
    the cache's Redis client and scripts (a :class:`~persist_mongo._cache.Face`; ``None`` without Redis) and the
    face's ``sleep``."""

    __slots__ = ("client", "collections", "leases", "locks", "redis", "sleep")

    def __init__(
        self,
        client: Any,
        collections: Mapping[str, Any],
        locks: Any,
        leases: Any,
        redis: Any,
        sleep: Callable[[float], Any],
    ) -> None:
        self.client = client
        self.collections = collections
        self.locks = locks
        self.leases = leases
        self.redis = redis
        self.sleep = sleep

    def collection(self, domain: DomainSpec) -> Any:
        """The collection of ``domain``; :class:`ConfigurationError` for a domain the backend does not know."""
        collection = self.collections.get(domain.name)
        if collection is None:
            raise ConfigurationError(f"{domain.name!r} is not a domain of this backend")
        return collection


# ---------------------------------------------------------------------------------------------- reads


def get(s: Settings, h: Handles, domain: DomainSpec, key: Key) -> Steps[Record | None]:
    """Read one record: from Redis in one round trip when it holds it, else by the unique key."""
    found = yield from get_versioned(s, h, domain, key)
    return None if found is None else found[0]


def get_versioned(s: Settings, h: Handles, domain: DomainSpec, key: Key) -> Steps[tuple[Record, int] | None]:
    """Read one record and the version of its document: a Redis hit, or one ``find_one`` on the unique key whose
    result fills Redis unless a write of the key began since the miss (docs/mongo.md)."""
    cache = s.cache if h.redis is not None else None
    ckey = ""
    stamp = None
    if cache is not None:
        ckey = cache_key(s.namespace, domain, key)
        hit, stamp = yield from cache.read(h.redis, ckey)
        if hit is not None:
            return hit
    layout = s.layout(domain)
    try:
        doc = yield h.collection(domain).find_one(layout.key_filter(key))
    except DRIVER_ERRORS as exc:
        raise s.translate(exc, f"reading {domain.name}") from exc
    if doc is None:
        return None
    found = layout.record(doc), layout.version(doc)
    if cache is not None and stamp is not None:
        yield from cache.fill(h.redis, ckey, stamp, found[1], found[0])
    return found


def scan(
    s: Settings, h: Handles, domain: DomainSpec, context: Key, start: ItemKey | None, stop: ItemKey | None
) -> Steps[list[tuple[ItemKey, Record]]]:
    """The records of one context with the item key in ``[start, stop)``, in item key order."""
    layout = s.layout(domain)
    return (yield from _find(s, h, domain, layout.scan_filter(context, start, stop), SCAN_BATCH))


def read_window(
    s: Settings, h: Handles, domain: DomainSpec, context: Key, start: int, stop: int, step: int
) -> Steps[list[tuple[ItemKey, Record]]]:
    """The records at ``start``, ``start + step``, ... below ``stop``: one range query."""
    layout = s.layout(domain)
    # A first batch large enough for the whole window keeps it one round trip.
    expected = max(1, -(-(stop - start) // step))
    rows = yield from _find(s, h, domain, layout.scan_filter(context, start, stop), expected + 1)
    return [(item, record) for item, record in rows if (item - start) % step == 0]


def _find(
    s: Settings, h: Handles, domain: DomainSpec, query: dict[str, Any], batch_size: int
) -> Steps[list[tuple[ItemKey, Record]]]:
    collection = h.collection(domain)
    layout = s.layout(domain)
    item_field = layout.item_field
    if item_field is None:
        raise TypeError(f"the {domain.name} domain has no item key to scan")
    try:
        docs = yield collection.find(query, layout.scan_projection, batch_size=batch_size).sort(item_field, 1).to_list()
        rows = [(layout.item_of(doc), layout.record(doc)) for doc in docs]
    except DRIVER_ERRORS as exc:
        raise s.translate(exc, f"scanning {domain.name}") from exc
    if domain.item is not None and domain.item.type is FieldType.STR:
        # MongoDB (no collation) and FerretDB on SQLite or a C-collated PostgreSQL order strings by
        # UTF-8 bytes, which is Python's code-point order. A server configured otherwise (a collection
        # collation, FerretDB pushing the sort down to a locale-collated PostgreSQL) would not; this
        # sort costs n comparisons on already sorted rows and makes the contract hold regardless.
        rows.sort(key=_first)
    return rows


# ---------------------------------------------------------------------------------------------- writes


def put(s: Settings, h: Handles, domain: DomainSpec, key: Key, record: Record) -> Steps[int]:
    """Replace one record (insert it if absent); the version its document got."""
    _check_size(domain, record)
    version = yield from _write(s, h, domain, key, f"writing {domain.name}", _upsert(s, h, domain, key, record))
    if version is None:  # pragma: no cover - an upsert returning AFTER always returns the document
        raise PersistError(f"MongoDB returned no document for an upsert into {domain.name}")
    return version


def _write(s: Settings, h: Handles, domain: DomainSpec, key: Key, what: str, body: Steps[Any]) -> Steps[int | None]:
    """Run ``body``, one ``find_one_and_update`` that increments the document's version, as one write of the key:
    the version of the document it returned (``None``: no document).

    Writes of one key are serialised, because FerretDB's updates are not atomic (two concurrent increments can
    give one version to two writes, or store an older one last; docs/mongo.md): by the writer's marker in Redis
    when Redis is up, else (and always in the soft-delete domains) by the key's lock in MongoDB. With the cache,
    the written record then replaces the marker in Redis unless Redis holds something newer.
    """
    cache = s.cache if h.redis is not None else None
    if cache is None:
        # No cache to keep in order: a full $set is safe unlocked outside the soft-delete domains.
        doc = yield from (_locked(s, h, domain, key, what, body) if domain.soft_delete else body)
        return None if doc is None else s.layout(domain).version(doc)
    ckey = cache_key(s.namespace, domain, key)
    token = _marker_token()
    try:
        claimed = yield from _claim(s, h, cache, ckey, token, what)
        if domain.soft_delete or not claimed:
            doc = yield from _locked(s, h, domain, key, what, body)
        else:
            doc = yield from body
        if doc is not None:
            version = s.layout(domain).version(doc)
            yield from cache.commit(h.redis, ckey, token if claimed else None, version, s.layout(domain).record(doc))
            return version
    except GeneratorExit:  # pragma: no cover - the runners never close a body early
        raise
    except BaseException:  # failed or cancelled, maybe with our marker in Redis (a command that landed late)
        yield from cache.release(h.redis, ckey, token)  # the write may or may not have landed; let the next in
        raise
    yield from cache.release(h.redis, ckey, token)  # no document (a remove of a missing key)
    return None


def _claim(s: Settings, h: Handles, cache: ValueCache, ckey: str, token: str, what: str) -> Steps[bool]:
    """Put this write's marker (``token``) on ``ckey`` in Redis, waiting while another writer's stands (as for a
    key lock); ``False`` if Redis could not be told (the caller then takes the key's lock in MongoDB)."""
    delay = 0.0005
    while True:
        held = yield from cache.begin(h.redis, ckey, token)
        if held is None:
            return False
        if held == 0:
            return True
        holder = yield from cache.marker(h.redis, ckey)
        if holder is not None and _marker_died_here(holder):
            # Its writer was killed between its begin and its commit (it may or may not have written MongoDB,
            # as after a failed write): let the next writer in at once rather than after the marker's lease.
            yield from cache.release(h.redis, ckey, holder)
            continue
        left = remaining()
        if left <= delay:  # the other writer will not finish in time (its marker stands for the lease)
            yield h.sleep(max(left, 0.0))
            why = f"another writer is writing the key (Redis marker {ckey!r}, {held} ms left on its lease)"
            raise timed_out(s.url, what, s.timeout, why)
        yield h.sleep(delay)
        delay = min(delay * 2, _LOCK_BACKOFF_MAX)


def _upsert(s: Settings, h: Handles, domain: DomainSpec, key: Key, record: Record) -> Steps[Any]:
    collection = h.collection(domain)
    layout = s.layout(domain)
    query = layout.key_filter(key)
    update = layout.upsert(record, _utcnow())
    for attempt in range(_UPSERT_ATTEMPTS):
        try:
            return (
                yield collection.find_one_and_update(query, update, upsert=True, return_document=ReturnDocument.AFTER)
            )
        except DuplicateKeyError as exc:  # a concurrent upsert inserted the key first: update it now
            if attempt + 1 == _UPSERT_ATTEMPTS:
                raise s.translate(exc, f"writing {domain.name}") from exc
        except DRIVER_ERRORS as exc:
            raise s.translate(exc, f"writing {domain.name}") from exc
    return None  # pragma: no cover - the last attempt returns or raises


def put_many(s: Settings, h: Handles, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> Steps[None]:
    """Replace several records, one ``find_one_and_update`` each, as upstream does.

    A batched bulk_write of upserts is not used: on FerretDB v1 a duplicate-key race inside such a batch stops
    the batch and returns a reply that pymongo cannot parse (KeyError 'nModified'), which would lose the rest
    of the batch.
    """
    for _, record in items:
        _check_size(domain, record)  # the whole batch first: nothing is written if one item is too large
    for key, record in items:
        yield from put(s, h, domain, key, record)


def insert_many(s: Settings, h: Handles, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> Steps[int]:
    """Insert the records whose keys are absent (first write wins); the number inserted."""
    if not items:
        return 0
    for _, record in items:
        _check_size(domain, record)
    if len(items) == 1:
        return (yield from _insert_one(s, h, domain, *items[0]))
    collection = h.collection(domain)
    layout = s.layout(domain)
    now = _utcnow()
    docs = [layout.document(key, record, now, ObjectId()) for key, record in items]
    lost: set[int] = set()
    try:
        # ordered=False: every new key is inserted even when others exist; the unique index makes each
        # insert first-write-wins, between processes too, and reports the existing keys as code 11000.
        yield collection.insert_many(docs, ordered=False)
        inserted = len(docs)
    except BulkWriteError as exc:
        details = exc.details
        errors = details.get("writeErrors", [])
        if details.get("writeConcernErrors") or any(e.get("code") != _DUPLICATE_KEY for e in errors):
            raise s.translate(exc, f"inserting {domain.name}") from exc
        lost = {e["index"] for e in errors}
        inserted = int(details.get("nInserted", len(docs) - len(lost)))
    except DRIVER_ERRORS as exc:
        raise s.translate(exc, f"inserting {domain.name}") from exc
    if s.cache is not None and h.redis is not None and inserted == len(docs) - len(lost):
        yield from s.cache.seed(
            h.redis,
            [
                (cache_key(s.namespace, domain, key), record)
                for index, (key, record) in enumerate(items)
                if index not in lost
            ],
        )
    return inserted


def _insert_one(s: Settings, h: Handles, domain: DomainSpec, key: Key, record: Record) -> Steps[int]:
    # A plain insert, the unique index deciding: FerretDB 1.x serves it in time flat in the collection's size,
    # where an upsert's lookup reads the whole collection (bench/ferretdb_probe.py: 0.6 ms against 57 ms at 10^5).
    doc = s.layout(domain).document(key, record, _utcnow(), ObjectId())
    try:
        yield h.collection(domain).insert_one(doc)
    except DuplicateKeyError:
        return 0  # the key is stored already (first write wins), or a concurrent writer inserted it first
    except DRIVER_ERRORS as exc:
        raise s.translate(exc, f"inserting {domain.name}") from exc
    if s.cache is not None and h.redis is not None:  # ours: never changed by a later insert
        yield from s.cache.seed(h.redis, [(cache_key(s.namespace, domain, key), record)])
    return 1


def mark_removed(s: Settings, h: Handles, domain: DomainSpec, key: Key) -> Steps[None]:
    """Mark one record removed (soft-delete domains), under the key's lock."""
    if not domain.soft_delete:
        raise TypeError(f"the {domain.name} domain has no soft delete")
    # Under the key's lock (_write, soft-delete domain): on FerretDB this update rewrites the whole document as
    # the server read it, payload included, and would undo a put that landed in between (docs/mongo.md).
    yield from _write(s, h, domain, key, f"removing from {domain.name}", _set_removed(s, h, domain, key))


def _set_removed(s: Settings, h: Handles, domain: DomainSpec, key: Key) -> Steps[Any]:
    try:
        return (
            yield h.collection(domain).find_one_and_update(
                s.layout(domain).key_filter(key),
                {"$set": {REMOVED: True, UPDATED: _utcnow()}, **BUMP},
                return_document=ReturnDocument.AFTER,
            )
        )
    except DRIVER_ERRORS as exc:
        raise s.translate(exc, f"removing from {domain.name}") from exc


# ------------------------------------------------------------------------------------ operating the state


def list_records(
    s: Settings, h: Handles, domain: DomainSpec, after: Key | None, limit: int
) -> Steps[list[tuple[Key, Record]]]:
    """A page of ``domain``'s records after the cursor, in key order: one query on the unique index."""
    if after == ():  # every key starts with the empty prefix: none comes after it
        return []
    layout = s.layout(domain)
    try:
        cursor = h.collection(domain).find(layout.after_filter(after), layout.list_projection, batch_size=limit)
        docs = yield cursor.sort(layout.key_sort).limit(limit).to_list()
        return [(layout.key_of(doc), layout.record(doc)) for doc in docs]
    except DRIVER_ERRORS as exc:
        raise s.translate(exc, f"listing {domain.name}") from exc


def list_contexts(
    s: Settings, h: Handles, domain: DomainSpec, after: Key | None, limit: int
) -> Steps[list[tuple[Key, int]]]:
    """A page of contexts with their counts: pages of keys grouped (FerretDB 1.x groups in memory anyway)."""
    tally = ContextTally(len(domain.context), limit)
    cursor = after
    while True:
        page = yield from list_records(s, h, domain, cursor, PAGE_SIZE)
        if tally.add(key for key, _ in page) or len(page) < PAGE_SIZE:
            return tally.counts
        cursor = page[-1][0]


def delete_records(s: Settings, h: Handles, domain: DomainSpec, keys: Sequence[Key]) -> Steps[int]:
    """Delete records by key: one ``delete_many``, or each under its key's lock in a soft-delete domain
    (a revive racing the delete is a read-modify-write on FerretDB); their cached copies are tombstoned."""
    keys = sorted(set(keys))
    if not keys:
        return 0
    layout = s.layout(domain)
    collection = h.collection(domain)
    deleted = 0
    try:
        if domain.soft_delete:
            for key in keys:
                result = yield from _locked(
                    s, h, domain, key, f"deleting from {domain.name}", _delete_one(collection, layout.key_filter(key))
                )
                deleted += result
        else:
            result = yield collection.delete_many({"$or": [layout.key_filter(key) for key in keys]})
            deleted = int(result.deleted_count)
    except DRIVER_ERRORS as exc:
        raise s.translate(exc, f"deleting from {domain.name}") from exc
    if s.cache is not None and h.redis is not None:
        yield from s.cache.tombstone(h.redis, [cache_key(s.namespace, domain, key) for key in keys])
    return deleted


def _delete_one(collection: Any, query: dict[str, Any]) -> Steps[int]:
    result = yield collection.delete_one(query)
    return int(result.deleted_count)


# ---------------------------------------------------------------------------------------------- key locks


def _locked(s: Settings, h: Handles, domain: DomainSpec, key: Key, what: str, body: Steps[Any]) -> Steps[Any]:
    """Run ``body`` holding the lock of one record's key (soft-delete domains only); its result.

    Taking it inserts ``{lock: <key>, expires, host, pid, started}`` into the unique index of
    :data:`LOCK_COLLECTION`; a duplicate key means another holder, and the caller waits (0.5 ms, doubling to
    20 ms) until the operation's deadline, then raises :class:`BackendTimeoutError`. A lock past its lease, or
    whose holder was a process of this host that is gone (SIGKILL between taking and releasing it), belongs to
    a holder that died and is deleted by its ``_id``, so that only that very lock goes. The body runs with a
    part of the deadline kept back for the release, which deletes the lock by its ``_id`` (also when the
    body failed or, on the asyncio face, was cancelled); if that fails, the lease frees the key.
    """
    locks = h.locks
    name = cache_key(s.namespace, domain, key)
    lock_id = ObjectId()
    delay = 0.0005
    lease_ms = s.lock_lease_ms
    me = holder_fields()
    held_by = ""  # set once another writer was seen holding the lock
    try:
        while True:
            now_ms = time.time_ns() // 1_000_000
            try:
                yield locks.insert_one({"_id": lock_id, "lock": name, "expires": Int64(now_ms + lease_ms), **me})
                break
            except DuplicateKeyError:
                holder = yield locks.find_one({"lock": name})
                if holder is None:
                    continue  # released meanwhile
                expires = holder.get("expires")
                if not isinstance(expires, int) or expires < now_ms or _died_here(holder):
                    log.warning("breaking the lock of %s: a writer died holding it", name)
                    yield locks.delete_one({"_id": holder["_id"]})
                    continue
                held_by = f"the key's lock is held by another writer (lock {name!r}, lease until {expires} ms)"
            left = remaining()
            if left <= delay:  # the holder will not release it in time (its lease ends later)
                yield h.sleep(max(left, 0.0))
                raise timed_out(s.url, what, s.timeout, held_by)
            yield h.sleep(delay)
            delay = min(delay * 2, _LOCK_BACKOFF_MAX)
    except DRIVER_ERRORS as exc:
        if held_by and isinstance(exc, PyMongoError) and exc.timeout:  # the deadline ran out in a retry
            raise timed_out(s.url, what, s.timeout, f"{held_by}; {type(exc).__name__}") from exc
        raise s.translate(exc, what) from exc
    except PersistError:
        raise
    except BaseException:  # cancelled (asyncio face) while taking the lock, whose insert may have landed
        yield from _release(locks, lock_id, name, lease_ms)
        raise
    try:
        # Keep part of the deadline for the release: a lock left behind blocks the key until its lease ends.
        budget = remaining() - s.release_reserve
        if budget <= 0:
            raise timed_out(s.url, what, s.timeout, "no time left after taking the key's lock")
        with pymongo.timeout(budget):
            return (yield from body)
    finally:
        yield from _release(locks, lock_id, name, lease_ms)


def holder_fields() -> dict[str, Any]:
    """The fields naming this process in a lock or a unit journal (see :func:`_died_here`)."""
    global _identity
    if _identity is None or _identity.pid != os.getpid():  # computed again in a forked child
        _identity = this_process()
    return {"host": _identity.host, "pid": _identity.pid, "started": _identity.started}


def _marker_token() -> str:
    """A writer's marker token in Redis: random, and naming this process so that a writer of this host can tell
    a marker whose writer died (``host.pid.started.random``; the host hex-encoded, since the marker's own text
    is ``|``-separated)."""
    global _token_prefix
    if _token_prefix is None or _token_prefix[0] != os.getpid():  # made again in a forked child
        holder = holder_fields()
        _token_prefix = (holder["pid"], f"{holder['host'].encode().hex()}.{holder['pid']}.{holder['started']}.")
    return _token_prefix[1] + os.urandom(8).hex()


_token_prefix: tuple[int, str] | None = None  # (pid, what every marker token of that process begins with)


def _marker_died_here(token: str) -> bool:
    """Whether the marker ``token`` (see :func:`_marker_token`) is a dead process's of this host."""
    parts = token.split(".")
    if len(parts) != 4 or not parts[1].isdigit():
        return False
    try:
        host = bytes.fromhex(parts[0]).decode()
    except ValueError:
        return False
    return _died_here({"host": host, "pid": int(parts[1]), "started": parts[2]})


def _died_here(doc: Mapping[str, Any]) -> bool:
    """Whether ``doc`` (a lock or a unit journal) was written by a process of this host that is gone.

    A writer on another host cannot be asked: its lock or journal waits for its lease (``expires``) instead.
    """
    host, pid, started = doc.get("host"), doc.get("pid"), doc.get("started")
    if host != socket.gethostname() or not isinstance(pid, int) or not isinstance(started, str):
        return False
    return not ProcessIdentity(host, pid, started).is_alive_here()


def _release(locks: Any, lock_id: ObjectId, name: str, lease_ms: int) -> Steps[None]:
    """Delete our lock by its ``_id`` (nothing if it was never inserted)."""
    try:
        yield locks.delete_one({"_id": lock_id})
    except DRIVER_ERRORS as exc:  # the lease frees the key; the operation itself has its own verdict
        reason = type(exc).__name__
        log.warning("could not release the lock of %s (%s); it expires in %d s", name, reason, lease_ms // 1000)
