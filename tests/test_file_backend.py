"""What is particular to the file backend (CONTRACTS.md 6.1): layout, encoding, quarantine, sweeping, fsync."""

from __future__ import annotations

import functools
import json
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persist_core import setup
from persist_core.backend import Record
from persist_core.backends import file as file_module
from persist_core.backends.file import FileBackend, decode_segment, encode_segment
from persist_core.domains import DOMAINS, FieldType, KeyField
from persist_core.errors import BackendUnavailableError, ConfigurationError, CorruptRecordError
from persist_core.stores import make_store
from persist_core.testing import run_kill_test
from persist_core.testing.strategies import key_strings
from tests.services import read_only_mount

STR = KeyField("symbol")
FRAME = KeyField("frame_name", may_be_empty=True)


@given(st.lists(key_strings(), min_size=2, max_size=2, unique=True))
def test_segments_are_injective_reversible_and_safe(keys: list[str]) -> None:
    segments = [encode_segment(STR, k) for k in keys]
    assert segments[0] != segments[1]
    for key, segment in zip(keys, segments, strict=True):
        assert decode_segment(STR, segment) == key
        assert segment and segment not in (".", "..") and not segment.startswith(".")
        assert "/" not in segment and "\x00" not in segment
        assert len(segment.encode()) + len(".json") <= 255


def test_segment_edge_cases() -> None:
    assert encode_segment(FRAME, "") == "~"
    assert decode_segment(FRAME, "~") == ""
    assert encode_segment(STR, "~") == "%7E"
    assert encode_segment(STR, "..") == "%2E."
    assert encode_segment(STR, "BTC/USDT:USDT") == "BTC%2FUSDT%3AUSDT"
    assert encode_segment(KeyField("backtest", FieldType.BOOL), True) == "true"
    assert encode_segment(KeyField("timestamp", FieldType.INT), 1700000000000) == "1700000000000"


def test_layout_is_one_folder_per_field_and_one_file_per_record(tmp_path: Path) -> None:
    with setup(f"file:{tmp_path}", env={}) as persist:
        persist.live.signal(symbol="BTC/USDT", strategy_name="s", exchange_name="x").write({"id": 1})
        persist.live.partial(symbol="BTC/USDT", strategy_name="s", exchange_name="x").write("sig-1", {"l": [1]})
        persist.live.log().write([{"id": "e1"}])
    assert (tmp_path / "signal" / "BTC%2FUSDT" / "s" / "x" / "slot.json").is_file()
    assert (tmp_path / "partial" / "BTC%2FUSDT" / "s" / "x" / "sig-1.json").is_file()
    lines = (tmp_path / "log" / "e1.json").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"when": None, "removed": False}, {"id": "e1"}]


def _write_signal(root: Path, value: Any) -> Path:
    backend = FileBackend(root)
    backend.open()
    spec = DOMAINS["signal"]
    backend.put(spec, ("s", "t", "x"), Record(json.dumps(value)))
    return root / "signal" / "s" / "t" / "x" / "slot.json"


def test_open_reads_no_record_and_the_first_read_quarantines_an_unreadable_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Start-up cost does not grow with the records (3.6): a damaged record is found by the read that meets it,
    moved to the quarantine (never deleted) and reported, and its key keeps failing until it is written again."""
    path = _write_signal(tmp_path, {"ok": True})
    damaged = b'{"when":null,"removed":false}\n{"truncated": '
    path.write_bytes(damaged)
    backend = FileBackend(tmp_path)
    backend.open()
    assert path.read_bytes() == damaged  # open did not look at it
    assert not (tmp_path / ".quarantine").exists()
    spec, key = DOMAINS["signal"], ("s", "t", "x")
    with caplog.at_level(logging.ERROR, logger="persist.file"), pytest.raises(CorruptRecordError, match="moved to"):
        backend.get(spec, key)
    assert not path.exists()
    quarantined = list((tmp_path / ".quarantine").rglob("slot.json.*"))
    assert [q.read_bytes() for q in quarantined] == [damaged]
    assert "quarantined" in caplog.text
    # A live bot restarting must not read "no position": the key fails until someone acts, in any process.
    for reader in (backend, _open(tmp_path)):
        with pytest.raises(CorruptRecordError, match="in the quarantine"):
            make_store(reader, spec, SIGNAL_CONTEXT).read()
    make_store(backend, spec, SIGNAL_CONTEXT).write({"ok": 2})  # writing the key anew resolves it
    assert make_store(_open(tmp_path), spec, SIGNAL_CONTEXT).read() == {"ok": 2}
    quarantined[0].unlink()  # as does taking the copy out of the quarantine
    make_store(backend, spec, SIGNAL_CONTEXT).write(None)
    assert make_store(backend, spec, SIGNAL_CONTEXT).read() is None


def test_an_unreadable_candle_reads_as_a_cache_miss_and_can_be_written_again(tmp_path: Path) -> None:
    backend = _open(tmp_path)
    store = make_store(backend, DOMAINS["candle"], {"symbol": "s", "interval": "1m", "exchange_name": "x"})
    bar = {"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}
    assert store.write([{"timestamp": t * 60_000, **bar} for t in range(3)]) == 3
    path = tmp_path / "candle" / "s" / "1m" / "x" / "60000.json"
    path.write_bytes(b"torn")
    assert store.read(3, 0) is None  # a window with a damaged candle is a miss, as a missing one
    assert len(list((tmp_path / ".quarantine").rglob("60000.json.*"))) == 1
    assert store.write([{"timestamp": 60_000, **bar}]) == 1  # refetched and stored again
    assert store.read(3, 0) is not None


def test_a_scan_that_meets_an_unreadable_record_raises_once_then_lists_without_it(tmp_path: Path) -> None:
    backend = _open(tmp_path)
    log = make_store(backend, DOMAINS["log"], {})
    log.write([{"id": "a"}, {"id": "b"}, {"id": "c"}])
    (tmp_path / "log" / "b.json").write_bytes(b'{"when":null,"removed":false}\n[1,2]\n')  # not an object
    with pytest.raises(CorruptRecordError, match="moved to"):
        log.read()
    assert [e["id"] for e in log.read()] == ["a", "c"]
    assert len(list((tmp_path / ".quarantine" / "log").glob("b.json.*"))) == 1


def test_verify_option_walks_everything_at_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write_signal(tmp_path, {"ok": True})
    path.write_bytes(b'{"when":null,"removed":false}\n{"truncated": ')
    with caplog.at_level(logging.ERROR, logger="persist.file"):
        FileBackend.from_url(f"file:{tmp_path}?verify=1").open()
    assert not path.exists()
    assert len(list((tmp_path / ".quarantine").rglob("slot.json.*"))) == 1
    assert "quarantined" in caplog.text


def test_stale_temp_files_are_swept_at_the_first_write_young_ones_kept(tmp_path: Path) -> None:
    path = _write_signal(tmp_path, {"ok": True})
    old = path.parent / ".tmp-old"
    young = path.parent / ".tmp-young"
    elsewhere = tmp_path / "log" / ".tmp-elsewhere"
    elsewhere.parent.mkdir()
    for debris in (old, young, elsewhere):
        debris.write_bytes(b"partial")
    past = time.time() - file_module.TEMP_GRACE_SECONDS - 10
    os.utime(old, (past, past))
    os.utime(elsewhere, (past, past))
    backend = FileBackend(tmp_path)
    backend.open()
    assert old.exists()  # open walks nothing
    backend.get(DOMAINS["signal"], ("s", "t", "x"))
    assert old.exists()  # nor does a read
    backend.put(DOMAINS["signal"], ("s", "t", "x"), Record("{}"))
    assert not old.exists()
    assert young.exists()
    assert elsewhere.exists()  # a folder this process has not written to keeps its debris (listing skips it)
    os.utime(young, (past, past))
    backend.put(DOMAINS["signal"], ("s", "t", "x"), Record("{}"))
    assert young.exists()  # one sweep per folder and process
    spec = DOMAINS["measure"]
    backend.put(spec, ("b", "k"), Record("1"))
    (tmp_path / "measure" / "b" / ".tmp-listing").write_bytes(b"x")
    assert [item for item, _ in backend.scan(spec, ("b",))] == ["k"]


@pytest.mark.parametrize(("durability", "expected"), [("full", True), ("process", False)])
def test_durability_option_controls_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str, expected: bool
) -> None:
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd))[1])
    with setup(f"file:{tmp_path}?durability={durability}", env={}) as persist:
        calls.clear()
        persist.live.signal(symbol="a", strategy_name="b", exchange_name="c").write({"v": 1})
        persist.live.signal(symbol="a", strategy_name="b", exchange_name="c").write({"v": 2})
    # full: the temp file and the folder, per write (plus new folders once)
    assert (len(calls) >= 4) is expected
    assert (len(calls) == 0) is not expected


def test_first_write_wins_uses_a_link_that_fails_if_present(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    backend.open()
    spec = DOMAINS["log"]
    assert backend.insert_many(spec, [(("e1",), Record('{"id":"e1","n":1}'))]) == 1
    assert backend.insert_many(spec, [(("e1",), Record('{"id":"e1","n":2}')), (("e2",), Record('{"id":"e2"}'))]) == 1
    record = backend.get(spec, ("e1",))
    assert record is not None
    assert record.payload == '{"id":"e1","n":1}'
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == ["e1.json", "e2.json"]


@pytest.mark.slow
def test_sigkill_many_times_mid_write_never_tears_or_loses(tmp_path: Path) -> None:
    """Issue 2: a writer killed with SIGKILL many times; every record old-or-new, nothing acknowledged lost."""
    factory = functools.partial(FileBackend, tmp_path / "dump")
    reports = run_kill_test(factory, rounds=15, min_delay=0.02, max_delay=0.4, seed=7)
    assert sum(1 for r in reports if r.acked) == 15
    assert [p for r in reports for p in r.problems] == []
    # Many rounds really were killed mid-stream: the slot found is often the last acknowledged or the next one.
    assert all(r.slot_seq_found is not None for r in reports)


# ------------------------------------------------------------------------------- hostile file systems

SIGNAL_CONTEXT = {"symbol": "s", "strategy_name": "t", "exchange_name": "x"}


def _open(root: Path) -> FileBackend:
    backend = FileBackend(root)
    backend.open()
    return backend


def test_foreign_file_names_are_skipped_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    backend = _open(tmp_path)
    log_store = make_store(backend, DOMAINS["log"], {})
    log_store.write([{"id": "A"}])
    record = (tmp_path / "log" / "A.json").read_bytes()
    for name in ("%FF.json", "%41.json", "%00.json"):  # not UTF-8; a second spelling of "A"; a NUL key
        (tmp_path / "log" / name).write_bytes(record)
    candles = tmp_path / "candle" / "S" / "1m" / "x"
    candles.mkdir(parents=True)
    (candles / "abc.json").write_bytes(record)
    candle_store = make_store(backend, DOMAINS["candle"], {"symbol": "S", "interval": "1m", "exchange_name": "x"})
    with caplog.at_level(logging.WARNING, logger="persist.file"):
        for _ in range(3):
            assert log_store.read() == [{"id": "A"}]
            assert backend.scan(DOMAINS["candle"], ("S", "1m", "x")) == []
            assert candle_store.read(1, 0) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4  # once per name, however often it is listed
    assert all("foreign file" in w for w in warnings)


@pytest.mark.parametrize(
    ("domain", "payload"),
    [
        ("signal", "[1,2]"),  # a list where the domain stores objects
        ("signal", '"text"'),
        ("state", "NaN"),  # json.loads accepts it, JSON does not
        ("state", '{"price":Infinity}'),
        ("state", "-Infinity"),
    ],
)
def test_stored_values_that_no_write_could_produce_are_corrupt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, domain: str, payload: str
) -> None:
    spec = DOMAINS[domain]
    key = ("s", "t", "x") if domain == "signal" else ("s", "b")
    context = SIGNAL_CONTEXT if domain == "signal" else {"signal_id": "s", "bucket_name": "b"}
    backend = _open(tmp_path)
    backend.put(spec, key, Record(payload))
    path = Path(os.path.join(*backend._path(spec, key)))
    with caplog.at_level(logging.ERROR, logger="persist.file"), pytest.raises(CorruptRecordError):
        make_store(FileBackend(tmp_path), spec, context).read()  # the read fails instead of handing out the value
    assert not path.exists()
    assert len(list((tmp_path / ".quarantine").rglob("slot.json.*"))) == 1
    assert "quarantined" in caplog.text


def test_a_cleared_slot_is_not_corrupt(tmp_path: Path) -> None:
    backend = _open(tmp_path)
    store = make_store(backend, DOMAINS["signal"], SIGNAL_CONTEXT)
    store.write(None)
    FileBackend(tmp_path).open()
    assert store.read() is None
    assert not (tmp_path / ".quarantine").exists()


def _in_thread(work: Any, seconds: float = 10.0) -> Any:
    """Run ``work`` in a thread; fail (rather than hang the suite) if it does not return in time."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(work())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the call hangs"
    return out[0]


def test_a_fifo_is_never_opened(tmp_path: Path) -> None:
    backend = _open(tmp_path)
    spec = DOMAINS["signal"]
    path = Path(os.path.join(*backend._path(spec, ("s", "t", "x"))))
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    assert _in_thread(lambda: FileBackend.from_url(f"file:{tmp_path}?verify=1").open()) is None  # moved away
    assert not path.exists()
    assert len(list((tmp_path / ".quarantine").rglob("slot.json.*"))) == 1
    # A FIFO in a record's place is a corrupt record on get (quarantined), and not listed.
    os.mkfifo(path)
    assert isinstance(_in_thread(lambda: backend.get(spec, ("s", "t", "x"))), CorruptRecordError)
    assert len(list((tmp_path / ".quarantine").rglob("slot.json.*"))) == 2
    (tmp_path / "log").mkdir()
    os.mkfifo(tmp_path / "log" / "e.json")
    assert _in_thread(lambda: backend.scan(DOMAINS["log"], ())) == []


def test_links_inside_the_root_are_never_followed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    backend = _open(root)
    (root / "signal").mkdir()
    (root / "signal" / "s").symlink_to(outside, target_is_directory=True)
    store = make_store(backend, DOMAINS["signal"], SIGNAL_CONTEXT)
    with caplog.at_level(logging.ERROR, logger="persist.file"), pytest.raises(ConfigurationError, match="link"):
        store.write({"a": 1})
    assert list(outside.iterdir()) == []
    assert "refused a link" in caplog.text
    # A record file that is a link is not followed either: corrupt on get, not listed.
    (outside / "secret.json").write_bytes(b'{"when":null,"removed":false}\n{"id":"secret"}\n')
    (root / "log").mkdir()
    (root / "log" / "e.json").symlink_to(outside / "secret.json")
    assert backend.scan(DOMAINS["log"], ()) == []
    with pytest.raises(CorruptRecordError, match="not a regular file"):
        backend.get(DOMAINS["log"], ("e",))


def test_a_read_only_dump_opens_for_reading(caplog: pytest.LogCaptureFixture) -> None:
    def populate(root: Path) -> None:
        store = make_store(_open(root), DOMAINS["signal"], SIGNAL_CONTEXT)
        store.write({"position": 1})
        (root / "signal" / "s" / "t" / "x" / ".tmp-0123456789abcdef").write_bytes(b"debris")
        os.utime(root / "signal" / "s" / "t" / "x" / ".tmp-0123456789abcdef", (0, 0))

    with read_only_mount(populate) as root:
        with caplog.at_level(logging.INFO, logger="persist.file"):
            backend = _open(root)
        assert "read-only" in caplog.text
        store = make_store(backend, DOMAINS["signal"], SIGNAL_CONTEXT)
        assert store.read() == {"position": 1}
        with pytest.raises(BackendUnavailableError):
            store.write({"position": 2})
        with pytest.raises(BackendUnavailableError):
            make_store(backend, DOMAINS["log"], {}).write([{"id": "e"}])


_UNREADABLE_CHILD = """
import sys
from persist_core.backends.file import FileBackend
from persist_core.domains import DOMAINS
from persist_core.errors import BackendUnavailableError
backend = FileBackend(sys.argv[1])
backend.open()
try:
    backend.get(DOMAINS["signal"], ("s", "t", "x"))
except BackendUnavailableError as exc:
    print("typed:", exc)
"""


def test_a_record_the_process_may_not_read_fails_the_read_with_a_typed_error(tmp_path: Path) -> None:
    # Root reads every file whatever its mode, so the open runs in a child as "nobody". The system
    # Python serves: the package is pure Python and its path is readable by anyone.
    python = "/usr/bin/python3"
    if os.geteuid() != 0 or not os.path.exists(python):
        pytest.skip("needs root (to switch to nobody) and /usr/bin/python3")
    nobody = pwd.getpwnam("nobody")
    root = Path(tempfile.mkdtemp(prefix="persist-unreadable-"))  # /tmp/pytest-of-root is private to root
    try:
        _write_signal(root, {"ok": True})
        for path in [root, *root.rglob("*")]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        record = root / "signal" / "s" / "t" / "x" / "slot.json"
        record.chmod(0)
        done = subprocess.run(
            [python, "-c", _UNREADABLE_CHILD, str(root)],
            capture_output=True,
            text=True,
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            extra_groups=[],
            env={"PYTHONPATH": str(Path(file_module.__file__).parents[2])},
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("typed:"), done.stdout + done.stderr
        assert "slot.json" in done.stdout
        assert record.exists()  # not quarantined: its bytes may be fine
    finally:
        shutil.rmtree(root)


def test_paging_through_one_context_sees_writes_and_deletes_made_between_pages(tmp_path: Path) -> None:
    """The folder list kept between pages of one context (issue 11: a large context was read once per page)
    is dropped when the folder changes: a record written past the cursor is listed, a deleted one is not."""
    from persist_core.domains import DOMAINS

    spec = DOMAINS["candle"]
    context = ("BTC/USDT", "1m", "binance")
    backend = FileBackend(tmp_path / "dump")
    backend.open()
    backend.insert_many(spec, [((*context, ts), Record('{"c":1}')) for ts in range(0, 10 * 60_000, 60_000)])
    first = backend.list_records(spec, limit=3)
    assert [key[-1] for key, _ in first] == [0, 60_000, 120_000]
    backend.insert_many(spec, [((*context, 150_000), Record('{"c":2}'))])  # after the cursor
    backend.delete_records(spec, [(*context, 240_000)])
    second = backend.list_records(spec, after=first[-1][0], limit=3)
    assert [key[-1] for key, _ in second] == [150_000, 180_000, 300_000]
    rest = backend.list_records(spec, after=second[-1][0], limit=100)
    assert [key[-1] for key, _ in rest] == [360_000, 420_000, 480_000, 540_000]
    backend.close()
