"""Units of work on MongoDB without transactions: a journal document commits the unit (issue 13; docs/mongo.md).

FerretDB 1.24 has no multi-document transactions, and MongoDB has them only on replica sets. What every
MongoDB-compatible server makes atomic is one document write. So a unit of several writes is committed by one
``insert_one`` into the :data:`JOURNAL_COLLECTION`, a document holding every write of the unit; then the writes
are applied with the ordinary operations of :mod:`persist_mongo._operations` (so the Redis cache, the key locks
and first-write-wins behave exactly as for single writes), and the journal document is deleted. A writer that
dies in between leaves its journal document, and the next :func:`replay` (at every open, on both faces)
completes the unit before the backend serves a write. So after a crash a unit is all (its journal was
inserted) or none (it was not).

Replaying is idempotent and never undoes a newer write: a unit's writes are first reduced to at most one per
key (:func:`net_writes`), and a replayed put or remove is skipped when the stored document was updated after
the unit began (its ``updatedDate`` is later than the journal's ``at``): that is the unit's own write, already
applied, or a later write that supersedes it. An insert is first-write-wins anyway.

Only abandoned journals are replayed: the writer's deadline has passed (``expires``), or it ran on this host
and is dead (pid and start time, as ownership leases tell), or it is this process's own and its unit raised
(it is completed by the backend's next unit, or the next open). Besides every open, a unit
looks again once a lease (10 s) has passed since the last look.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any

import bson
from bson.int64 import Int64
from bson.objectid import ObjectId

from persist_core.backend import Record
from persist_core.domains import DOMAINS
from persist_core.errors import CorruptRecordError, UnitOfWorkError
from persist_core.units import Write, WriteOp, batches
from persist_mongo import _operations as operations
from persist_mongo._codec import UPDATED
from persist_mongo._errors import DRIVER_ERRORS
from persist_mongo._operations import _MAX_PAYLOAD_BYTES, Handles, Settings, _check_size, _died_here, holder_fields
from persist_mongo._steps import Steps, Together

__all__ = ["JOURNAL_COLLECTION", "MAX_JOURNAL_BYTES", "apply_unit", "net_writes", "replay"]

log = logging.getLogger("persist.mongo")

#: The collection of unit journals, beside the ``<domain>-items`` collections: empty but for units in flight
#: and units whose writer died before finishing them.
JOURNAL_COLLECTION = "persist-units"
#: The largest journal document (BSON bytes): MongoDB's 16 MiB document limit less room for the command.
MAX_JOURNAL_BYTES = _MAX_PAYLOAD_BYTES
# Bytes a journal entry costs besides its payload (field names, key values, when, removed): a generous bound
# per entry, so that the exact BSON size is only computed for units near the limit.
_ENTRY_OVERHEAD = 2048

# Journals this process is applying now (never replayed by another backend of this process), and, per backend
# (URL and namespace), whether one of its units raised after its journal may have been inserted: its next unit
# first completes it. Process-wide sets, because several backends of one process may share a database.
_in_flight: set[ObjectId] = set()
_unfinished: set[tuple[str, str]] = set()
# Journals of this process whose unit raised (or whose delete failed): the only journals of a live process of
# ours that a replay takes. Any other journal of ours it reads is in flight or was finished after it was read.
_failed: set[ObjectId] = set()
# When each backend last looked for abandoned journals (time.monotonic()): a unit looks again once a lease has
# passed, so that a unit whose writer died after this process opened (an owner taken over) is completed within
# about a lease, not only at the next open. One query per lease (10 s), nothing per unit.
_swept: dict[tuple[str, str], float] = {}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def net_writes(writes: Sequence[Write]) -> list[Write]:
    """The writes of a unit reduced to what each key ends with: at most one write per key, in the order the
    keys were first written.

    A put replaces whatever came before; a remove after a put is the put with the removed flag; a second
    remove, an insert after a put or an insert, change nothing. Only inserts and removes of one key (no domain
    takes both) may keep several writes, as whether the key exists is not known here. Applied one by one, the
    result leaves what ``writes`` leave.
    """
    net: dict[tuple[str, Any], list[Write]] = {}
    for write in writes:
        slot = net.setdefault((write.domain.name, write.key), [])
        last = slot[-1] if slot else None
        if write.op is WriteOp.PUT:
            slot[:] = [write]
        elif write.op is WriteOp.REMOVE:
            if last is not None and last.op is WriteOp.PUT and last.record is not None:
                slot[-1] = dataclasses.replace(last, record=dataclasses.replace(last.record, removed=True))
            elif last is None or last.op is not WriteOp.REMOVE:
                slot.append(write)
        elif last is None or (last.op is WriteOp.REMOVE and len(slot) == 1):
            slot.append(write)  # an insert after removes only: the key may be absent
    return [write for slot in net.values() for write in slot]


def _check(s: Settings, h: Handles, writes: Sequence[Write]) -> None:
    """Refuse a unit before anything of it is written: what one of its writes would refuse on its own."""
    for write in writes:
        h.collection(write.domain)  # ConfigurationError for a domain this backend does not store
        if write.op is WriteOp.REMOVE and not write.domain.soft_delete:
            raise TypeError(f"the {write.domain.name} domain has no soft delete")
        if write.record is not None:
            _check_size(write.domain, write.record)


def _journal(s: Settings, writes: Sequence[Write]) -> dict[str, Any]:
    """The journal document of a unit; :class:`UnitOfWorkError` if it cannot be one MongoDB document."""
    at = _now_ms()
    entries = []
    rough = 0
    for write in writes:
        entry: dict[str, Any] = {
            "d": write.domain.name,
            "o": write.op.value,
            "k": s.layout(write.domain).key_filter(write.key),
        }
        record = write.record
        if record is not None:
            entry |= {
                "p": record.payload,
                "w": None if record.when is None else Int64(record.when),
                "r": record.removed,
            }
            rough += 4 * len(record.payload)
        rough += _ENTRY_OVERHEAD
        entries.append(entry)
    doc = {
        "_id": ObjectId(),
        "at": Int64(at),
        # The writer's deadline has surely passed by then: the unit is finished or its writer is gone.
        "expires": Int64(at + s.lock_lease_ms),
        **holder_fields(),
        "writes": entries,
    }
    if rough > MAX_JOURNAL_BYTES:
        size = len(bson.encode(doc))
        if size > MAX_JOURNAL_BYTES:
            raise UnitOfWorkError(
                f"a unit of work of {len(writes)} writes takes {size} bytes, over the {MAX_JOURNAL_BYTES} bytes of "
                "the one MongoDB document that makes it atomic (docs/mongo.md, Units of work): split it into "
                "smaller units; nothing was written"
            )
    return doc


def _writes_of(s: Settings, doc: dict[str, Any]) -> list[Write]:
    """The writes a journal document holds; :class:`CorruptRecordError` if it is not a journal of ours."""
    try:
        writes = []
        for entry in doc["writes"]:
            domain = DOMAINS[entry["d"]]
            key = s.layout(domain).key_of(entry["k"])
            op = WriteOp(entry["o"])
            record = None
            if op is not WriteOp.REMOVE:
                when = entry["w"]
                record = Record(entry["p"], None if when is None else int(when), bool(entry["r"]))
            writes.append(Write(domain, op, key, record))
        return writes
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptRecordError(
            f"document {doc.get('_id')!r} in {JOURNAL_COLLECTION!r} is not a unit journal of this library ({exc!r})"
        ) from exc


def _apply(s: Settings, h: Handles, writes: Sequence[Write]) -> Steps[None]:
    """Apply ``writes`` with the ordinary operations: one ``put_many``/``insert_many`` per run of one op and
    domain, one ``mark_removed`` per removed key (each under its key lock)."""
    for batch in batches(writes):
        if batch.op is WriteOp.PUT:
            yield from operations.put_many(s, h, batch.domain, batch.items)
        elif batch.op is WriteOp.INSERT:
            yield from operations.insert_many(s, h, batch.domain, batch.items)
        else:
            for key in batch.keys:
                yield from operations.mark_removed(s, h, batch.domain, key)


def _apply_together(s: Settings, h: Handles, writes: Sequence[Write]) -> Steps[None]:
    """:func:`_apply` with the writes of each domain at the same time as the other domains' (one collection
    each, and one write per key: nothing orders them), so that a unit costs the round trips of its largest
    domain rather than of all its writes."""
    domains: dict[str, list[Write]] = {}
    for write in writes:
        domains.setdefault(write.domain.name, []).append(write)
    if len(domains) == 1:
        yield from _apply(s, h, writes)
    else:
        yield Together([_apply(s, h, part) for part in domains.values()])


def apply_unit(s: Settings, h: Handles, writes: Sequence[Write]) -> Steps[None]:
    """Apply a unit all or none: journal, writes, journal deleted (see the module's docstring)."""
    _check(s, h, writes)
    writes = net_writes(writes)
    backend = (s.url, s.namespace)
    # A unit of ours that raised half-way is completed before this one (its keys first), and so is any unit
    # abandoned since the last look.
    if backend in _unfinished or time.monotonic() - _swept.get(backend, 0.0) > s.lock_lease_ms / 1000:
        yield from replay(s, h)
        _unfinished.discard(backend)
    if len(writes) <= 1:  # one document write is atomic by itself
        yield from _apply(s, h, writes)
        return
    doc = _journal(s, writes)
    journal = h.locks.database[JOURNAL_COLLECTION]
    journal_id = doc["_id"]
    _in_flight.add(journal_id)
    try:
        try:
            try:
                yield journal.insert_one(doc)
            except DRIVER_ERRORS as exc:
                raise s.translate(exc, "committing a unit of work") from exc
            yield from _apply_together(s, h, writes)
        except BaseException:
            # The journal may be in (an insert whose reply was lost counts): the unit is then committed, and the
            # next unit of this backend, or the next open anywhere, completes it.
            _failed.add(journal_id)
            _unfinished.add(backend)
            raise
        try:
            yield journal.delete_one({"_id": journal_id})
        except DRIVER_ERRORS as exc:  # the unit is stored whole; replaying a finished journal changes nothing
            log.warning("unit journal %s stays until the next open: %s", journal_id, s.translate(exc, "deleting it"))
            _failed.add(journal_id)
            _unfinished.add(backend)
    finally:  # only now may another backend of this process take the journal for abandoned
        _in_flight.discard(journal_id)


def _abandoned(doc: dict[str, Any], now_ms: int) -> bool:
    """Whether the journal ``doc`` belongs to no unit in flight: past its writer's deadline, or written by a dead
    process of this host, or by a unit of this process that raised."""
    if doc["_id"] in _in_flight:
        return False
    expires = doc.get("expires")
    return not isinstance(expires, int) or expires < now_ms or doc["_id"] in _failed or _died_here(doc)


def _updated_ms(value: Any) -> int | None:
    if not isinstance(value, dt.datetime):
        return None
    return calendar.timegm(value.utctimetuple()) * 1000 + value.microsecond // 1000


def _complete(s: Settings, h: Handles, doc: dict[str, Any]) -> Steps[int]:
    """Apply the writes of one abandoned journal that no newer write superseded, then delete it; how many were
    applied."""
    at = doc.get("at")
    if not isinstance(at, int):
        raise CorruptRecordError(f"unit journal {doc.get('_id')!r} in {JOURNAL_COLLECTION!r} has no time 'at'")
    applied = 0
    for write in _writes_of(s, doc):
        if write.op is not WriteOp.INSERT:  # an insert is first-write-wins: replaying it is always safe
            try:
                stored = yield h.collection(write.domain).find_one(
                    s.layout(write.domain).key_filter(write.key), {UPDATED: 1}
                )
            except DRIVER_ERRORS as exc:
                raise s.translate(exc, "replaying a unit journal") from exc
            updated = None if stored is None else _updated_ms(stored.get(UPDATED))
            if updated is not None and updated > at:
                continue  # applied before the writer stopped, or superseded by a later write
        yield from _apply(s, h, [write])
        applied += 1
    try:
        yield h.locks.database[JOURNAL_COLLECTION].delete_one({"_id": doc["_id"]})
    except DRIVER_ERRORS as exc:
        raise s.translate(exc, "deleting a replayed unit journal") from exc
    _failed.discard(doc["_id"])
    return applied


def replay(s: Settings, h: Handles) -> Steps[int]:
    """Complete every abandoned unit journal, oldest first (at open, before any write, and from a unit once a
    lease has passed since the last look); how many there were."""
    journal = h.locks.database[JOURNAL_COLLECTION]
    try:
        docs = yield journal.find({}).sort("_id", 1).to_list()
    except DRIVER_ERRORS as exc:
        raise s.translate(exc, "reading the unit journal") from exc
    _swept[(s.url, s.namespace)] = time.monotonic()
    now_ms = _now_ms()
    done = 0
    for doc in docs:
        if not _abandoned(doc, now_ms):
            continue
        applied = yield from _complete(s, h, doc)
        done += 1
        log.warning(
            "completed the unit of work %s left by %s (pid %s): %d of its %d writes applied (the rest were stored)",
            doc["_id"],
            doc.get("host"),
            doc.get("pid"),
            applied,
            len(doc.get("writes", ())),
        )
    return done
