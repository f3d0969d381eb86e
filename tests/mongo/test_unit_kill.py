"""Units of work on the Mongo backend (issue 13): SIGKILL leaves every unit all or none, and the journal a killed
writer leaves is completed by the next open, on both faces, without undoing a newer write (docs/mongo.md)."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pymongo
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo import monitoring

from persist_core.backend import Key, Record
from persist_core.domains import DOMAINS
from persist_core.errors import BackendTimeoutError, CorruptRecordError, UnitOfWorkError
from persist_core.ownership import _process_start
from persist_core.testing.units import run_unit_kill_test
from persist_core.units import Write, WriteOp
from persist_mongo import AsyncMongoBackend, MongoBackend
from persist_mongo import _units as units
from tests.mongo import servers
from tests.proxy import FreezableProxy

#: The issue's count for Mongo; about 40 s on the shared FerretDB.
KILLS = 200

_CTX = ("UNIT/USDT", "unit-test", "kit")


@pytest.fixture
def database(class_database: servers.ScratchDatabase) -> servers.ScratchDatabase:
    class_database.wipe(servers.shared_redis_url())
    return class_database


@pytest.fixture
def factory(database: servers.ScratchDatabase) -> Callable[[], MongoBackend]:
    return functools.partial(MongoBackend.from_url, database.url, redis_url=servers.shared_redis_url())


@pytest.fixture
def raw(database: servers.ScratchDatabase) -> Iterator[Any]:
    """The test database through plain pymongo: what is stored, without opening (and so replaying) a backend."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(database.url, serverSelectionTimeoutMS=5000)
    yield client[database.name]
    client.close()


def test_sigkill_leaves_each_unit_all_or_none(factory: Callable[[], MongoBackend]) -> None:
    """200 forked writers of five-domain units (with a soft delete), each killed at a random point: after each,
    a freshly opened backend sees the last unit whole or not at all, and no acknowledged unit lost."""
    started = time.monotonic()
    reports = run_unit_kill_test(factory, rounds=KILLS, namespace="kill-", seed=13)
    assert [p for r in reports for p in r.problems] == []
    assert all(r.acked >= 0 for r in reports)
    # Most kills land inside a unit, after its journal was inserted: the next open completed it.
    assert sum(r.found == r.acked + 1 for r in reports) > 0
    print(f"{KILLS} kills in {time.monotonic() - started:.1f} s")


def _writes(tag: str) -> list[Write]:
    """A unit of five writes: two slots, a storage row, a log entry (first write wins) and a bucket remove."""
    return [
        Write(DOMAINS["signal"], WriteOp.PUT, _CTX, Record(json.dumps({"tag": tag}))),
        Write(DOMAINS["storage"], WriteOp.PUT, (False, "s-1"), Record(json.dumps({"tag": tag}))),
        Write(DOMAINS["log"], WriteOp.INSERT, (f"log-{tag}",), Record(json.dumps({"tag": tag}), when=1)),
        Write(DOMAINS["measure"], WriteOp.REMOVE, ("bucket", "k")),
        Write(DOMAINS["strategy"], WriteOp.PUT, _CTX, Record(json.dumps({"tag": tag}))),
    ]


class _KillAfter(monitoring.CommandListener):
    """SIGKILLs its own process once ``commands`` commands (the first is the unit's journal insert) have been
    acknowledged after it was armed: a crash at that point of a unit, whichever thread runs the command."""

    def __init__(self, commands: int) -> None:
        self.commands = commands
        self.armed = False
        self._acked = itertools.count(1)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if self.armed and next(self._acked) >= self.commands:
            os.kill(os.getpid(), signal.SIGKILL)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _die_after(url: str, writes: list[Write], commands: int) -> None:
    """Forked child: apply a unit on a backend of its own and die after ``commands`` acknowledged commands."""
    killer = _KillAfter(commands)
    backend = MongoBackend.from_url(
        url, redis_url=servers.shared_redis_url(), client_options={"event_listeners": [killer]}
    )
    backend.open()
    killer.armed = True
    backend.apply_unit(writes)
    raise AssertionError("the unit ended before its writer was killed")


def _killed_midway(url: str, writes: list[Write], commands: int) -> None:
    proc = multiprocessing.get_context("fork").Process(target=_die_after, args=(url, writes, commands))
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL


def _stored_new(raw: Any) -> int:
    """How many of :func:`_writes`'s five writes the storage holds, read without opening a backend."""
    new = json.dumps({"tag": "new"})
    names = ("signal", "storage", "log", "strategy")
    found = sum(raw[DOMAINS[name].collection_name].count_documents({"payload": new}) for name in names)
    return found + raw[DOMAINS["measure"].collection_name].count_documents({"removed": True})


def _payload(backend: MongoBackend, name: str, key: Key) -> Any:
    record = backend.get(DOMAINS[name], key)
    return None if record is None else (json.loads(record.payload), record.removed)


def _state(backend: MongoBackend) -> list[Any]:
    return [
        _payload(backend, "signal", _CTX),
        _payload(backend, "storage", (False, "s-1")),
        _payload(backend, "log", ("log-new",)),
        _payload(backend, "measure", ("bucket", "k")),
        _payload(backend, "strategy", _CTX),
    ]


def _seed(backend: MongoBackend) -> None:
    """The state before the unit: old slots and storage row, a live bucket entry; cached reads of each."""
    for name, key in (("signal", _CTX), ("storage", (False, "s-1")), ("strategy", _CTX)):
        backend.put(DOMAINS[name], key, Record(json.dumps({"tag": "old"})))
    backend.put(DOMAINS["measure"], ("bucket", "k"), Record("1"))
    assert _state(backend) == [({"tag": "old"}, False)] * 2 + [None, (1, False), ({"tag": "old"}, False)]


_NEW = [({"tag": "new"}, False)] * 3 + [(1, True), ({"tag": "new"}, False)]


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_killed_writers_journal_is_completed_by_the_next_open(
    factory: Callable[[], MongoBackend], raw: Any, face: str
) -> None:
    """The writer dies in the middle of its unit: the journal stays, and the next open (of either face)
    completes the unit; reads through the cache then see every write."""
    reader = factory()
    reader.open()  # opened (and so replayed) before the kill: the async face's own open must replay
    try:
        _seed(reader)
        # Killed once the journal and two more commands are acknowledged: the unit's domains go at the same time,
        # so any number of its writes may have reached the server, but not the journal's delete.
        _killed_midway(reader.settings.url, _writes("new"), commands=3)
        [journal] = raw[units.JOURNAL_COLLECTION].find().to_list()
        assert journal["pid"] != os.getpid() and len(journal["writes"]) == 5
        if face == "sync":
            fresh = factory()
            fresh.open()
            fresh.close()
        else:
            native = AsyncMongoBackend(reader.url, sync=reader)

            async def open_and_close() -> None:
                await native.open()
                await native.close()

            asyncio.run(open_and_close())
        assert raw[units.JOURNAL_COLLECTION].count_documents({}) == 0
        assert _state(reader) == _NEW
    finally:
        reader.close()


def test_replay_never_undoes_a_newer_write(factory: Callable[[], MongoBackend], raw: Any) -> None:
    """A write made after the dead writer's unit began (by a backend opened before it died, so without replaying)
    stays: the replay completes the unit's other writes and skips that key."""
    survivor = factory()
    survivor.open()
    try:
        _seed(survivor)
        _killed_midway(survivor.settings.url, _writes("new"), commands=1)  # the journal only
        assert _stored_new(raw) == 0
        survivor.put(DOMAINS["strategy"], _CTX, Record(json.dumps({"tag": "newer"})))
        fresh = factory()
        fresh.open()
        fresh.close()
        assert raw[units.JOURNAL_COLLECTION].count_documents({}) == 0
        assert _state(survivor) == [*_NEW[:4], ({"tag": "newer"}, False)]
    finally:
        survivor.close()


def test_a_live_writers_journal_waits(factory: Callable[[], MongoBackend], raw: Any) -> None:
    """A journal of a live process of this host, within its deadline, is a unit in flight: an open leaves it;
    once that process is gone, the next open completes it."""
    backend = factory()
    backend.open()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        doc = units._journal(backend.settings, _writes("new"))
        raw[units.JOURNAL_COLLECTION].insert_one({**doc, "pid": sleeper.pid, "started": _process_start(sleeper.pid)})
        other = factory()
        other.open()
        other.close()
        assert raw[units.JOURNAL_COLLECTION].count_documents({}) == 1
        assert backend.get(DOMAINS["signal"], _CTX) is None
        sleeper.kill()
        sleeper.wait()
        other.open()
        other.close()
        assert raw[units.JOURNAL_COLLECTION].count_documents({}) == 0
        assert _payload(backend, "signal", _CTX) == ({"tag": "new"}, False)
    finally:
        sleeper.kill()
        sleeper.wait()
        backend.close()


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_unit_over_one_document_is_refused_before_anything_is_written(
    factory: Callable[[], MongoBackend], raw: Any, face: str
) -> None:
    """Two 9 MB records fit one document each but not one journal: UnitOfWorkError, and nothing is stored."""
    big = Record(json.dumps("x" * 9_000_000))
    writes = [Write(DOMAINS["storage"], WriteOp.PUT, (False, f"big-{i}"), big) for i in range(2)]
    backend = factory()
    try:
        with pytest.raises(UnitOfWorkError, match="split it into smaller units"):
            if face == "sync":
                backend.apply_unit(writes)
            else:

                async def apply() -> None:
                    native = AsyncMongoBackend(backend.url, sync=backend)
                    try:
                        await native.apply_unit(writes)
                    finally:
                        await native.close()

                asyncio.run(apply())
        assert raw[DOMAINS["storage"].collection_name].count_documents({}) == 0
        assert raw[units.JOURNAL_COLLECTION].count_documents({}) == 0
        backend.apply_unit(writes[:1])  # one record alone is one document write, as put is
        assert backend.get(DOMAINS["storage"], (False, "big-0")) == big
    finally:
        backend.close()


def test_a_key_lock_of_a_dead_process_here_is_broken_at_once(factory: Callable[[], MongoBackend], raw: Any) -> None:
    """A writer killed between taking and releasing a key lock (a bucket write or remove inside a unit) leaves the
    lock; a process of this host that is gone is known dead, so the next writer breaks it at once instead of
    waiting out its 10 s lease (the replay of the dead writer's unit would otherwise time out)."""
    from persist_mongo._cache import cache_key
    from persist_mongo._operations import LOCK_COLLECTION

    backend = factory()
    try:
        backend.put(DOMAINS["measure"], ("bucket", "k"), Record("1"))
        gone = subprocess.Popen(["sleep", "60"])
        started = _process_start(gone.pid)
        gone.kill()
        gone.wait()
        name = cache_key(backend.settings.namespace, DOMAINS["measure"], ("bucket", "k"))
        expires = time.time_ns() // 1_000_000 + 60_000
        raw[LOCK_COLLECTION].insert_one(
            {"lock": name, "expires": expires, "host": socket.gethostname(), "pid": gone.pid, "started": started}
        )
        began = time.monotonic()
        backend.mark_removed(DOMAINS["measure"], ("bucket", "k"))
        assert time.monotonic() - began < 1.0
        assert _payload(backend, "measure", ("bucket", "k")) == (1, True)
    finally:
        backend.close()


class _FreezeAfterJournal(monitoring.CommandListener):
    """Freezes the proxy as soon as a unit's journal insert is acknowledged: MongoDB goes away mid-unit."""

    def __init__(self, proxy: FreezableProxy) -> None:
        self.proxy = proxy
        self.armed = False
        self._journal_inserts: set[int] = set()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.armed and event.command_name == "insert" and event.command["insert"] == units.JOURNAL_COLLECTION:
            self._journal_inserts.add(event.request_id)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.request_id in self._journal_inserts:
            self._journal_inserts.clear()
            self.armed = False
            self.proxy.freeze()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_a_unit_that_raised_after_its_commit_is_completed_by_the_next_unit(
    database: servers.ScratchDatabase, raw: Any
) -> None:
    """MongoDB freezes right after a unit's journal is in: apply_unit raises BackendTimeoutError, the unit stays
    committed, and the same backend's next unit, once MongoDB is back, completes it before its own writes."""
    port = int(database.server_url.rsplit(":", 1)[1].split("/")[0])
    with FreezableProxy(port) as proxy:
        freezer = _FreezeAfterJournal(proxy)
        url = database.url.replace(f":{port}/", f":{proxy.port}/") + "?timeout=1"
        backend = MongoBackend.from_url(url, redis_url="none", client_options={"event_listeners": [freezer]})
        try:
            backend.open()
            freezer.armed = True
            with pytest.raises(BackendTimeoutError):
                backend.apply_unit(_writes("new"))
            assert raw[units.JOURNAL_COLLECTION].count_documents({}) == 1
            assert raw[DOMAINS["strategy"].collection_name].count_documents({}) == 0
            proxy.thaw()
            backend.apply_unit(
                [
                    Write(DOMAINS["risk"], WriteOp.PUT, ("r", "kit"), Record("{}")),
                    Write(DOMAINS["log"], WriteOp.INSERT, ("log-2",), Record("{}")),
                ]
            )
            assert raw[units.JOURNAL_COLLECTION].count_documents({}) == 0
            assert _state(backend) == [({"tag": "new"}, False)] * 3 + [None, ({"tag": "new"}, False)]
            assert backend.get(DOMAINS["log"], ("log-2",)) == Record("{}")
        finally:
            proxy.thaw()
            backend.close()


def test_a_journal_that_is_not_ours_fails_the_open(factory: Callable[[], MongoBackend], raw: Any) -> None:
    """A document in persist-units that is no unit journal is named, not skipped: its unit might be lost."""
    raw[units.JOURNAL_COLLECTION].insert_one({"at": 1, "expires": 1, "writes": [{"d": "no-such-domain"}]})
    backend = factory()
    with pytest.raises(CorruptRecordError, match="not a unit journal"):
        backend.open()
    raw[units.JOURNAL_COLLECTION].delete_many({})
    backend.open()
    backend.close()


_OPS = st.lists(st.tuples(st.sampled_from(list(WriteOp)), st.integers(0, 2), st.integers(0, 9)), max_size=12)


def _model(state: dict[Key, tuple[str, bool]], writes: list[Write]) -> dict[Key, tuple[str, bool]]:
    """What ``writes`` applied one by one leave: put replaces, insert only if absent, remove sets the flag."""
    state = dict(state)
    for write in writes:
        if write.op is WriteOp.REMOVE:
            if write.key in state:
                state[write.key] = (state[write.key][0], True)
        elif write.record is not None and (write.op is WriteOp.PUT or write.key not in state):
            state[write.key] = (write.record.payload, write.record.removed)
    return state


@settings(max_examples=300, deadline=None)
@given(ops=_OPS, before=st.dictionaries(st.integers(0, 2), st.tuples(st.integers(0, 9), st.booleans())))
def test_net_writes_leave_what_the_writes_leave(ops: list[tuple[WriteOp, int, int]], before: dict[int, Any]) -> None:
    """Property: the reduced unit (what the journal holds and replay applies) ends as the unit, from any stored
    state, with one write per key but where inserts and removes of one key mix (no domain takes both)."""
    domain = DOMAINS["measure"]
    writes = [Write(domain, op, ("b", str(k)), None if op is WriteOp.REMOVE else Record(str(v))) for op, k, v in ops]
    state = {("b", str(k)): (str(v), removed) for k, (v, removed) in before.items()}
    net = units.net_writes(writes)
    assert _model(state, net) == _model(state, writes)
    for key in {w.key for w in net}:
        ops_of_key = {w.op for w in net if w.key == key}
        assert len([w for w in net if w.key == key]) == 1 or ops_of_key == {WriteOp.INSERT, WriteOp.REMOVE}


def test_a_unit_abandoned_after_the_open_is_completed_by_a_later_unit(
    factory: Callable[[], MongoBackend], raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that dies after this backend opened (an owner taken over) leaves its journal: a unit of this
    backend looks for abandoned journals again once a lease has passed since its last look, and completes it."""
    survivor = factory()
    survivor.open()
    try:
        _seed(survivor)
        _killed_midway(survivor.settings.url, _writes("new"), commands=1)
        risk = Write(DOMAINS["risk"], WriteOp.PUT, ("r", "kit"), Record("{}"))
        log = Write(DOMAINS["log"], WriteOp.INSERT, ("log-2",), Record("{}"))
        survivor.apply_unit([risk, log])  # within the lease since the open's look: the journal stays
        assert raw[units.JOURNAL_COLLECTION].count_documents({}) == 1
        # A lease later (10 s; moved back rather than waited for).
        key = (survivor.settings.url, survivor.settings.namespace)
        monkeypatch.setitem(units._swept, key, units._swept[key] - survivor.settings.lock_lease_ms / 1000 - 1)
        survivor.apply_unit([risk, log])
        assert raw[units.JOURNAL_COLLECTION].count_documents({}) == 0
        assert _state(survivor) == _NEW
    finally:
        survivor.close()


def test_an_open_never_replays_a_unit_this_process_is_applying(
    factory: Callable[[], MongoBackend], raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Units applied in a thread while other backends of this process open (each looks for abandoned journals)
    over and over: a journal of this process is replayed only once no unit is applying it, so none is."""
    writer = factory()
    stop = threading.Event()
    applied = []

    def write_units() -> None:
        seq = 0
        while not stop.is_set():
            writer.apply_unit(_writes(str(seq)))
            applied.append(seq)
            seq += 1

    thread = threading.Thread(target=write_units)
    caplog.set_level(logging.WARNING, logger="persist.mongo")
    thread.start()
    try:
        deadline_at = time.monotonic() + 3
        opens = 0
        while time.monotonic() < deadline_at or opens < 20:
            other = factory()
            other.open()
            other.close()
            opens += 1
    finally:
        stop.set()
        thread.join(10)
        writer.close()
    assert len(applied) > 10
    assert [r.getMessage() for r in caplog.records if "completed the unit" in r.getMessage()] == []
    assert raw[units.JOURNAL_COLLECTION].count_documents({}) == 0
