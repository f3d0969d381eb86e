"""The fold of a unit's writes into their net effect per row (persist_sql._units), against the writes one by one.

No database: the statements the SQL backends run for a unit are the fold's three groups per domain, so the
fold is checked here on its own, from any stored state, with writes of one key repeated in every order.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persist_core.backend import Key, Record
from persist_core.domains import DOMAINS
from persist_core.errors import PersistError
from persist_core.units import Write, WriteOp
from persist_sql import _units

#: Two domains with soft delete and one without, so that a fold keeps domains apart.
_DOMAINS = [DOMAINS["measure"], DOMAINS["memory"], DOMAINS["log"]]

State = dict[tuple[str, Key], Record]


def _one_by_one(state: State, writes: list[Write]) -> State:
    """What the backend calls do one at a time (CONTRACTS.md: put replaces, insert keeps the first, remove
    flags an existing record)."""
    state = dict(state)
    for write in writes:
        at = (write.domain.name, write.key)
        if write.op is WriteOp.PUT and write.record is not None:
            state[at] = write.record
        elif write.op is WriteOp.INSERT and write.record is not None:
            state.setdefault(at, write.record)
        elif at in state:
            old = state[at]
            state[at] = Record(old.payload, old.when, True)
    return state


def _net(state: State, writes: list[Write]) -> State:
    """What the unit's statements do, each group at once in the order the backends run them."""
    state = dict(state)
    for effect in _units.net_effects(writes):
        name = effect.domain.name
        before = dict(state)  # PostgreSQL's WITH clauses see the state before the statement
        for key in effect.removes:
            if (name, key) in before:
                old = before[(name, key)]
                state[(name, key)] = Record(old.payload, old.when, True)
        for key, record in effect.inserts:
            if (name, key) not in before:
                state[(name, key)] = record
        for key, record in effect.puts:
            state[(name, key)] = record
    return state


def _keys(domain_index: int, n: int) -> Key:
    domain = _DOMAINS[domain_index]
    return tuple(f"k{n}" for _ in domain.key_fields)


_record = st.builds(Record, st.sampled_from(["1", "2", "3"]), st.sampled_from([None, 5]), st.booleans())


@st.composite
def _cases(draw: st.DrawFn) -> tuple[State, list[Write]]:
    state: State = {}
    for index, domain in enumerate(_DOMAINS):
        for n in draw(st.sets(st.integers(0, 2))):
            record = draw(_record)
            state[(domain.name, _keys(index, n))] = record if domain.soft_delete else Record(record.payload)
    writes = []
    for _ in range(draw(st.integers(0, 14))):
        index = draw(st.integers(0, len(_DOMAINS) - 1))
        domain = _DOMAINS[index]
        ops = [WriteOp.PUT, WriteOp.INSERT, WriteOp.REMOVE] if domain.soft_delete else [WriteOp.PUT, WriteOp.INSERT]
        op = draw(st.sampled_from(ops))
        record = draw(_record)
        if not domain.soft_delete:
            record = Record(record.payload)
        key = _keys(index, draw(st.integers(0, 2)))
        writes.append(Write(domain, op, key, None if op is WriteOp.REMOVE else record))
    return state, writes


@given(_cases())
def test_net_effects_end_as_the_writes_one_by_one(case: tuple[State, list[Write]]) -> None:
    state, writes = case
    assert _net(state, writes) == _one_by_one(state, writes)


@given(_cases())
def test_net_effects_touch_each_row_once_but_a_removal_of_what_existed(case: tuple[State, list[Write]]) -> None:
    """A key is put, or inserted and/or removed: never put and anything else (one statement may not change a
    row twice); the groups are in key order (one lock order for every writer)."""
    for effect in _units.net_effects(case[1]):
        put = [key for key, _ in effect.puts]
        inserted = [key for key, _ in effect.inserts]
        assert not set(put) & (set(inserted) | set(effect.removes))
        assert len(set(put)) == len(put) and len(set(inserted)) == len(inserted)
        assert effect.removes == sorted(set(effect.removes))


def test_a_remove_in_a_domain_without_soft_delete_is_refused_before_any_write() -> None:
    writes = [
        Write(DOMAINS["measure"], WriteOp.PUT, ("b", "k"), Record("1")),
        Write(DOMAINS["log"], WriteOp.REMOVE, ("k",)),
    ]
    with pytest.raises(PersistError, match="no soft delete"):
        _units.net_effects(writes)


def test_domains_come_in_name_order_whatever_the_order_of_the_writes() -> None:
    writes = [Write(spec, WriteOp.PUT, _keys(i, 0), Record("1")) for i, spec in reversed(list(enumerate(_DOMAINS)))]
    assert [effect.domain.name for effect in _units.net_effects(writes)] == sorted(spec.name for spec in _DOMAINS)
