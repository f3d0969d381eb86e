"""The document layout of one domain's collection, and the payload encoding.

A document holds the domain's key fields under upstream's camelCase names (``symbol``, ``strategyName``,
``timestamp``, ``backtest``), ``payload``, ``when``, ``removed`` (soft-delete domains only), ``version`` (how
many times the document was written: the order of the Redis value cache) and ``createDate``/``updatedDate``.
Why the payload is the record's canonical JSON *text* and not a native sub-document: docs/mongo.md ("Payload
encoding").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from bson.int64 import Int64

from persist_core.backend import ItemKey, Key, Record
from persist_core.domains import DomainSpec, FieldType
from persist_core.errors import CorruptRecordError

__all__ = ["PAYLOAD", "VERSION", "Layout"]

PAYLOAD = "payload"
WHEN = "when"
REMOVED = "removed"
CREATED = "createDate"
UPDATED = "updatedDate"
VERSION = "version"
#: The update part that counts a write: every write of a document increments its version in the same command.
BUMP = {"$inc": {VERSION: Int64(1)}}


def _stored(field_type: FieldType, value: Any) -> Any:
    # Ints always travel as BSON int64: Python sends small ints as int32, and a server that tells
    # int32 from int64 in its unique index (FerretDB's jsonb storage may) would then see two keys.
    return Int64(value) if field_type is FieldType.INT else value


def _same(stored: object, wanted: object) -> bool:
    """``stored`` (decoded BSON) is the key value ``wanted``: equal, and a bool only where a bool is wanted."""
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return stored is wanted
    if isinstance(wanted, int):
        return isinstance(stored, int) and stored == wanted  # Int64 is an int subclass
    return isinstance(stored, str) and stored == wanted


class Layout:
    """How records of one domain map to documents of its ``<domain>-items`` collection."""

    __slots__ = ("_fields", "_item", "collection", "index", "index_name", "item_field", "spec")

    def __init__(self, spec: DomainSpec) -> None:
        self.spec = spec
        self.collection = spec.collection_name
        self._fields = tuple((field.camel, field.type) for field in spec.key_fields)
        self.index = [(camel, 1) for camel, _ in self._fields]
        self.index_name = f"{spec.name}_items_uq"
        self.item_field = spec.item.camel if spec.item is not None else None
        self._item = spec.item.type if spec.item is not None else None

    # -- filters -----------------------------------------------------------------------------------

    def key_filter(self, key: Key) -> dict[str, Any]:
        """The equality filter on the unique key: it names exactly one document."""
        return {camel: _stored(ftype, value) for (camel, ftype), value in zip(self._fields, key, strict=True)}

    def scan_filter(self, context: Key, start: ItemKey | None, stop: ItemKey | None) -> dict[str, Any]:
        """The filter of one context, with the item key in ``[start, stop)``."""
        if self.item_field is None or self._item is None:
            raise TypeError(f"the {self.spec.name} domain has no item key to scan")
        query = {camel: _stored(ftype, value) for (camel, ftype), value in zip(self._fields, context, strict=False)}
        bounds: dict[str, Any] = {}
        if start is not None:
            bounds["$gte"] = _stored(self._item, start)
        if stop is not None:
            bounds["$lt"] = _stored(self._item, stop)
        if bounds:
            query[self.item_field] = bounds
        return query

    def after_filter(self, after: Key | None) -> dict[str, Any]:
        """The documents whose first ``len(after)`` key fields come after ``after`` in key order
        (``persist_core.backend.comes_after``): ``f0 > a0``, or ``f0 = a0 and f1 > a1``, ..."""
        if not after:
            return {}
        fields = self._fields[: len(after)]
        branches = []
        for depth, ((camel, ftype), value) in enumerate(zip(fields, after, strict=True)):
            equal = {c: _stored(t, v) for (c, t), v in zip(fields[:depth], after[:depth], strict=True)}
            branches.append({**equal, camel: {"$gt": _stored(ftype, value)}})
        return branches[0] if len(branches) == 1 else {"$or": branches}

    @property
    def key_sort(self) -> list[tuple[str, int]]:
        """Ascending by every key field: the listing order (strings by UTF-8 bytes, i.e. by code point)."""
        return [(camel, 1) for camel, _ in self._fields]

    @property
    def list_projection(self) -> dict[str, int]:
        """The fields a listing needs: the whole key and the record."""
        return {**self.scan_projection, **{camel: 1 for camel, _ in self._fields}}

    def key_of(self, doc: Mapping[str, Any]) -> Key:
        """The whole key a listed document carries, as the Python types of its fields."""
        out: list[Any] = []
        for camel, ftype in self._fields:
            value = doc.get(camel)
            if ftype is FieldType.INT and isinstance(value, int) and not isinstance(value, bool):
                out.append(int(value))
            elif (ftype is FieldType.BOOL and isinstance(value, bool)) or (
                ftype is FieldType.STR and isinstance(value, str)
            ):
                out.append(value)
            else:
                raise CorruptRecordError(f"document {doc.get('_id')!r} in {self.collection!r} has a bad key {value!r}")
        return tuple(out)

    def matches(self, doc: Mapping[str, Any], key: Key) -> bool:
        """Whether ``doc`` carries exactly ``key`` (the check of a document fetched by a cached ``_id``)."""
        return all(_same(doc.get(camel), value) for (camel, _), value in zip(self._fields, key, strict=True))

    # -- updates -----------------------------------------------------------------------------------

    def fields(self, record: Record, now: dt.datetime) -> dict[str, Any]:
        """The stored fields of ``record`` other than the key: payload, when, removed, updatedDate."""
        doc: dict[str, Any] = {
            PAYLOAD: record.payload,
            WHEN: None if record.when is None else Int64(record.when),
            UPDATED: now,
        }
        if self.spec.soft_delete:
            doc[REMOVED] = record.removed
        return doc

    def upsert(self, record: Record, now: dt.datetime) -> dict[str, Any]:
        """The update of a replacing write: ``$set`` the record, ``createDate`` only on insert."""
        return {"$set": self.fields(record, now), "$setOnInsert": {CREATED: now}, **BUMP}

    def document(self, key: Key, record: Record, now: dt.datetime, object_id: Any) -> dict[str, Any]:
        """A whole new document (first-write-wins inserts)."""
        return {"_id": object_id, **self.key_filter(key), CREATED: now, VERSION: Int64(1), **self.fields(record, now)}

    # -- reading -----------------------------------------------------------------------------------

    def record(self, doc: Mapping[str, Any]) -> Record:
        """The record a document holds; :class:`CorruptRecordError` if it is not one of ours."""
        payload = doc.get(PAYLOAD)
        when = doc.get(WHEN)
        removed = doc.get(REMOVED, False) if self.spec.soft_delete else False
        if (
            not isinstance(payload, str)
            or not (when is None or (isinstance(when, int) and not isinstance(when, bool)))
            or not isinstance(removed, bool)
        ):
            raise CorruptRecordError(
                f"document {doc.get('_id')!r} in {self.collection!r} is not a record of this library "
                f"(payload must be a JSON string, when an int or null, removed a bool)"
            )
        return Record(payload, None if when is None else int(when), removed)

    @staticmethod
    def version(doc: Mapping[str, Any]) -> int:
        """How many times the document was written (0 for a document written before versions existed)."""
        version = doc.get(VERSION, 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise CorruptRecordError(f"document {doc.get('_id')!r} has a bad version {version!r}")
        return int(version)

    def item_of(self, doc: Mapping[str, Any]) -> ItemKey:
        """The item key a scanned document carries, as the Python type of the field."""
        if self.item_field is None:
            raise TypeError(f"the {self.spec.name} domain has no item key")
        value = doc.get(self.item_field)
        if self._item is FieldType.INT and isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        if self._item is FieldType.STR and isinstance(value, str):
            return value
        raise CorruptRecordError(f"document {doc.get('_id')!r} in {self.collection!r} has a bad item key {value!r}")

    @property
    def scan_projection(self) -> dict[str, int]:
        """The fields a scan needs: the item key and the record."""
        projection = {"_id": 0, PAYLOAD: 1, WHEN: 1}
        if self.item_field is not None:
            projection[self.item_field] = 1
        if self.spec.soft_delete:
            projection[REMOVED] = 1
        return projection
