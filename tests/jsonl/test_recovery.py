"""Crash recovery of the jsonl backend: torn last lines and broken lines are quarantined, never dropped."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from persist_core.backend import Record
from persist_core.backends.jsonl import JsonlBackend
from tests.jsonl.helpers import LOG, entry, insert, lines_of, parsed_lines, quarantine_files

TORN = b'{"id":"torn-entry","topic":"half a li'


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "log" / "log.jsonl"
    with JsonlBackend(path) as backend:
        insert(backend, [entry("a", n=1), entry("b", n=2), entry("c", n=3)])
    return path


def ids(backend: JsonlBackend) -> list[str]:
    return [entry_id for entry_id, _ in backend.scan(LOG, ())]


def errors_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "persist.jsonl" and r.levelno == logging.ERROR]


def test_torn_last_line_is_quarantined_on_open(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    whole = path.read_bytes()
    with path.open("ab") as fh:
        fh.write(TORN)
    with caplog.at_level(logging.ERROR, logger="persist.jsonl"), JsonlBackend(path) as backend:
        assert ids(backend) == ["a", "b", "c"]
        assert path.read_bytes() == whole  # cut back to the last complete line
        [quarantine] = quarantine_files(path)
        assert quarantine.read_bytes() == TORN
        [message] = errors_of(caplog)
        assert "incomplete line" in message
        assert str(quarantine) in message
        assert f"{len(TORN)} bytes at offset {len(whole)}" in message
        assert insert(backend, [entry("d", n=4)]) == 1
    assert parsed_lines(path) == [entry("a", n=1), entry("b", n=2), entry("c", n=3), entry("d", n=4)]
    with JsonlBackend(path) as again:  # nothing left to repair
        assert ids(again) == ["a", "b", "c", "d"]
    assert len(quarantine_files(path)) == 1


@pytest.mark.parametrize(
    "tail",
    [
        b'{"id":"complete-but-no-newline"}',  # the writer died just before the newline
        b"\x00" * 64,  # a power cut after the size grew but before the data blocks were written
        b"{",
    ],
    ids=["no-newline", "nul-bytes", "one-byte"],
)
def test_any_incomplete_tail_is_quarantined(path: Path, tail: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(tail)
    with JsonlBackend(path) as backend:
        assert ids(backend) == ["a", "b", "c"]
    assert [q.read_bytes() for q in quarantine_files(path)] == [tail]
    assert path.read_bytes().endswith(b'"n":3}\n')


def test_unreadable_line_in_the_middle_is_quarantined_and_blanked(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A writer died mid-append and a writer that does not check the tail appended after it.
    bad = TORN + b'{"id":"glued","n":9}'
    with path.open("ab") as fh:
        fh.write(bad + b"\n" + b'{"id":"after","n":5}\n' + b"[1,2]\n" + b'{"no_id":1}\n')
    size = path.stat().st_size
    with caplog.at_level(logging.ERROR, logger="persist.jsonl"), JsonlBackend(path) as backend:
        assert ids(backend) == ["a", "after", "b", "c"]
        assert len(errors_of(caplog)) == 3
        assert insert(backend, [entry("z")]) == 1
    quarantined = [q.read_bytes() for q in quarantine_files(path)]
    assert quarantined == [bad + b"\n", b"[1,2]\n", b'{"no_id":1}\n']
    lines = lines_of(path)
    assert path.stat().st_size == size + len(b'{"id":"z"}\n')  # blanked in place: no offset moved
    assert lines[3] == b" " * len(bad)
    assert [e["id"] for e in parsed_lines(path)] == ["a", "b", "c", "after", "z"]
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="persist.jsonl"), JsonlBackend(path) as again:
        assert ids(again) == ["a", "after", "b", "c", "z"]
    assert errors_of(caplog) == []
    assert len(quarantine_files(path)) == 3


def test_a_running_writer_repairs_a_tail_torn_by_another_process(path: Path) -> None:
    with JsonlBackend(path) as backend:
        assert ids(backend) == ["a", "b", "c"]
        with path.open("ab") as fh:  # another process died mid-append
            fh.write(TORN)
        # Without the repair the new entry would be glued to the torn bytes and lost at the next open.
        assert insert(backend, [entry("d", n=4)]) == 1
        assert backend.get(LOG, ("d",)) == Record('{"id":"d","n":4}')
    assert [q.read_bytes() for q in quarantine_files(path)] == [TORN]
    assert [e["id"] for e in parsed_lines(path)] == ["a", "b", "c", "d"]


def test_a_reader_repairs_what_it_finds_and_indexes_what_follows(path: Path) -> None:
    reader = JsonlBackend(path)
    reader.open()
    with path.open("ab") as fh:
        fh.write(b"not json\n" + b'{"id":"next"}\n' + TORN)
    assert ids(reader) == ["a", "b", "c", "next"]
    reader.close()
    assert [q.read_bytes() for q in quarantine_files(path)] == [b"not json\n", TORN]
    assert [e["id"] for e in parsed_lines(path)] == ["a", "b", "c", "next"]


def test_a_crash_during_recovery_loses_nothing(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with path.open("ab") as fh:
        fh.write(TORN)

    def crash(*args: Any) -> None:
        raise KeyboardInterrupt("killed between the quarantine copy and the truncation")

    monkeypatch.setattr(os, "ftruncate", crash)
    with pytest.raises(KeyboardInterrupt):
        JsonlBackend(path).open()
    monkeypatch.undo()
    assert [q.read_bytes() for q in quarantine_files(path)] == [TORN]
    assert path.read_bytes().endswith(TORN)  # not cut yet: the bytes exist twice, never zero times
    with JsonlBackend(path) as backend:
        assert ids(backend) == ["a", "b", "c"]
    assert [q.read_bytes() for q in quarantine_files(path)] == [TORN, TORN]
    assert not path.read_bytes().endswith(TORN)


def test_a_failed_append_takes_its_partial_bytes_back(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = path.read_bytes()
    real_write = os.write

    def short_then_fail(fd: int, data: Any) -> int:
        if len(data) > 100:
            return real_write(fd, bytes(data[:50]))  # the kernel wrote only part
        raise OSError(28, "No space left on device")

    with JsonlBackend(path) as backend:
        monkeypatch.setattr(os, "write", short_then_fail)
        with pytest.raises(ConnectionError, match="No space left"):
            insert(backend, [entry(f"big-{n}", pad="x" * 50) for n in range(5)])
        monkeypatch.undo()
        assert path.read_bytes() == whole
        assert ids(backend) == ["a", "b", "c"]
        assert insert(backend, [entry("big-0")]) == 1
    assert quarantine_files(path) == []
    assert json.loads(lines_of(path)[-1]) == {"id": "big-0"}


@pytest.mark.parametrize(
    ("line", "readable"),
    [
        (b'{"id":"x"}', True),
        (b'{"id":"x"}  \r', True),
        (b'  {"id":"x"}', True),
        (b'{"id":"x"}{"id":"y"}', False),
        (b'{"id":"x"} junk', False),
        (b'{"id":"x","v":NaN}', False),
        (b'{"id":""}', False),
        (b'{"id":7}', False),
        (b'{"id":"x\\u0001"}', False),
        (b'{"id":"x","v":"\xff"}', False),
        (b'"just a string"', False),
    ],
    ids=repr,
)
def test_what_counts_as_a_readable_line(path: Path, line: bytes, readable: bool) -> None:
    with path.open("ab") as fh:
        fh.write(line + b"\n")
    with JsonlBackend(path) as backend:
        assert ids(backend) == (["a", "b", "c", "x"] if readable else ["a", "b", "c"])
    assert [q.read_bytes() for q in quarantine_files(path)] == ([] if readable else [line + b"\n"])
