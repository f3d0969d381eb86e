"""A unit of work as SQL: the statements that apply it all or none, shared by both SQL backends (issue 13).

No I/O here. :func:`net_effects` folds a unit's writes into what they do to each row, so that a unit becomes
at most three statements per domain whatever its length, none of which touches a row twice: marking removed
(of rows that existed before the unit), inserting if absent, upserting. :func:`unit_steps` turns them into
the backend's own statements (:mod:`persist_sql._statements`: one-row, or batch for several rows). PostgreSQL
runs them as one statement, each a data-modifying ``WITH`` clause (:func:`one_statement`): atomic in
autocommit, one round trip. MariaDB and SQLite run them in one transaction (docs/decisions.md, "Units of work
on SQL").
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from persist_core.backend import Key, Record
from persist_core.domains import DomainSpec
from persist_core.errors import PersistError
from persist_core.units import Write, WriteOp
from persist_sql import _dialects, _rows
from persist_sql._dialects import Kind
from persist_sql._statements import DomainStatements, Sql

_by_key = operator.itemgetter(0)

__all__ = ["DomainEffects", "Step", "begin_statement", "net_effects", "one_statement", "unit_steps"]


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a unit: ``execute(sql, params)``, or ``executemany`` of ``params`` rows if ``many``."""

    sql: str
    params: Any
    many: bool


@dataclass(slots=True)
class DomainEffects:
    """What a unit does to the rows of one domain, in the order that gives the writes' result one by one:
    ``removes`` (keys whose row, if it existed before the unit, is marked removed), then ``inserts`` (stored
    if the key is absent), then ``puts`` (stored). A key is in ``puts`` or in the other two, never both."""

    domain: DomainSpec
    removes: list[Key] = field(default_factory=list)
    inserts: list[tuple[Key, Record]] = field(default_factory=list)
    puts: list[tuple[Key, Record]] = field(default_factory=list)


#: The net effect of a unit's writes on one key so far (see :func:`net_effects`): the op that decides it (PUT,
#: INSERT, or REMOVE when only removes came), the record a PUT or the first INSERT stores, and whether the row
#: as it was before the unit is to be marked removed (a remove before any put).
_State = tuple[WriteOp, Record | None, bool]


def _fold(state: _State | None, write: Write) -> _State:
    op = write.op
    if state is None or op is WriteOp.PUT:  # the first write of the key, or a put: replaces what came before
        return op, write.record, op is WriteOp.REMOVE
    last, record, remove_existing = state
    if op is WriteOp.INSERT:  # after removes only, the key may still be absent: this is the first insert
        return (op, write.record, remove_existing) if last is WriteOp.REMOVE else state
    if last is WriteOp.PUT:  # a remove of what the unit put: the record is stored removed
        return last, _removed(record), False
    if last is WriteOp.INSERT:  # stored removed if inserted; the row as it was, if it existed, is removed
        return last, _removed(record), True
    return state


def _removed(record: Record | None) -> Record:
    if record is None:  # pragma: no cover - a PUT or INSERT write always has its record
        raise PersistError("a unit's put or insert carries no record")
    return record if record.removed else Record(record.payload, record.when, True)


def net_effects(writes: Sequence[Write]) -> list[DomainEffects]:
    """Fold ``writes`` into their net effect on each domain, domains in name order (one lock order for all).

    Applied as :class:`DomainEffects` says, the result equals the writes applied one by one: a later put
    wins, the first insert wins (later ones and inserts after a put change nothing), a remove flags what a
    put or insert of the unit stored, or else the row that existed before it.

    Raises:
        PersistError: a remove in a domain without soft delete (before anything is written).
    """
    rows: dict[str, tuple[DomainSpec, dict[Key, _State]]] = {}
    for write in writes:
        domain = write.domain
        if write.op is WriteOp.REMOVE and not domain.soft_delete:
            raise PersistError(f"the {domain.name} domain has no soft delete")
        keyed = rows.get(domain.name)
        if keyed is None:
            keyed = rows[domain.name] = (domain, {})
        states = keyed[1]
        states[write.key] = _fold(states.get(write.key), write)
    effects = []
    for name in sorted(rows):
        domain, states = rows[name]
        effect = DomainEffects(domain)
        for key, (op, record, remove_existing) in states.items():
            if remove_existing:
                effect.removes.append(key)
            if op is WriteOp.PUT:
                effect.puts.append((key, _stored(record)))
            elif op is WriteOp.INSERT:
                effect.inserts.append((key, _stored(record)))
        effect.removes.sort()  # one lock order for every writer, as the batches' rows (_rows.batch_values)
        effects.append(effect)
    return effects


def _stored(record: Record | None) -> Record:
    if record is None:  # pragma: no cover - a PUT or INSERT write always has its record
        raise PersistError("a unit's put or insert carries no record")
    return record


def batch_step(st: DomainStatements, items: Sequence[tuple[Key, Record]], *, insert_only: bool) -> Step:
    """The statement of one batch write (upsert, or insert if absent), by :func:`_step_of`."""
    rows = _rows.batch_values(st, items, insert_only=insert_only)
    return _step_of(
        st.insert_new if insert_only else st.put, st.insert_new_arrays if insert_only else st.put_arrays, rows
    )


def _step_of(one: Sql, arrays: Sql | None, rows: Sequence[tuple[Any, ...]]) -> Step:
    """One row: the one-row statement (on PostgreSQL about 15 % faster in a unit than arrays of one element).
    More: over arrays where the dialect has them (PostgreSQL), else ``executemany`` of the one-row statement."""
    if len(rows) == 1:
        return Step(one.text, one.bind(rows[0]), many=False)
    if arrays is not None:
        return Step(arrays.text, arrays.bind(_rows.array_columns(rows)), many=False)
    return Step(one.text, [one.bind(row) for row in rows], many=True)


def _removes_step(st: DomainStatements, keys: list[Key]) -> Step:
    if st.mark_removed is None:  # pragma: no cover - net_effects refused it
        raise PersistError(f"the {st.spec.name} domain has no soft delete")
    return _step_of(st.mark_removed, st.mark_removed_arrays, keys)


def unit_steps(statements: dict[str, DomainStatements], writes: Sequence[Write]) -> list[Step]:
    """The statements that apply ``writes`` (:func:`net_effects`), in the order they must run."""
    steps = []
    for effect in net_effects(writes):
        st = statements[effect.domain.name]
        if effect.removes:
            steps.append(_removes_step(st, effect.removes))
        if effect.inserts:
            steps.append(_step_of(st.insert_new, st.insert_new_arrays, _rows_of(st, effect.inserts)))
        if effect.puts:
            steps.append(_step_of(st.put, st.put_arrays, _rows_of(st, effect.puts)))
    return steps


def _rows_of(st: DomainStatements, items: list[tuple[Key, Record]]) -> list[tuple[Any, ...]]:
    # Each key once (net_effects): only the key order of _rows.batch_values is needed.
    if len(items) > 1:
        items = sorted(items, key=_by_key)
    return [_rows.values_of(st, key, record) for key, record in items]


def one_statement(steps: Sequence[Step]) -> Step:
    """PostgreSQL: ``steps`` (none of them ``many``) as one statement, each a data-modifying ``WITH`` clause.

    The clauses run on one snapshot and do not see each other's rows: a removal reaches only the rows that
    existed before the unit, which is what :class:`DomainEffects` asks, and no clause touches a row that
    another one writes (PostgreSQL cannot change one row twice in a statement).
    """
    if any(step.many for step in steps):  # pragma: no cover - PostgreSQL's batches are arrays
        raise PersistError("a unit's statement cannot hold an executemany")
    if len(steps) == 1:
        return steps[0]
    text = "WITH " + ", ".join(f"w{i} AS ({step.sql})" for i, step in enumerate(steps)) + " SELECT 1"
    return Step(text, [value for step in steps for value in step.params], many=False)


def begin_statement(kind: Kind) -> str:
    """How a unit's transaction starts: SQLite takes the write lock up front (as its batches do), so that it
    waits for another writer within the busy timeout instead of failing when it would upgrade a read lock."""
    return _dialects.SQLITE_BATCH_BEGIN if kind == "sqlite" else "BEGIN"
