"""The file backend's unit journal: a unit committed by a process that died is replayed by the next ``open``.

Each test forks a writer that applies a whole unit, then dies by SIGKILL at a chosen point of the next one
(right after its journal is committed, or after two of its files are in place), and looks at the storage before
and after a new backend opens it: before, the unit is absent or in part; after, it is whole and the journal gone.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from persist_core.backend import Key, Record
from persist_core.backends._file_journal import JOURNAL_FOLDER, Staged, UnitJournal, encode_journal
from persist_core.backends.file import FileBackend
from persist_core.domains import DOMAINS
from persist_core.units import Write, WriteOp

CTX = ("BTC/USDT", "s", "x")
SIGNAL, STRATEGY, LOG, MEASURE = (DOMAINS[n] for n in ("signal", "strategy", "log", "measure"))


def unit(n: int) -> list[Write]:
    """Unit ``n``: two slots, a log entry (first write wins), a bucket entry, and the soft delete of unit 0's."""
    writes = [
        Write(SIGNAL, WriteOp.PUT, CTX, Record(json.dumps({"n": n}))),
        Write(STRATEGY, WriteOp.PUT, CTX, Record(json.dumps({"cursor": n}))),
        Write(LOG, WriteOp.INSERT, (f"log-{n}",), Record(json.dumps({"id": f"log-{n}", "n": n}))),
        Write(MEASURE, WriteOp.PUT, ("b", f"k{n}"), Record(json.dumps(n), when=n)),
    ]
    if n:
        writes.append(Write(MEASURE, WriteOp.REMOVE, ("b", "k0")))
    return writes


def effects(backend: FileBackend, n: int) -> list[bool]:
    """Which of unit ``n``'s writes are visible (read without ``open``, so nothing is replayed)."""

    def value(domain: object, key: Key) -> object:
        record = backend.get(domain, key)  # type: ignore[arg-type]
        return None if record is None else json.loads(record.payload)

    k0 = backend.get(MEASURE, ("b", "k0"))
    out = [
        value(SIGNAL, CTX) == {"n": n},
        value(STRATEGY, CTX) == {"cursor": n},
        value(LOG, (f"log-{n}",)) is not None,
        value(MEASURE, ("b", f"k{n}")) == n,
    ]
    return [*out, k0 is not None and k0.removed] if n else out


def journals(root: Path) -> list[str]:
    folder = root / JOURNAL_FOLDER
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".unit") if folder.exists() else []


def _die(_: object = None) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _after_commit() -> None:
    """In the child: die as soon as a unit's journal is committed, before any of its files is in place."""
    commit = UnitJournal.commit

    def committed_then_killed(self: UnitJournal, data: bytes) -> tuple[str, int]:
        commit(self, data)
        _die()
        raise AssertionError("unreachable")

    UnitJournal.commit = committed_then_killed  # type: ignore[method-assign]


def _after_two_renames() -> None:
    """In the child: die after the second record file of a unit is moved into place."""
    replace = os.replace
    done = []

    def replace_then_maybe_die(src: str, dst: str) -> None:
        replace(src, dst)
        done.append(dst)
        if len(done) == 2:
            _die()

    os.replace = replace_then_maybe_die  # type: ignore[assignment]


def _writer(root: Path, durability: str, arm: Callable[[], None], then: Callable[[FileBackend], None]) -> None:
    backend = FileBackend(root, durability=durability)
    backend.open()
    backend.apply_unit(unit(0))
    arm()
    backend.apply_unit(unit(1))
    then(backend)
    _die()


def run_writer(
    root: Path, durability: str, arm: Callable[[], None], then: Callable[[FileBackend], None] = _die
) -> None:
    """Fork :func:`_writer` and wait for its death by SIGKILL."""
    process = multiprocessing.get_context("fork").Process(target=_writer, args=(root, durability, arm, then))
    process.start()
    process.join(30)
    assert process.exitcode == -signal.SIGKILL


@pytest.fixture(params=["full", "process"])
def durability(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_committed_unit_of_a_dead_writer_is_replayed_by_open(tmp_path: Path, durability: str) -> None:
    root = tmp_path / "dump"
    run_writer(root, durability, _after_commit)
    assert len(journals(root)) >= 1
    assert not any(effects(FileBackend(root), 1))  # committed, nothing of it in place yet
    assert all(effects(FileBackend(root), 0)[2:])  # unit 0's own records are there
    reopened = FileBackend(root, durability=durability)
    reopened.open()
    assert all(effects(reopened, 1))
    assert journals(root) == []


def test_a_unit_in_part_is_completed_by_open(tmp_path: Path, durability: str) -> None:
    root = tmp_path / "dump"
    run_writer(root, durability, _after_two_renames)
    seen = effects(FileBackend(root), 1)
    assert any(seen) and not all(seen), seen  # the kill left it in part
    reopened = FileBackend(root, durability=durability)
    reopened.open()
    assert all(effects(reopened, 1))


def test_a_torn_journal_is_ignored_and_removed(
    tmp_path: Path, durability: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "dump"
    run_writer(root, durability, _after_commit)
    last = root / JOURNAL_FOLDER / journals(root)[-1]
    last.write_bytes(last.read_bytes()[:-20])  # what a power cut may leave under durability=process
    with caplog.at_level(logging.WARNING, logger="persist.file"):
        reopened = FileBackend(root, durability=durability)
        reopened.open()
    assert not any(effects(reopened, 1))
    assert all(effects(reopened, 0)[2:])
    assert journals(root) == []
    assert "torn or damaged, so never committed" in caplog.text


def test_replay_keeps_a_first_write_made_since(tmp_path: Path, durability: str) -> None:
    """A log entry of the unit written since (by hand here: a writer racing the death) is not overwritten."""
    root = tmp_path / "dump"
    run_writer(root, durability, _after_commit)
    (root / "log" / "log-1.json").write_bytes(b'{"when":null,"removed":false}\n{"id":"log-1","n":"other"}\n')
    reopened = FileBackend(root, durability=durability)
    reopened.open()
    record = reopened.get(LOG, ("log-1",))
    assert record is not None and json.loads(record.payload)["n"] == "other"
    assert effects(reopened, 1)[:2] == [True, True]


def test_a_backend_open_before_the_death_replays_before_its_next_write(tmp_path: Path, durability: str) -> None:
    root = tmp_path / "dump"
    running = FileBackend(root, durability=durability)
    running.open()
    run_writer(root, durability, _after_commit)
    assert not any(effects(running, 1))  # reads do not replay
    assert running.insert_many(LOG, [(("log-1",), Record(json.dumps({"id": "log-1", "n": "late"})))]) == 0
    assert all(effects(running, 1))  # the unit came first: its log entry is the one kept
    assert journals(root) == []


def test_a_write_by_another_process_after_a_unit_survives_the_writers_death(tmp_path: Path) -> None:
    """A live writer's journal waits for its next flush; another process writes a key of that unit, then the
    writer dies: the replay of its journal must not bring the unit's value back over the newer one."""
    root = tmp_path / "dump"
    context = multiprocessing.get_context("fork")
    ready, proceed = context.Event(), context.Event()

    def wait_for_the_parent(_: FileBackend) -> None:
        ready.set()
        proceed.wait(30)

    process = context.Process(target=_writer, args=(root, "full", lambda: None, wait_for_the_parent))
    process.start()
    try:
        assert ready.wait(30)
        other = FileBackend(root)
        other.open()
        other.put(SIGNAL, CTX, Record(json.dumps({"n": 99})))
    finally:
        process.kill()
        process.join(30)
    reopened = FileBackend(root)
    reopened.open()
    record = reopened.get(SIGNAL, CTX)
    assert record is not None and json.loads(record.payload) == {"n": 99}
    assert all(effects(reopened, 1)[1:])
    assert journals(root) == []


def test_a_write_after_a_unit_is_not_undone_by_a_replay(tmp_path: Path, durability: str) -> None:
    """The writer puts a key of its last unit again, then dies: the unit's journal must not come back over it."""
    root = tmp_path / "dump"

    def put_again(backend: FileBackend) -> None:
        backend.put(SIGNAL, CTX, Record(json.dumps({"n": 99})))

    run_writer(root, durability, lambda: None, put_again)
    reopened = FileBackend(root, durability=durability)
    reopened.open()
    record = reopened.get(SIGNAL, CTX)
    assert record is not None and json.loads(record.payload) == {"n": 99}
    assert all(effects(reopened, 1)[1:])


def test_a_live_writers_journal_is_left_to_it(tmp_path: Path) -> None:
    """A journal still waiting for its unit to become durable belongs to a live writer: another backend's
    open leaves it (its lock is held), and the writer deletes it at close."""
    root = tmp_path / "dump"
    writer = FileBackend(root)
    writer.open()
    writer.apply_unit(unit(0))
    pending = journals(root)
    if not pending:
        pytest.skip("no syncfs(2) here: a unit's journal is deleted before apply_unit returns")
    other = FileBackend(root)
    other.open()
    assert journals(root) == pending
    writer.close()
    assert journals(root) == []


def test_a_journal_naming_a_file_outside_its_folder_is_quarantined_not_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal whose checksum holds but which this code cannot trust is kept for the operator, never run."""
    root = tmp_path / "dump"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".tmp-x").write_bytes(b'{"when":null,"removed":false}\n{"n":666}\n')
    entry = Staged(SIGNAL, CTX, False, ".tmp-/../../../../../../elsewhere/.tmp-x", (elsewhere / ".tmp-x").stat().st_ino)
    (root / JOURNAL_FOLDER).mkdir(parents=True)
    (root / JOURNAL_FOLDER / "00000000000000000001-abcd.unit").write_bytes(encode_journal([entry]))
    with caplog.at_level(logging.ERROR, logger="persist.file"):
        backend = FileBackend(root)
        backend.open()
    assert backend.get(SIGNAL, CTX) is None
    assert (elsewhere / ".tmp-x").exists()
    assert journals(root) == []
    quarantined = list((root / ".quarantine" / JOURNAL_FOLDER).iterdir())
    assert [p.name.split(".unit.")[0] for p in quarantined] == ["00000000000000000001-abcd"]
    assert "names a file outside its folder" in caplog.text
