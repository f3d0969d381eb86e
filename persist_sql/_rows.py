"""Rows in and out of the precompiled statements: the pure part of an operation, shared by both SQL backends.

:class:`persist_sql.SqlBackend` (sync) and :class:`persist_sql.AsyncSqlBackend` (asyncio, PostgreSQL) run the
same statements (:mod:`persist_sql._statements`); what goes into them and what comes out is decided here,
once: no I/O, no driver.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

from persist_core.backend import ItemKey, Key, Record
from persist_sql._statements import DomainStatements

__all__ = ["array_columns", "batch_values", "record_of", "scanned", "values_of"]

_by_key = operator.itemgetter(0)


def record_of(row: Sequence[Any], offset: int, soft_delete: bool) -> Record:
    """The record in ``row`` from column ``offset`` on: payload, ``when_ms`` and, for soft delete, ``removed``."""
    if soft_delete:
        return Record(row[offset], row[offset + 1], bool(row[offset + 2]))
    return Record(row[offset], row[offset + 1])


def values_of(st: DomainStatements, key: Key, record: Record) -> tuple[Any, ...]:
    """The source values of one row of ``put``/``insert_new``: the key, payload, ``when_ms`` (and ``removed``)."""
    if st.soft_delete:
        return (*key, record.payload, record.when, record.removed)
    return (*key, record.payload, record.when)


def scanned(rows: Iterable[Sequence[Any]], soft_delete: bool, start: int | None = None, step: int = 1) -> list[
    tuple[ItemKey, Record]
]:  # fmt: skip
    """The ``(item, record)`` pairs of a range query's rows; with ``start``, every ``step``-th item from it."""
    if start is not None and step != 1:
        rows = [row for row in rows if (row[0] - start) % step == 0]
    return [(row[0], record_of(row, 1, soft_delete)) for row in rows]


def batch_values(
    st: DomainStatements, items: Sequence[tuple[Key, Record]], *, insert_only: bool
) -> list[tuple[Any, ...]]:
    """The source values of a batch's rows, in key order.

    An upsert batch keeps the last record of a key given twice (as ``put`` one after the other would, and
    PostgreSQL refuses to update one row twice in one statement). Rows are sorted by key so that two batches
    that share keys lock them in the same order and cannot deadlock each other.
    """
    if not insert_only:
        items = list(dict(items).items())
    return [values_of(st, key, record) for key, record in sorted(items, key=_by_key)]


def array_columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """The rows as one list per column: the parameters of the ``unnest`` batch statements (PostgreSQL)."""
    return [list(column) for column in zip(*rows, strict=True)]
