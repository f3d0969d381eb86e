"""The statements of listing and deletion (CONTRACTS.md 3.8), shared by both SQL backends.

Off the hot path, so they are compiled on first use (per dialect, domain and cursor width) rather than with
the others at open. A page is one query: ``WHERE (key columns) > (cursor) ORDER BY key LIMIT n``, a
row-value comparison that PostgreSQL, MariaDB/MySQL and SQLite (3.15+) all evaluate in the key's order,
which is the listing order because the text key columns compare byte-wise (``_schema``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from persist_core.backend import Key, Record
from persist_core.domains import DomainSpec, FieldType
from persist_sql import _dialects, _rows, _schema
from persist_sql._dialects import Kind
from persist_sql._statements import Sql, compile_positional

__all__ = ["contexts_sql", "delete_sql", "keyed_records", "page", "records_sql", "rows_of", "with_limit"]

_cache: dict[tuple[str, str, str, int], Sql] = {}
_lock = threading.Lock()


def _cached(kind: Kind, dialect: Dialect, spec: DomainSpec, what: str, width: int) -> Sql:
    cache_key = (f"{kind}:{dialect.name}:{dialect.driver}", spec.name, what, width)
    sql = _cache.get(cache_key)
    if sql is None:
        sql = _build(kind, dialect, spec, what, width)
        with _lock:
            _cache[cache_key] = sql
    return sql


def _build(kind: Kind, dialect: Dialect, spec: DomainSpec, what: str, width: int) -> Sql:
    table = _schema.table_for(kind, spec)
    key = [table.c[field.name] for field in spec.key_fields]
    names = [f"a{i}" for i in range(width)]
    cursor = [sa.tuple_(*key[:width]) > sa.tuple_(*(sa.bindparam(n) for n in names))] if width else []
    if what == "delete":
        match = [column == sa.bindparam(f"k{i}") for i, column in enumerate(key)]
        return compile_positional(sa.delete(table).where(*match), dialect, [f"k{i}" for i in range(len(key))])
    if what == "contexts":
        context = key[: len(spec.context)]
        stmt = sa.select(*context, sa.func.count()).select_from(table).where(*cursor)
        stmt = stmt.group_by(*context).order_by(*context)
        return compile_positional(stmt, dialect, names)
    state = [_dialects.payload_out(kind, table.c.payload), table.c.when_ms]
    if spec.soft_delete:
        state.append(table.c.removed)
    return compile_positional(sa.select(*key, *state).where(*cursor).order_by(*key), dialect, names)


def records_sql(kind: Kind, dialect: Dialect, spec: DomainSpec, after: Key | None) -> Sql:
    """A page of records after the cursor ``after`` (its width picks the statement); add :func:`with_limit`."""
    return _cached(kind, dialect, spec, "records", 0 if after is None else len(after))


def contexts_sql(kind: Kind, dialect: Dialect, spec: DomainSpec, after: Key | None) -> Sql:
    """A page of ``(context..., count)`` rows after the cursor ``after``; add :func:`with_limit`."""
    return _cached(kind, dialect, spec, "contexts", 0 if after is None else len(after))


def page(kind: Kind, dialect: Dialect, spec: DomainSpec, what: str, after: Key | None, limit: int) -> tuple[str, Any]:
    """The SQL text and parameters of one page of ``what`` (``"records"`` or ``"contexts"``) after ``after``."""
    sql = _cached(kind, dialect, spec, what, 0 if after is None else len(after))
    return with_limit(sql, limit), sql.bind(after or ())


def rows_of(spec: DomainSpec, what: str, rows: Sequence[Sequence[Any]]) -> Any:
    """A page's rows as :meth:`Backend.list_records` or :meth:`Backend.list_contexts` returns them."""
    return keyed_records(spec, rows) if what == "records" else counted_contexts(spec, rows)


def delete_sql(kind: Kind, dialect: Dialect, spec: DomainSpec) -> Sql:
    """``DELETE`` of one record by its whole key (run once per key, as one batch)."""
    return _cached(kind, dialect, spec, "delete", 0)


def with_limit(sql: Sql, limit: int) -> str:
    """The statement's text with ``LIMIT`` (an int from our code: the same syntax in the three dialects)."""
    if type(limit) is not int or limit < 1:
        raise ValueError(f"limit must be a positive int, not {limit!r}")
    return f"{sql.text} LIMIT {limit}"


def _key_of(spec: DomainSpec, row: Sequence[Any], width: int) -> Key:
    # MariaDB and SQLite give booleans back as 0/1.
    return tuple(
        bool(value) if field.type is FieldType.BOOL else value
        for field, value in zip(spec.key_fields[:width], row, strict=False)
    )


def keyed_records(spec: DomainSpec, rows: Sequence[Sequence[Any]]) -> list[tuple[Key, Record]]:
    """``(key, record)`` pairs of a page of :func:`records_sql` rows."""
    width = len(spec.key_fields)
    return [(_key_of(spec, row, width), _rows.record_of(row, width, spec.soft_delete)) for row in rows]


def counted_contexts(spec: DomainSpec, rows: Sequence[Sequence[Any]]) -> list[tuple[Key, int]]:
    """``(context, count)`` pairs of a page of :func:`contexts_sql` rows."""
    width = len(spec.context)
    # A domain without context fields (log) counts its whole table: one row, 0 when the table is empty.
    return [(_key_of(spec, row, width), int(row[width])) for row in rows if row[width]]
