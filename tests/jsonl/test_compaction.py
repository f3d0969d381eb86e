"""Deletion from the jsonl log (a compaction), within one process: exactly the named lines go, every other
line stays byte for byte; other instances follow the new file; lock waits are bounded; leftovers are swept."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

import pytest

from persist_core import BackendTimeoutError, ConfigurationError, CorruptRecordError
from persist_core.backend import Record
from persist_core.backends.jsonl import COMPACTION_INFIX, JsonlBackend
from tests.jsonl.helpers import LOG, entry, insert, lines_of, parsed_lines, quarantine_files


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "log" / "log.jsonl"


def _keys(*ids: str) -> list[tuple[str]]:
    return [(i,) for i in ids]


def _inode(path: Path) -> int:
    return path.stat().st_ino


def test_deletion_cuts_exactly_the_named_lines_and_keeps_the_rest_byte_for_byte(path: Path) -> None:
    path.parent.mkdir(parents=True)
    lines = [
        b'{"id":"a","v":1}',
        b'{ "id" : "b", "v" : 1 }',  # not as we write it: kept as it is
        b"      ",  # a line blanked by a repair
        b'{"id":"c","v":1}',
        b'{"id":"a","v":2}',  # a repeat of a doomed id, skipped while a's first line counts: goes with it
        b'{"id":"b","v":2}',  # a repeat of a kept id: stays, still skipped
        b'{"id":"d","text":"\\u00e9\\n\xc3\xa9"}',
    ]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    with JsonlBackend(path) as backend:
        before = _inode(path)
        assert backend.delete_records(LOG, _keys("a", "c", "never-written")) == 2
        assert _inode(path) != before
        assert lines_of(path) == [lines[1], lines[2], lines[5], lines[6]]
        assert backend.get(LOG, ("a",)) is None and backend.get(LOG, ("c",)) is None
        assert [k for k, _ in backend.scan(LOG, ())] == ["b", "d"]
        # Nothing of the named exists: nothing is rewritten.
        assert backend.delete_records(LOG, _keys("a", "zz")) == 0
        assert _inode(path) != before
        same = _inode(path)
        assert backend.delete_records(LOG, []) == 0
        assert _inode(path) == same
        # The offsets moved by the cut stay right: a further deletion and appends after it.
        assert insert(backend, [entry("a", v=3), entry("e")]) == 2
        assert backend.delete_records(LOG, _keys("d")) == 1
        assert backend.delete_records(LOG, _keys("b")) == 1
        assert lines_of(path) == [lines[2], b'{"id":"a","v":3}', b'{"id":"e"}']
    with JsonlBackend(path) as reopened:
        assert reopened.scan(LOG, ()) == [("a", Record('{"id":"a","v":3}')), ("e", Record('{"id":"e"}'))]
    assert quarantine_files(path) == []
    assert list(path.parent.glob(f"*{COMPACTION_INFIX}*")) == []


def test_an_instance_indexed_before_a_compaction_reads_appends_and_deletes_right_after_it(path: Path) -> None:
    with JsonlBackend(path) as first, JsonlBackend(path) as second:
        insert(first, [entry(f"e{n}", n=n) for n in range(10)])
        assert len(second.scan(LOG, ())) == 10  # indexed, offsets and all, before the compaction
        assert first.delete_records(LOG, _keys("e1", "e4", "e9")) == 3
        assert second.get(LOG, ("e4",)) is None
        assert second.get(LOG, ("e5",)) == Record('{"id":"e5","n":5}')
        assert [k for k, _ in second.scan(LOG, ())] == [f"e{n}" for n in (0, 2, 3, 5, 6, 7, 8)]
        assert second.list_contexts(LOG) == [((), 7)]
        # The second appends to the new file, not to the old one it held: the first sees it.
        assert insert(second, [entry("e4", again=True), entry("e10")]) == 2
        assert first.get(LOG, ("e4",)) == Record('{"id":"e4","again":true}')
        # The second deletes with the offsets it indexed from the new file; the first follows in turn.
        assert second.delete_records(LOG, _keys("e0", "e10")) == 2
        assert [k for k, _ in first.scan(LOG, ())] == ["e2", "e3", "e4", "e5", "e6", "e7", "e8"]
        assert first.delete_records(LOG, _keys("e0")) == 0
    assert [e["id"] for e in parsed_lines(path)] == ["e2", "e3", "e5", "e6", "e7", "e8", "e4"]


def test_a_forked_child_follows_a_compaction_made_before_it_first_used_the_backend(path: Path) -> None:
    import multiprocessing

    backend = JsonlBackend(path, durability="process")
    insert(backend, [entry("a"), entry("b")])
    other = JsonlBackend(path, durability="process")
    assert other.delete_records(LOG, _keys("a")) == 1  # the parent's index is stale now
    fork = multiprocessing.get_context("fork")
    child = fork.Process(target=_append_in_child, args=(backend,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert [e["id"] for e in parsed_lines(path)] == ["b", "c"]
    assert [k for k, _ in backend.scan(LOG, ())] == ["b", "c"]
    backend.close()
    other.close()


def _append_in_child(backend: JsonlBackend) -> None:
    if [k for k, _ in backend.scan(LOG, ())] != ["b"] or insert(backend, [entry("a"), entry("c")]) != 2:
        raise SystemExit(1)
    if backend.delete_records(LOG, _keys("a")) != 1:
        raise SystemExit(2)


def test_a_held_lock_times_out_within_the_deadline_and_nothing_is_written(path: Path) -> None:
    with JsonlBackend.from_url(f"jsonl:{path}?timeout=0.3") as backend:
        insert(backend, [entry("a"), entry("b")])
        holder = os.open(path, os.O_RDWR | os.O_APPEND)  # another process, stopped while holding the lock
        fcntl.flock(holder, fcntl.LOCK_EX)
        try:
            os.write(holder, b'{"id":"c"}\n')  # it appended: a read has to lock to index it
            data = path.read_bytes()
            for operation in (
                lambda: insert(backend, [entry("d")]),
                lambda: backend.delete_records(LOG, _keys("a")),
                lambda: backend.scan(LOG, ()),
            ):
                started = time.monotonic()
                with pytest.raises(BackendTimeoutError, match=r"waited 0.3 s for the lock on .*log.jsonl"):
                    operation()
                assert 0.3 <= time.monotonic() - started < 1.3
            assert path.read_bytes() == data
            assert list(path.parent.glob(f"*{COMPACTION_INFIX}*")) == []
        finally:
            os.close(holder)
        assert backend.delete_records(LOG, _keys("a")) == 1  # the same backend goes on once the lock is free
        assert [k for k, _ in backend.scan(LOG, ())] == ["b", "c"]


def test_the_timeout_option(path: Path) -> None:
    assert JsonlBackend.from_url(f"jsonl:{path}").timeout == 5.0
    assert JsonlBackend.from_url(f"jsonl:{path}?timeout=2").timeout == 2.0
    assert JsonlBackend.from_url(f"jsonl:{path}?timeout=2", timeout=0.5).timeout == 0.5
    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(ConfigurationError, match="timeout"):
            JsonlBackend.from_url(f"jsonl:{path}?timeout={bad}")


def test_a_temp_file_left_by_a_killed_compaction_is_ignored_and_swept(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with JsonlBackend(path) as backend:
        insert(backend, [entry("a"), entry("b")])
    leftover = path.with_name(f"{path.name}{COMPACTION_INFIX}999-1")
    leftover.write_bytes(b'{"id":"a"}\n{"id":"half')  # what a killed compactor leaves: never the log
    with caplog.at_level(logging.WARNING, logger="persist.jsonl"), JsonlBackend(path) as backend:
        assert not leftover.exists()
        assert [k for k, _ in backend.scan(LOG, ())] == ["a", "b"]
        late = path.with_name(f"{path.name}{COMPACTION_INFIX}999-2")
        late.write_bytes(b"")
        assert backend.delete_records(LOG, _keys("a")) == 1  # a compaction sweeps too
        assert not late.exists()
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [f"removed {leftover}", f"removed {late}"]
    assert parsed_lines(path) == [{"id": "b"}]


def test_a_line_changed_in_place_behind_the_index_stops_the_deletion_and_nothing_is_deleted(path: Path) -> None:
    with JsonlBackend(path) as backend:
        insert(backend, [entry("a1"), entry("b1"), entry("c1")])
        data = path.read_bytes()
        edited = data.replace(b'{"id":"b1"}', b'{"id":"b2"}')  # a hand edit of the same length: no size change
        with path.open("r+b") as raw:
            raw.write(edited)
        with pytest.raises(CorruptRecordError, match="is not an entry to delete; nothing was deleted"):
            backend.delete_records(LOG, _keys("a1", "b1"))
        assert path.read_bytes() == edited
        assert list(path.parent.glob(f"*{COMPACTION_INFIX}*")) == []
