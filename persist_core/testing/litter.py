"""Storage litter clauses of the contract kit (CONTRACTS.md 6.1: temp files are swept after a grace period, and
listing ignores them).

A write that dies halfway leaves something behind: a temp file of an atomic write, a torn last line. Two
faults follow from it. Reads that take the litter for a record (a temp file listed as an item); and a start-up
sweep that removes the litter of writes still under way in another process, which then fail or vanish. The
first is checked through the :meth:`~persist_core.backend.Backend.leave_interrupted_write` hook (a backend
without intermediate state skips it); the second with a real second process writing while the backend is opened
again and again.
"""

from __future__ import annotations

import json
import multiprocessing
import queue as queue_module
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from persist_core.backend import Backend, Key
from persist_core.domains import DOMAINS, DomainSpec
from persist_core.testing.samples import context_for, item_for, record_for
from persist_core.validation import check_context

__all__ = ["LitterClauses", "write_while_reopened"]

_BACKEND_LEVEL = pytest.mark.persist_backend_level
#: The domains the writing process uses, the first one the backend stores: a plain upsert (a domain whose writes
#: exclude each other, like the file backend's soft-delete folder lock, would hide the race), an append. Item
#: domains, so that the reopened backends write beside the writer: a sweep may run per folder at a process's
#: first write there, not at open.
_WRITER_DOMAINS = ("partial", "log", "measure")


def _key(spec: DomainSpec, namespace: str, variant: int) -> Key:
    context = check_context(spec, context_for(spec, 1, namespace))
    item = item_for(spec, variant)
    if isinstance(item, str):
        item = f"{namespace}{item}"
    return context if item is None else (*context, item)


def _visible(backend: Backend, spec: DomainSpec, keys: list[Key]) -> dict[Key, Any]:
    """What reads show under ``keys`` (``get``, and for item domains a ``scan`` of each context)."""
    seen: dict[Key, Any] = {}
    for key in keys:
        record = backend.get(spec, key)
        seen[key] = None if record is None else json.loads(record.payload)["v"]
    if spec.item is not None:
        for context in dict.fromkeys(key[:-1] for key in keys):
            for item, record in backend.scan(spec, context):
                seen[(*context, item)] = json.loads(record.payload)["v"]
    return seen


class LitterClauses:
    """The storage litter clauses (mixed into ``BackendContractTests``)."""

    @_BACKEND_LEVEL
    @pytest.mark.parametrize("name", list(DOMAINS))
    def test_interrupted_write_is_never_read(
        self, backend_factory: Callable[[], Backend], backend: Backend, name: str, namespace: str
    ) -> None:
        """An interrupted write (temp file, torn line) is never read or listed, also after a reopen, and blocks
        no later write of the same key."""
        spec = DOMAINS[name]
        if not backend.capabilities.supports(name):
            pytest.skip(f"the backend does not store the {name!r} domain (Capabilities.domains)")
        kept, torn = _key(spec, namespace, 0), _key(spec, namespace, 1)
        if spec.item is None:
            kept = torn  # one slot per context: the interrupted write goes over the stored record
        backend.insert_many(spec, [(kept, record_for(spec, kept, {"v": "kept"}, when=5))])
        if not backend.leave_interrupted_write(spec, torn, record_for(spec, torn, {"v": "torn"}, when=6)):
            pytest.skip("the backend leaves nothing behind an interrupted write (leave_interrupted_write)")
        expected: dict[Key, Any] = {kept: "kept"}
        if torn != kept:
            expected[torn] = None
        assert _visible(backend, spec, [kept, torn]) == expected, "an interrupted write is visible"
        if backend.capabilities.shared_between_processes:
            again = backend_factory()
            again.open()
            try:
                assert _visible(again, spec, [kept, torn]) == expected, "an interrupted write is visible after a reopen"
            finally:
                again.close()
        record = record_for(spec, torn, {"v": "written"}, when=7)
        if spec.first_write_wins:  # an item domain: torn is a new key
            assert backend.insert_many(spec, [(torn, record)]) == 1, "an interrupted write blocked an insert of its key"
        else:
            backend.put(spec, torn, record)
        assert _visible(backend, spec, [kept, torn]) == {**expected, torn: "written"}, "a write after the litter"

    @_BACKEND_LEVEL
    @pytest.mark.persist_capabilities(shared_between_processes=True)
    def test_open_never_sweeps_the_writes_of_another_process(
        self, backend_factory: Callable[[], Backend], backend: Backend, namespace: str
    ) -> None:
        """A process writing in a loop while this one opens the backend again and again and writes beside it
        (start-up work, a sweep of temp files at open or at the first write in a folder) loses no write: a sweep
        spares temp files younger than its grace period, which may belong to a write under way elsewhere."""
        self.require(backend, shared_between_processes=True)  # type: ignore[attr-defined]
        names = [n for n in _WRITER_DOMAINS if backend.capabilities.supports(n)]
        if not names:
            pytest.skip(f"the backend stores none of {', '.join(_WRITER_DOMAINS)} (Capabilities.domains)")
        report = write_while_reopened(backend_factory, names[0], namespace, seconds=1.0)
        assert report.error is None, f"the writing process failed while the backend was reopened:\n{report.error}"
        assert report.opens > 0, f"the race did not run: {report}"
        assert report.writes > 0, f"the race did not run: {report}"
        spec = DOMAINS[names[0]]
        missing = [key for key in _writer_keys(spec, namespace, report.writes) if backend.get(spec, key) is None]
        assert missing == [], f"{len(missing)} of {report.writes} acknowledged writes vanished: {missing[:3]}"


class WriterReport:
    """What :func:`write_while_reopened` saw: acknowledged writes, opens meanwhile, the writer's error."""

    def __init__(self, writes: int, opens: int, error: str | None) -> None:
        self.writes, self.opens, self.error = writes, opens, error

    def __repr__(self) -> str:
        return f"WriterReport(writes={self.writes}, opens={self.opens}, error={self.error!r:.200})"


def _writer_keys(spec: DomainSpec, namespace: str, count: int, who: str = "w") -> list[Key]:
    """The keys of the first ``count`` writes of the writer (or of the reopened backends: ``who="p"``)."""
    context = _key(spec, namespace, 0)[:-1]
    return [(*context, f"{namespace}{who}{n:06d}") for n in range(count)]


def _write(backend: Backend, spec: DomainSpec, key: Key, n: int) -> None:
    record = record_for(spec, key, {"n": n, "pad": "x" * 256}, when=n)
    if spec.first_write_wins:
        backend.insert_many(spec, [(key, record)])
    else:
        backend.put(spec, key, record)


def _write_loop(
    factory: Callable[[], Backend], name: str, namespace: str, seconds: float, messages: Any
) -> None:  # pragma: no cover - runs in the child process
    writes = 0
    try:
        backend = factory()
        backend.open()
        spec = DOMAINS[name]
        messages.put(("started", 0))
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                _write(backend, spec, _writer_keys(spec, namespace, writes + 1)[-1], writes)
                writes += 1
        finally:
            backend.close()
        messages.put(("done", writes))
    except BaseException:
        messages.put(("error", f"after {writes} writes:\n{traceback.format_exc()}"))


def write_while_reopened(
    factory: Callable[[], Backend], name: str, namespace: str, *, seconds: float = 1.0, timeout: float = 60.0
) -> WriterReport:
    """Run a child process that writes records of domain ``name`` (an item domain) for ``seconds`` while this
    process opens new backends from ``factory`` in a loop, writes one record beside the child's with each and
    closes it; the child's error comes back at once, with its traceback."""
    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()
    child = ctx.Process(target=_write_loop, args=(factory, name, namespace, seconds, messages))
    child.start()
    opens = 0
    writes, error = 0, None
    try:
        kind, value = messages.get(timeout=timeout)
        if kind == "error":
            return WriterReport(0, 0, value)
        while True:
            reopened = factory()
            reopened.open()
            try:
                _write(reopened, DOMAINS[name], _writer_keys(DOMAINS[name], namespace, opens + 1, who="p")[-1], opens)
            finally:
                reopened.close()
            opens += 1
            try:
                kind, value = messages.get_nowait()
            except queue_module.Empty:
                if not child.is_alive() and messages.empty():
                    error = f"the writing process died (exit code {child.exitcode})"
                    break
                continue
            if kind == "error":
                error = value
            else:
                writes = value
            break
    finally:
        child.join(timeout=timeout)
        if child.is_alive():
            child.kill()
            child.join()
    return WriterReport(writes, opens, error)
