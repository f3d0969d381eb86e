"""A unit of work as SQL: the statements that apply it all or none, shared by both SQL backends (issue 13).

No I/O here. :func:`net_effects` folds a unit's writes into what they do to each row, so that a unit becomes
at most three statements per domain whatever its length, none of which touches a row twice: marking removed
(of rows that existed before the unit), inserting if absent, upserting. :func:`unit_steps` turns them into
the backend's own batch statements (:mod:`persist_sql._statements`). PostgreSQL runs them as one statement,
each a data-modifying ``WITH`` clause (:func:`one_statement`): atomic in autocommit, one round trip. MariaDB
and SQLite run them in one transaction (docs/decisions.md, "Units of work on SQL").
"""

from __future__ import annotations

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


class _Row:
    """The net effect of a unit's writes on one key so far (see :func:`net_effects`)."""

    __slots__ = ("op", "record", "remove_existing")

    def __init__(self) -> None:
        self.op: WriteOp | None = None  #: PUT, INSERT or REMOVE (only removes so far)
        self.record: Record | None = None  #: the record a PUT or the first INSERT stores
        self.remove_existing = False  #: a remove before any put: the row as it was before the unit is removed

    def apply(self, write: Write) -> None:
        record = self.record
        if write.op is WriteOp.PUT:  # replaces whatever came before
            self.op, self.record, self.remove_existing = WriteOp.PUT, write.record, False
        elif write.op is WriteOp.INSERT:
            if self.op is None or self.op is WriteOp.REMOVE:  # the key may still be absent: the first insert
                self.op, self.record = WriteOp.INSERT, write.record
        elif self.op is WriteOp.PUT:  # the key exists now: the record stored is removed
            self.record = _removed(record)
        else:  # a row that existed before the unit is removed; an inserted one is stored removed
            self.remove_existing = True
            self.op = self.op or WriteOp.REMOVE
            if self.op is WriteOp.INSERT:
                self.record = _removed(record)


def _removed(record: Record | None) -> Record:
    if record is None:  # pragma: no cover - a PUT or INSERT row always has its record
        raise PersistError("a unit's row lost its record")
    return record if record.removed else Record(record.payload, record.when, True)


def net_effects(writes: Sequence[Write]) -> list[DomainEffects]:
    """Fold ``writes`` into their net effect on each domain, domains in name order (one lock order for all).

    Applied as :class:`DomainEffects` says, the result equals the writes applied one by one: a later put
    wins, the first insert wins (later ones and inserts after a put change nothing), a remove flags what a
    put or insert of the unit stored, or else the row that existed before it.

    Raises:
        PersistError: a remove in a domain without soft delete (before anything is written).
    """
    rows: dict[str, tuple[DomainSpec, dict[Key, _Row]]] = {}
    for write in writes:
        if write.op is WriteOp.REMOVE and not write.domain.soft_delete:
            raise PersistError(f"the {write.domain.name} domain has no soft delete")
        if write.op is not WriteOp.REMOVE and write.record is None:  # pragma: no cover - collectors never do
            raise PersistError(f"a {write.op.value} write of {write.domain.name} carries no record")
        keyed = rows.get(write.domain.name)
        if keyed is None:
            keyed = rows[write.domain.name] = (write.domain, {})
        row = keyed[1].get(write.key)
        if row is None:
            row = keyed[1][write.key] = _Row()
        row.apply(write)
    effects = []
    for name in sorted(rows):
        domain, by_key = rows[name]
        effect = DomainEffects(domain)
        for key, row in by_key.items():
            if row.remove_existing:
                effect.removes.append(key)
            if row.op is WriteOp.PUT and row.record is not None:
                effect.puts.append((key, row.record))
            elif row.op is WriteOp.INSERT and row.record is not None:
                effect.inserts.append((key, row.record))
        effect.removes.sort()  # one lock order for every writer, as the batches' rows (_rows.batch_values)
        effects.append(effect)
    return effects


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
            steps.append(batch_step(st, effect.inserts, insert_only=True))
        if effect.puts:
            steps.append(batch_step(st, effect.puts, insert_only=False))
    return steps


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
