"""Every statement the backend runs, built with SQLAlchemy Core and compiled once per dialect.

A call never builds or compiles SQL: :func:`statements_for` compiles the statements of all 16 domains the
first time a dialect is seen and keeps the SQL text with the order of its positional parameters, so that a
call only puts its values into a tuple and hands text and tuple to the driver (which, with psycopg, then
prepares the statement on the server after a few executions).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

from persist_core.domains import DOMAINS, DomainSpec
from persist_sql import _dialects, _schema
from persist_sql._dialects import Kind

__all__ = [
    "DomainStatements",
    "LeaseStatements",
    "Sql",
    "compile_positional",
    "lease_statements_for",
    "statements_for",
]


@dataclass(frozen=True, slots=True)
class Sql:
    """Compiled SQL text and how to order a call's values into its positional parameters.

    Attributes:
        text: the SQL as the driver receives it.
        order: ``order[i]`` is the index, among the statement's source values, of the i-th parameter;
            ``None`` when the parameters are the source values in their own order.
    """

    text: str
    order: tuple[int, ...] | None

    def bind(self, values: Sequence[Any]) -> Sequence[Any]:
        """The parameters of one execution, from the statement's source values."""
        if self.order is None:
            return values
        return tuple(values[i] for i in self.order)


@dataclass(frozen=True, slots=True)
class DomainStatements:
    """The compiled statements of one domain's table.

    Source values, in this order: ``get``/``mark_removed``: the key; ``scan``: the context, then ``start``
    and/or ``stop`` when present; ``put``/``insert_new``: the key, ``payload``, ``when_ms`` and, for
    soft-delete domains, ``removed``; the ``*_arrays`` forms: one list per column of ``put``.
    """

    spec: DomainSpec
    get: Sql
    scans: tuple[Sql, Sql, Sql, Sql]  #: indexed by ``2 * (start given) + (stop given)``
    put: Sql
    insert_new: Sql
    put_arrays: Sql | None  #: batch upsert over array parameters (PostgreSQL), else ``None``
    insert_new_arrays: Sql | None
    mark_removed: Sql | None  #: soft-delete domains only
    soft_delete: bool
    #: ``mark_removed`` of many keys over one array per key column (PostgreSQL, soft-delete domains), else ``None``
    mark_removed_arrays: Sql | None = None


@dataclass(frozen=True, slots=True)
class LeaseStatements:
    """The compiled statements of the ownership leases (``persist_leases``).

    Source values: ``head``: none; ``claim``/``renew``: ``generation``, ``lease``; ``lease_of``: ``generation``;
    ``prune``: ``below``.
    """

    head: Sql  #: the newest generation and its lease
    claim: Sql  #: insert a new generation; its row count is 0 when the generation exists
    renew: Sql  #: replace the lease of one generation
    lease_of: Sql  #: the lease of one generation
    prune: Sql  #: delete the generations below one


def compile_positional(stmt: sa.ClauseElement, dialect: Dialect, source: Sequence[str]) -> Sql:
    """Compile ``stmt`` for ``dialect``; its parameters are bound from values named by ``source``, in order."""
    return _compile(stmt, dialect, source)


def _compile(
    stmt: sa.ClauseElement, dialect: Dialect, source: Sequence[str], *, arrays: bool = False, literal: bool = False
) -> Sql:
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True} if literal else {})
    names = compiled.positiontup if isinstance(compiled, SQLCompiler) else None
    if not dialect.positional or names is None:  # pragma: no cover - engines are built positional
        raise RuntimeError(f"expected a positional paramstyle, got {dialect.paramstyle!r}")
    order = tuple(source.index(name) for name in names)
    text = _dialects.array_parameters(dialect, compiled.string) if arrays else compiled.string
    return Sql(text, None if order == tuple(range(len(source))) else order)


def _domain(kind: Kind, dialect: Dialect, spec: DomainSpec) -> DomainStatements:
    table = _schema.table_for(kind, spec)
    key = [table.c[field.name] for field in spec.key_fields]
    context = key[: len(spec.context)]
    key_names = [f"k{i}" for i in range(len(key))]
    key_match = [column == sa.bindparam(name) for column, name in zip(key, key_names, strict=True)]
    state = [_dialects.payload_out(kind, table.c.payload), table.c.when_ms]
    if spec.soft_delete:
        state.append(table.c.removed)

    get = _compile(sa.select(*state).where(*key_match), dialect, key_names)

    scans: list[Sql] = []
    if spec.item is not None:
        item = key[-1]
        ctx_names = key_names[: len(context)]
        base = sa.select(item, *state).where(*key_match[: len(context)]).order_by(item)
        for has_start in (False, True):
            for has_stop in (False, True):
                stmt, source = base, list(ctx_names)
                if has_start:
                    stmt, source = stmt.where(item >= sa.bindparam("start")), [*source, "start"]
                if has_stop:
                    stmt, source = stmt.where(item < sa.bindparam("stop")), [*source, "stop"]
                scans.append(_compile(stmt, dialect, source))
    else:  # slot domains have no scan; keep the tuple's shape
        scans = [get] * 4

    columns = [field.name for field in spec.key_fields] + ["payload", "when_ms"]
    if spec.soft_delete:
        columns.append("removed")
    update = columns[len(key) :]
    one_row = _dialects.insert(kind, table).values({name: sa.bindparam(name) for name in columns})
    put = _compile(_dialects.upsert(kind, one_row, key, update), dialect, columns)
    insert_new = _compile(_dialects.insert_new(kind, one_row, key), dialect, columns)

    put_arrays = insert_new_arrays = None
    if _dialects.batch_by_arrays(kind):
        from_arrays = _dialects.insert(kind, table).from_select(columns, _unnest(table, columns))
        put_arrays = _compile(_dialects.upsert(kind, from_arrays, key, update), dialect, columns, arrays=True)
        insert_new_arrays = _compile(_dialects.insert_new(kind, from_arrays, key), dialect, columns, arrays=True)

    mark_removed = mark_removed_arrays = None
    if spec.soft_delete:
        remove = sa.update(table).values(removed=sa.true(), updated_at=sa.func.current_timestamp())
        mark_removed = _compile(remove.where(*key_match, table.c.removed == sa.false()), dialect, key_names)
        if _dialects.batch_by_arrays(kind):
            names = [column.name for column in key]
            keys = _arrays(table, names)
            matches = [column == keys.c[name] for column, name in zip(key, names, strict=True)]
            remove_many = remove.where(*matches, table.c.removed == sa.false())
            mark_removed_arrays = _compile(remove_many, dialect, names, arrays=True)

    return DomainStatements(
        spec=spec,
        get=get,
        scans=(scans[0], scans[1], scans[2], scans[3]),
        put=put,
        insert_new=insert_new,
        put_arrays=put_arrays,
        insert_new_arrays=insert_new_arrays,
        mark_removed=mark_removed,
        soft_delete=spec.soft_delete,
        mark_removed_arrays=mark_removed_arrays,
    )


def _unnest(table: sa.Table, columns: list[str]) -> sa.Select[Any]:
    """``SELECT ... FROM unnest(:col1, :col2, ...)``: a whole batch as one array parameter per column.

    One statement text serves every batch size, so PostgreSQL prepares it once; the payloads travel as
    ``text[]`` and become ``json`` in the select list.
    """
    rows = _arrays(table, columns)
    picked = [sa.cast(rows.c[n], table.c[n].type) if n == "payload" else rows.c[n] for n in columns]
    return sa.select(*picked)


def _arrays(table: sa.Table, columns: list[str]) -> Any:
    """``unnest(:col1, :col2, ...) AS batch(col1, col2, ...)``: one array parameter per column of ``table``."""
    arrays = []
    for name in columns:
        column_type = table.c[name].type
        element: sa.types.TypeEngine[Any] = sa.Text() if isinstance(column_type, (sa.String, sa.JSON)) else column_type
        arrays.append(sa.bindparam(name, type_=postgresql.ARRAY(element)))
    return sa.func.unnest(*arrays).table_valued(*columns).render_derived(name="batch")


def _leases(kind: Kind, dialect: Dialect) -> LeaseStatements:
    table = _schema.lease_table_for(kind)
    generation, lease = table.c.generation, table.c.lease
    names = ["generation", "lease"]
    head = sa.select(generation, lease).order_by(generation.desc()).limit(1)
    one_row = _dialects.insert(kind, table).values({name: sa.bindparam(name) for name in names})
    renew = (
        sa.update(table)
        .where(generation == sa.bindparam("g"))
        .values(lease=sa.bindparam("lease"), updated_at=sa.func.current_timestamp())
    )
    lease_of = sa.select(lease).where(generation == sa.bindparam("generation"))
    prune = sa.delete(table).where(generation < sa.bindparam("below"))
    return LeaseStatements(
        # LIMIT as a literal: the statement has no parameter and one text for every call.
        head=_compile(head, dialect, [], literal=True),
        claim=_compile(_dialects.insert_new(kind, one_row, [generation]), dialect, names),
        renew=_compile(renew, dialect, ["g", "lease"]),
        lease_of=_compile(lease_of, dialect, ["generation"]),
        prune=_compile(prune, dialect, ["below"]),
    )


_cache: dict[tuple[Any, ...], dict[str, DomainStatements]] = {}
_lease_cache: dict[tuple[Any, ...], LeaseStatements] = {}
_cache_lock = threading.Lock()


def statements_for(dialect: Dialect) -> dict[str, DomainStatements]:
    """The statements of every domain, by domain name, compiled for ``dialect`` (an initialised one).

    Compiled once per database family, driver, paramstyle and server version (MariaDB and MySQL spell
    ``ON DUPLICATE KEY UPDATE`` differently from one version to the next).
    """
    kind = _dialects.kind_of(dialect)
    key = (kind, dialect.driver, dialect.paramstyle, dialect.server_version_info)
    statements = _cache.get(key)
    if statements is None:
        with _cache_lock:
            statements = _cache.get(key)
            if statements is None:
                statements = {name: _domain(kind, dialect, spec) for name, spec in DOMAINS.items()}
                _cache[key] = statements
    return statements


def lease_statements_for(dialect: Dialect) -> LeaseStatements:
    """The statements of the ownership leases, compiled for ``dialect`` (once per key, as :func:`statements_for`)."""
    kind = _dialects.kind_of(dialect)
    key = (kind, dialect.driver, dialect.paramstyle, dialect.server_version_info)
    statements = _lease_cache.get(key)
    if statements is None:
        with _cache_lock:
            statements = _lease_cache.get(key)
            if statements is None:
                statements = _leases(kind, dialect)
                _lease_cache[key] = statements
    return statements
