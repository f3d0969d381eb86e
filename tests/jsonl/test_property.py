"""Append-only, as a property: whatever batches are written (and deleted), by however many instances, with
reopens between them, the file holds each id once, with the value first written (since its last deletion), in
the order first written; every instance reads exactly that, whichever one compacted the file last."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persist_core.backends.jsonl import JsonlBackend
from persist_core.stores import CollectionStore, make_store
from persist_core.testing.strategies import json_values
from tests.jsonl.helpers import LOG, lines_of

_runs = itertools.count()

IDS = st.sampled_from(["a", "b", "c", "B", "é", "日本", "a/b", "10", "9", "~", " ", "x" * 80])
STEP = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 2), st.lists(st.tuples(IDS, json_values()), max_size=5)),
    st.tuples(st.just("reopen"), st.integers(0, 2), st.just([])),
)
#: Deletions: few ids and two instances, so that one instance often deletes again after its own compaction.
FEW_IDS = st.sampled_from(["a", "b", "c", "日本", "x" * 80])
CHURN = st.tuples(st.sampled_from(["write", "delete"]), st.integers(0, 1), st.lists(FEW_IDS, min_size=1, max_size=4))


def log_of(backend: JsonlBackend) -> CollectionStore:
    store = make_store(backend, LOG, {})
    assert isinstance(store, CollectionStore)
    return store


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, max_size=12))
def test_first_write_wins_in_file_and_index(tmp_path: Path, steps: list[tuple[str, int, list[Any]]]) -> None:
    path = tmp_path / f"run-{next(_runs)}.jsonl"
    backends = [JsonlBackend(path, durability="process") for _ in range(3)]
    for backend in backends:
        backend.open()
    model: dict[str, dict[str, Any]] = {}  # id -> first entry written, in first-written order
    try:
        for action, who, items in steps:
            backend = backends[who]
            if action == "reopen":
                backend.close()
                backend.open()
                continue
            entries = [{"id": entry_id, "value": value} for entry_id, value in items]
            log_of(backend).write(entries)
            for e in entries:
                model.setdefault(e["id"], e)
            for reader in backends:  # every instance agrees, whichever wrote
                assert log_of(reader).read() == [model[k] for k in sorted(model)]
        assert [json.loads(line) for line in lines_of(path)] == list(model.values())
    finally:
        for backend in backends:
            backend.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(CHURN, min_size=2, max_size=25))
def test_writes_and_deletions_by_two_instances_match_a_model(
    tmp_path: Path, steps: list[tuple[str, int, list[str]]]
) -> None:
    path = tmp_path / f"churn-{next(_runs)}.jsonl"
    backends = [JsonlBackend(path, durability="process") for _ in range(2)]
    model: dict[str, dict[str, Any]] = {}
    try:
        for n, (action, who, ids) in enumerate(steps):
            if action == "delete":
                existing = set(ids) & set(model)
                assert backends[who].delete_records(LOG, [(i,) for i in ids]) == len(existing)
                for entry_id in existing:
                    del model[entry_id]
            else:
                entries = [{"id": entry_id, "step": n} for entry_id in ids]
                log_of(backends[who]).write(entries)
                for e in entries:
                    model.setdefault(e["id"], e)
            for reader in backends:
                assert log_of(reader).read() == [model[k] for k in sorted(model)]
        assert [json.loads(line) for line in lines_of(path)] == list(model.values())
    finally:
        for backend in backends:
            backend.close()
