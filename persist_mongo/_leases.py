"""Ownership leases of the Mongo backend: one document per generation in the ``persist-leases`` collection.

A claim is an ``insert_one`` of the generation's ``_id``, which the ``_id`` index makes insert-if-absent across
processes (on FerretDB too, where a PostgreSQL unique constraint decides). A renewal replaces the document of
the caller's own generation, which no other process ever writes, so FerretDB's non-atomic updates cannot lose
a concurrent change. Redis is not involved: a lease is never served from a cache. Layout: docs/mongo.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from bson.int64 import Int64
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

from persist_core.config import storage_identity
from persist_core.errors import CorruptRecordError
from persist_core.ownership import SAFETY_FRACTION, Lease, LeaseLog
from persist_mongo._codec import UPDATED
from persist_mongo._deadline import deadline
from persist_mongo._errors import translate

__all__ = ["LEASE_COLLECTION", "LEASE_FIELD", "Holding", "MongoLeaseLog", "holding_for"]

log = logging.getLogger("persist.mongo")

#: The collection of ownership leases, beside the ``<domain>-items`` collections.
LEASE_COLLECTION = "persist-leases"
#: The field holding a generation's lease as :meth:`Lease.to_json` text.
LEASE_FIELD = "lease"
# Only numeric _ids are generations; a comparison never matches across BSON types, so anything else someone
# put into the collection is ignored rather than sorted above the newest generation.
_GENERATIONS: dict[str, Any] = {"_id": {"$gte": 1}}


class Holding:
    """Whether this process owns the backend's storage (CONTRACTS.md 3.7), as its lease log last saw it.

    The owner's writes of a key are then the only writes of that key, so the value cache may order them in
    this process rather than by a Redis round trip before each one (docs/mongo.md, "The live owner's writes").
    Fresh from a claim or a renewal of this process's lease, for the same share of the lease as the
    :class:`~persist_core.ownership.Owner` itself trusts it; stale once a newer generation is seen, and in a
    forked child.
    """

    __slots__ = ("_generation", "_lock", "_pid", "_until", "_writing")

    def __init__(self) -> None:
        self._generation = 0
        self._pid = 0
        self._until = float("-inf")
        self._lock = threading.Lock()
        self._writing: set[str] = set()

    def fresh(self) -> bool:
        """Whether this process holds a lease that has not lapsed (one clock read and one ``getpid``)."""
        return time.monotonic() < self._until and self._pid == os.getpid()

    def held(self, generation: int, lease: Lease, started: float, wall_ms: int) -> None:
        """This process stored ``lease`` as ``generation``; the call began at ``started`` (monotonic), when the
        wall clock read ``wall_ms``."""
        self._generation, self._pid = generation, os.getpid()
        self._until = started + (lease.expires_ms - wall_ms) / 1000 * (1 - SAFETY_FRACTION)

    def seen(self, generation: int) -> None:
        """The newest generation is ``generation``: if it is not ours, we no longer own the storage."""
        if generation != self._generation:
            self._until = float("-inf")

    def start_writing(self, key: str) -> bool:
        """Note that this process writes ``key`` (a cache key) now; ``False`` if a write of it is under way."""
        with self._lock:
            if key in self._writing:
                return False
            self._writing.add(key)
            return True

    def stop_writing(self, key: str) -> None:
        """The write :meth:`start_writing` noted has ended."""
        with self._lock:
            self._writing.discard(key)


_holdings: dict[tuple[str, ...], Holding] = {}
_holdings_lock = threading.Lock()


def holding_for(url: str) -> Holding:
    """The :class:`Holding` of the storage ``url`` names, one per process for all its backends (as the
    :class:`~persist_core.ownership.Owner` is one: :func:`persist_core.guarded.acquire_owner`)."""
    identity = storage_identity(url)
    with _holdings_lock:
        holding = _holdings.get(identity)
        if holding is None:
            holding = _holdings[identity] = Holding()
        return holding


class MongoLeaseLog(LeaseLog):
    """Leases in :data:`LEASE_COLLECTION`; every method raises only persist errors.

    ``collection`` returns the collection of the opened backend (opening it if needed), ``url`` is the raw
    URL for :func:`~persist_mongo._errors.translate` (which masks it), ``timeout`` the backend's deadline: each
    method completes or raises BackendTimeoutError within it.
    """

    def __init__(
        self,
        collection: Callable[[], Collection[dict[str, Any]]],
        url: str,
        timeout: float,
        holding: Holding | None = None,
    ) -> None:
        self._collection = collection
        self._url = url
        self._timeout = timeout
        self._holding = holding or Holding()

    # docstrings inherited from LeaseLog

    def head(self) -> tuple[int, Lease] | None:
        with deadline(self._timeout):
            collection = self._collection()
            try:
                doc = collection.find_one(_GENERATIONS, sort=[("_id", -1)])
            except PyMongoError as exc:
                raise translate(exc, self._url, "reading the ownership lease", self._timeout) from exc
        if doc is None:
            return None
        head = _parse(doc, collection.full_name)
        self._holding.seen(head[0])
        return head

    def claim(self, generation: int, lease: Lease) -> bool:
        started, wall_ms = time.monotonic(), time.time_ns() // 1_000_000
        with deadline(self._timeout):
            stored = self._claim(generation, lease)
        if stored:
            self._holding.held(generation, lease, started, wall_ms)
        return stored

    def _claim(self, generation: int, lease: Lease) -> bool:
        collection = self._collection()
        text = lease.to_json()
        try:
            collection.insert_one({"_id": Int64(generation), LEASE_FIELD: text, UPDATED: _utcnow()})
        except DuplicateKeyError:
            # Another claim of this generation got in first; unless a driver-level retry of this very insert
            # found the document that its first attempt had stored (same holder, same times: our own lease).
            try:
                doc = collection.find_one({"_id": Int64(generation)})
            except PyMongoError as exc:
                raise translate(exc, self._url, "claiming ownership", self._timeout) from exc
            return doc is not None and doc.get(LEASE_FIELD) == text
        except PyMongoError as exc:
            raise translate(exc, self._url, "claiming ownership", self._timeout) from exc
        return True

    def renew(self, generation: int, lease: Lease) -> None:
        started, wall_ms = time.monotonic(), time.time_ns() // 1_000_000
        with deadline(self._timeout):
            try:
                # No upsert: a generation that was pruned (a newer owner exists) must not come back.
                result = self._collection().replace_one(
                    {"_id": Int64(generation)}, {LEASE_FIELD: lease.to_json(), UPDATED: _utcnow()}
                )
            except PyMongoError as exc:
                raise translate(exc, self._url, "renewing the ownership lease", self._timeout) from exc
        if result.matched_count:
            self._holding.held(generation, lease, started, wall_ms)
        else:
            self._holding.seen(0)

    def prune(self, below: int) -> None:
        # Housekeeping only: old generations decide nothing, so a failure must not fail the claim it follows.
        with deadline(self._timeout):
            try:
                self._collection().delete_many({"_id": {"$gte": 1, "$lt": Int64(below)}})
            except PyMongoError as exc:
                log.warning("%s", translate(exc, self._url, "pruning old ownership leases", self._timeout))


def _parse(doc: dict[str, Any], where: str) -> tuple[int, Lease]:
    generation = doc.get("_id")
    text = doc.get(LEASE_FIELD)
    if not isinstance(generation, int) or isinstance(generation, bool) or not isinstance(text, str):
        raise CorruptRecordError(f"not an ownership lease in {where}: _id {generation!r}, {LEASE_FIELD} {text!r:.200}")
    try:
        return int(generation), Lease.from_json(text)
    except ValueError as exc:
        raise CorruptRecordError(f"unreadable ownership lease {generation} in {where}: {exc}") from exc


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
