"""Ownership leases of the Mongo backend: one document per generation in the ``persist-leases`` collection.

A claim is an ``insert_one`` of the generation's ``_id``, which the ``_id`` index makes insert-if-absent across
processes (on FerretDB too, where a PostgreSQL unique constraint decides). A renewal replaces the document of
the caller's own generation, which no other process ever writes, so FerretDB's non-atomic updates cannot lose
a concurrent change. Redis is not involved: a lease is never served from a cache. Layout: docs/mongo.md.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from bson.int64 import Int64
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

from persist_core.errors import CorruptRecordError
from persist_core.ownership import Lease, LeaseLog
from persist_mongo._codec import UPDATED
from persist_mongo._deadline import deadline
from persist_mongo._errors import translate

__all__ = ["LEASE_COLLECTION", "LEASE_FIELD", "MongoLeaseLog"]

log = logging.getLogger("persist.mongo")

#: The collection of ownership leases, beside the ``<domain>-items`` collections.
LEASE_COLLECTION = "persist-leases"
#: The field holding a generation's lease as :meth:`Lease.to_json` text.
LEASE_FIELD = "lease"
# Only numeric _ids are generations; a comparison never matches across BSON types, so anything else someone
# put into the collection is ignored rather than sorted above the newest generation.
_GENERATIONS: dict[str, Any] = {"_id": {"$gte": 1}}


class MongoLeaseLog(LeaseLog):
    """Leases in :data:`LEASE_COLLECTION`; every method raises only persist errors.

    ``collection`` returns the collection of the opened backend (opening it if needed), ``url`` is the raw
    URL for :func:`~persist_mongo._errors.translate` (which masks it), ``timeout`` the backend's deadline: each
    method completes or raises BackendTimeoutError within it.
    """

    def __init__(self, collection: Callable[[], Collection[dict[str, Any]]], url: str, timeout: float) -> None:
        self._collection = collection
        self._url = url
        self._timeout = timeout

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
        return _parse(doc, collection.full_name)

    def claim(self, generation: int, lease: Lease) -> bool:
        with deadline(self._timeout):
            return self._claim(generation, lease)

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
        with deadline(self._timeout):
            try:
                # No upsert: a generation that was pruned (a newer owner exists) must not come back.
                self._collection().replace_one(
                    {"_id": Int64(generation)}, {LEASE_FIELD: lease.to_json(), UPDATED: _utcnow()}
                )
            except PyMongoError as exc:
                raise translate(exc, self._url, "renewing the ownership lease", self._timeout) from exc

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
