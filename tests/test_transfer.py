"""``export``, ``import`` and ``copy`` (issue 11, part 2) between real backends.

The copy matrix runs every ordered pair of the backends that can list (file, SQLite, PostgreSQL, MariaDB, and
MongoDB once its backend declares ``Capabilities.listing``), plus jsonl as source and target of the log domain,
on a state of every domain with hostile keys and soft-deleted records.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from persist_core import setup
from persist_core.backend import Record
from persist_core.backends.memory import MemoryBackend
from persist_core.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from persist_core.domains import DOMAINS
from persist_core.errors import DumpFormatError, OwnershipError
from persist_core.operate import backend_for
from persist_core.progress import Progress
from persist_core.testing.samples import HOSTILE_KEYS
from persist_core.testing.strategies import json_values, key_strings
from persist_core.transfer import DomainDigest, copy, copy_backends, digest_of, export, import_dump
from persist_core.validation import encode_value
from tests.sql import servers

STORAGES = ["file", "sqlite", "postgresql", "mariadb"]


def _mongo_lists() -> bool:
    try:
        from persist_mongo import MongoBackend
    except ImportError:
        return False
    return MongoBackend.capabilities.listing


if _mongo_lists():  # pragma: no cover - until the Mongo backend implements listing
    STORAGES.append("mongodb")


@pytest.fixture(scope="module", autouse=True)
def _drop_databases() -> Iterator[None]:
    yield
    servers.drop_session_databases()


class Place:
    """A storage for one test: its URL and the environment (the Redis URL of MongoDB) to open it with."""

    def __init__(self, kind: str, tmp_path: Path, label: str) -> None:
        self.kind = kind
        self.env: dict[str, str] = {}
        if kind == "file":
            self.url = f"file:{tmp_path}/{label}?durability=process"
        elif kind == "sqlite":
            self.url = f"sqlite:///{tmp_path}/{label}.db"
        elif kind == "jsonl":
            self.url = f"jsonl:{tmp_path}/{label}.jsonl?durability=process"
        elif kind == "mongodb":  # pragma: no cover - until the Mongo backend implements listing
            from tests.mongo import servers as mongo

            self.url = mongo.with_database(mongo.shared_mongo_url(), mongo.unique_database("tx"))
            self.env = {"PERSIST_REDIS_URL": mongo.shared_redis_url()}
        else:
            self.url = servers.driver_url("postgresql" if kind == "postgresql" else "mysql")
            servers.reset(self.url)

    def drop(self) -> None:
        """Drop what a shared server keeps for this place (SQL databases are reset per use instead)."""
        if self.kind == "mongodb":  # pragma: no cover - until the Mongo backend implements listing
            import pymongo

            from tests.mongo import servers as mongo

            name = sa.make_url(self.url).database or ""
            with pymongo.MongoClient(self.url, serverSelectionTimeoutMS=5000) as client:
                client.drop_database(name)
            mongo.delete_redis_namespace(self.env["PERSIST_REDIS_URL"], name)

    def setup_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"env": {}, "share_modes": True, "redis_url": self.env.get("PERSIST_REDIS_URL")}
        if self.kind == "jsonl":
            return {**options, "url": "null://", "domains": {"log": self.url}}
        return {**options, "url": self.url}


def fill(place: Place) -> dict[str, int]:
    """Write a small state of every domain the place stores (hostile keys, soft-deleted and cleared records)
    through the stores; return how many records each domain holds."""
    written: dict[str, int] = {}
    keys = HOSTILE_KEYS
    with setup(**place.setup_options()) as persist:
        live = persist.live
        entries = [{"id": key, "type": "info", "topic": "t", "args": [index]} for index, key in enumerate(keys)]
        live.log().write(entries)
        written["log"] = len(keys)
        if place.kind == "jsonl":
            return written
        for index, key in enumerate(keys):
            live.signal(symbol=key, strategy_name="s", exchange_name="x").write({"side": "long", "i": index}, when=7)
        live.signal(symbol="cleared", strategy_name="s", exchange_name="x").write(None)  # stored as null
        written["signal"] = len(keys) + 1
        live.schedule(symbol="BTC/USDT:USDT", strategy_name="s", exchange_name="x").write({"limit": 1.5})
        live.strategy(symbol="BTC/USDT:USDT", strategy_name="s", exchange_name="x").write({"queue": [], "paused": 0})
        live.risk(risk_name="r", exchange_name="x").write({"BTC/USDT:USDT": {"qty": 2**40}})
        live.partial(symbol="a/b", strategy_name="s", exchange_name="x").write("sig-1", {"profit": [10, 20]})
        live.breakeven(symbol="a/b", strategy_name="s", exchange_name="x").write("sig-1", {"reached": True}, when=3)
        candles = live.candle(symbol="BTC/USDT:USDT", interval="1m", exchange_name="x")
        candles.write([{"timestamp": t * 60_000, "open": 1.0, "close": -0.5, "volume": 0} for t in (1, 2, 3, 10)])
        persist.backtest.storage(backtest=True).write([{"id": key, "pnl": 1.25} for key in keys[:5]])
        live.notification(backtest=False).write([{"id": "n1", "text": "日本語 é ✓"}])
        for name in ("measure", "interval"):
            bucket = getattr(live, name)(bucket=keys[1])
            bucket.write("kept", {"v": 1}, when=5)
            bucket.write("gone", "text value")
            bucket.remove("gone")  # soft-deleted: stays in storage, removed
        memory = live.memory(signal_id="sig-1", bucket_name=keys[0])
        for key in keys[:4]:
            memory.write(key, {"note": key, "nested": [[1, [2]], {"$x": {"a.b": None}}]})
        memory.remove(keys[0])
        live.recent(symbol="s", strategy_name="s", exchange_name="x", frame_name="", backtest=True).write({"r": 1})
        live.state(signal_id="sig-1", bucket_name="b").write([1, "two", 3.0])
        live.session(strategy_name="s", exchange_name="x", frame_name="f", symbol="..", backtest=False).write(42)
        written.update(schedule=1, strategy=1, risk=1, partial=1, breakeven=1, candle=4, storage=5, notification=1)
        written.update(measure=2, interval=2, memory=4, recent=1, state=1, session=1)
    return written


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        code = main(list(argv), out=out, err=err)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, out.getvalue() + err.getvalue()


def _pairs() -> list[Any]:
    pairs = [(a, b, None) for a, b in itertools.permutations(STORAGES, 2)]
    pairs += [("jsonl", other, ("log",)) for other in STORAGES] + [(other, "jsonl", ("log",)) for other in STORAGES]
    return [pytest.param(a, b, d, id=f"{a}-{b}" + ("-log" if d else "")) for a, b, d in pairs]


@pytest.mark.parametrize(("source_kind", "target_kind", "domains"), _pairs())
def test_copy_matrix(source_kind: str, target_kind: str, domains: tuple[str, ...] | None, tmp_path: Path) -> None:
    source, target = Place(source_kind, tmp_path, "source"), Place(target_kind, tmp_path, "target")
    try:
        _copy_and_verify(source, target, domains)
    finally:
        source.drop()
        target.drop()


def _copy_and_verify(source: Place, target: Place, domains: tuple[str, ...] | None) -> None:
    expected = {name: count for name, count in fill(source).items() if domains is None or name in domains}
    env = {**source.env, **target.env}

    first = copy(source.url, target.url, domains=domains, env=env)
    assert first.ok, [c for c in first.checks if not c.ok]
    assert {c.domain: c.target_records for c in first.checks if c.target_records} == expected
    assert first.written == sum(expected.values()) and not any(t.kept for t in first.transfers)

    again = copy(source.url, target.url, domains=domains, env=env)
    assert again.ok and again.written == 0
    assert sum(t.identical for t in again.transfers) == sum(expected.values())

    # Tamper with one record directly through the target backend: verification must name that domain.
    name = "log" if domains else "signal"
    spec = DOMAINS[name]
    with backend_for(target.url, env) as backend:
        key, record = backend.list_records(spec, limit=1)[0]
        if spec.first_write_wins:  # jsonl never replaces an entry: add one the source does not hold
            backend.insert_many(spec, [(("tampered",), Record('{"id":"tampered"}'))])
        else:
            backend.put(spec, key, Record(json.dumps({**json.loads(record.payload), "tampered": 1}), record.when))
    argv = ["copy", "--from", source.url, "--to", target.url, "--verify-only", "--json"]
    code, output = run(*argv, *(["--domain", *domains] if domains else []), env=env)
    assert code == EXIT_FAILED
    report = json.loads(output[: output.rindex("}") + 1])
    assert [n for n, d in report["domains"].items() if not d.get("ok", True)] == [name]
    for url in (source.url, target.url):
        password = sa.make_url(url).password if "://" in url and "@" in url else None
        assert password is None or password not in output


def test_second_copy_says_nothing_changed_and_a_kept_candle_fails_verification(tmp_path: Path) -> None:
    source, target = Place("file", tmp_path, "source"), Place("sqlite", tmp_path, "target")
    fill(source)
    code, output = run("copy", "--from", source.url, "--to", target.url)
    assert code == EXIT_OK and "verified: 16 domains" in output
    code, output = run("copy", "--from", source.url, "--to", target.url)
    assert code == EXIT_OK and "copy: nothing changed" in output and "0 written" in output
    spec = DOMAINS["candle"]
    with backend_for(target.url, {}) as backend:
        key, record = backend.list_records(spec, limit=1)[0]
        backend.delete_records(spec, [key])
        backend.insert_many(spec, [(key, Record(record.payload.replace("1.0", "2.0"), record.when))])
    code, output = run("copy", "--from", source.url, "--to", target.url)
    assert code == EXIT_FAILED
    assert "1 kept (first write wins)" in output and "verify FAILED: candle differ" in output


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
@pytest.mark.parametrize(("source_kind", "target_kind"), [("file", "sqlite"), ("postgresql", "file")])
def test_export_import_round_trip(source_kind: str, target_kind: str, suffix: str, tmp_path: Path) -> None:
    source, target = Place(source_kind, tmp_path, "source"), Place(target_kind, tmp_path, "target")
    expected = fill(source)
    path = str(tmp_path / f"dump{suffix}")
    summary = export(path, source.url, env={})
    assert {n: d["records"] for n, d in summary.domains.items() if d["records"]} == expected
    with open(path, "rb") as raw:
        assert (raw.read(2) == b"\x1f\x8b") == suffix.endswith(".gz")
    with gzip.open(path, "rt") if suffix.endswith(".gz") else open(path) as text:
        header = json.loads(text.readline())
    password = sa.make_url(source.url).password if source.kind == "postgresql" else None
    assert set(header["source"]) == set(DOMAINS) and (password is None or password not in json.dumps(header))
    imported = import_dump(path, target.url, env={})
    assert imported.ok and imported.written == sum(expected.values())
    with backend_for(source.url, {}) as left, backend_for(target.url, {}) as right:
        for spec in DOMAINS.values():
            assert digest_of(left, spec).digest == digest_of(right, spec).digest, spec.name
    again = import_dump(path, target.url, env={})
    assert again.ok and again.written == 0


def _exported(tmp_path: Path) -> tuple[str, list[str]]:
    source = Place("file", tmp_path, "source")
    fill(source)
    path = str(tmp_path / "dump.jsonl")
    export(path, source.url, env={})
    with open(path, encoding="utf-8") as fh:
        return path, fh.read().splitlines(keepends=True)


def _line_of(lines: list[str], domain: str) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(f'{{"domain":"{domain}"'))


def _edit(lines: list[str], domain: str, change: dict[str, Any]) -> list[str]:
    index = _line_of(lines, domain)
    record = json.loads(lines[index])
    record.update(change)
    return [*lines[:index], json.dumps(record) + "\n", *lines[index + 1 :]]


# case: (edit of the exported lines, where the error is: a line number, "last", or the domain whose first
# record line is edited, the message)
BAD_FILES: dict[str, tuple[Any, int | str, str]] = {
    "version": (lambda ls: [ls[0].replace('"version":1', '"version":2'), *ls[1:]], 1, "version 2"),
    "control character in a key": (
        lambda ls: _edit(ls, "signal", {"key": {"symbol": "a\nb", "strategy_name": "s", "exchange_name": "x"}}),
        "signal",
        "control character",
    ),
    "NaN value": (lambda ls: _edit(ls, "state", {"value": float("nan")}), "state", "not finite"),
    "removed on a domain without soft delete": (lambda ls: _edit(ls, "signal", {"removed": True}), "signal", "removed"),
    "candle key and value disagree": (
        lambda ls: _edit(ls, "candle", {"value": {"timestamp": 5, "open": 1.0}}),
        "candle",
        "timestamp",
    ),
    "truncated": (lambda ls: ls[:-1], "last", "without its trailer"),
    "edited value": (lambda ls: _edit(ls, "risk", {"value": {"BTC/USDT:USDT": {"qty": 3}}}), "last", "digests (risk)"),
    "duplicate": (lambda ls: [*ls[:2], ls[1], *ls[2:]], 3, "ascending order"),
    "unknown domain": (lambda ls: _edit(ls, "state", {"domain": "nosuch"}), "state", "not among the header"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_import_of_a_bad_file_names_the_line_and_writes_nothing(case: str, tmp_path: Path) -> None:
    path, lines = _exported(tmp_path)
    edit, where, message = BAD_FILES[case]
    bad = edit(lines)
    line = where if isinstance(where, int) else len(bad) if where == "last" else _line_of(lines, where) + 1
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(bad)
    target = Place("sqlite", tmp_path, "target")
    with pytest.raises(DumpFormatError) as caught:
        import_dump(path, target.url, env={})
    assert caught.value.line == line and message in str(caught.value)
    with backend_for(target.url, {}) as backend:
        assert all(not backend.list_records(spec, limit=1) for spec in DOMAINS.values())
    code, output = run("import", path, "--url", target.url)
    assert code == EXIT_FAILED and f"line {line}:" in output


def test_a_gzip_dump_is_streamed_and_a_failed_export_leaves_no_file(tmp_path: Path) -> None:
    source = Place("file", tmp_path, "source")
    fill(source)
    path = tmp_path / "d.jsonl.gz"
    code, output = run("export", str(path), "--url", source.url, "--domain", "memory", "log", "--json")
    assert code == EXIT_OK
    summary = json.loads(output[: output.rindex("}") + 1])
    assert {n: d["records"] for n, d in summary["domains"].items()} == {"log": len(HOSTILE_KEYS), "memory": 4}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = [json.loads(line) for line in fh]
    assert lines[0]["format"] == "backtest-persist-export" and lines[0]["domains"] == ["log", "memory"]
    removed = [line["key"]["memory_id"] for line in lines[1:-1] if line["removed"]]
    assert removed == [HOSTILE_KEYS[0]]
    assert not list(tmp_path.glob("*.partial"))
    code, output = run("export", str(tmp_path / "missing-dir" / "x.jsonl"), "--url", source.url)
    assert code != EXIT_OK and not list(tmp_path.glob("**/*.partial"))


def test_copy_is_refused_while_a_live_bot_owns_the_target(tmp_path: Path) -> None:
    source, target = Place("file", tmp_path, "source"), Place("file", tmp_path, "target")
    fill(source)
    bot = textwrap.dedent(
        f"""
        import sys, time
        from persist_core import setup
        persist = setup({target.url!r}, env={{}})
        persist.live.signal(symbol="x", strategy_name="s", exchange_name="x").write({{"side": "long"}})
        print("owning", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", bot], stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "owning"
        with pytest.raises(OwnershipError, match="owned by another live process"):
            copy(source.url, target.url, env={})
        code, output = run("copy", "--from", source.url, "--to", target.url)
        assert code == EXIT_FAILED and "OwnershipError" in output
        # Comparing only reads: it claims nothing and reports the difference.
        compared = copy(source.url, target.url, env={}, verify_only=True)
        assert not compared.ok and not compared.transfers
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    with backend_for(target.url, {}) as backend:  # nothing was written by the refused copies
        assert [key for key, _ in backend.list_records(DOMAINS["signal"])] == [("x", "s", "x")]


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_progress_redraws_one_line_on_a_terminal_and_writes_plain_lines_otherwise() -> None:
    now = [0.0]
    plain = _Stream(tty=False)
    progress = Progress(plain, "copy", every_records=100, every_seconds=5.0, clock=lambda: now[0])
    for done in range(10, 260, 10):
        now[0] += 0.01
        progress(done, 1000)
    now[0] += 6.0
    progress(260, 1000)  # five seconds passed: a line although fewer than 100 records
    progress.finish()
    lines = plain.getvalue().splitlines()
    assert [line.split(":")[1].split("/")[0].strip() for line in lines] == ["100", "200", "260", "260"]
    assert "\r" not in plain.getvalue() and "ETA" in lines[0] and "rec/s" in lines[0]

    tty = _Stream(tty=True)
    progress = Progress(tty, "copy", clock=lambda: now[0])
    for done in range(1, 51):
        now[0] += 0.0625  # exact in binary: a redraw every second call (at most every 0.1 s)
        progress(done, 50)
    progress.finish()
    text = tty.getvalue()
    assert text.count("\r") == 26 and text.endswith("\n") and text.count("\n") == 1
    assert "50/50 records (100%)" in text.rsplit("\r", 1)[1]


def test_progress_goes_to_stderr_as_plain_lines_when_not_a_terminal(tmp_path: Path) -> None:
    source = Place("file", tmp_path, "source")
    fill(source)
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = main(["copy", "--from", source.url, "--to", f"sqlite:///{tmp_path}/t.db"], out=out, err=err)
    assert code == EXIT_OK and time.monotonic() - started < 30
    assert err.getvalue().splitlines()[-1].startswith("copy: ") and "\r" not in err.getvalue()
    assert "records (100%)" in err.getvalue()


def test_the_demo_killed_on_files_resumes_on_postgresql_after_a_copy() -> None:
    from persist_core.demo.runner import DemoOptions, run_demo

    target = servers.driver_url("postgresql")
    servers.reset(target)
    code, lines = run_demo(DemoOptions(seed=1, resume_url=target))
    assert code == 0, "\n".join(lines)
    copied = next(line for line in lines if line.strip().startswith("copy "))
    assert "to postgresql+psycopg://" in copied and ":***@" in copied and "verified" in copied
    # The restart on PostgreSQL found the killed run's state there (a restart on an empty store would start over).
    restart = " ".join(lines[lines.index(next(line for line in lines if line.startswith("3 restart"))) :])
    assert re.search(r"found step \d+ \((open|partial|close)\) committed in the strategy slot", restart)
    assert "already in storage; resumed at step" in restart
    assert any("final state = reference" in line for line in lines)
    assert lines[-1].startswith("OK: killed mid-trade, resumed")


def test_a_copy_into_a_backend_that_cannot_store_a_domain_with_records_writes_nothing(tmp_path: Path) -> None:
    source, target = Place("file", tmp_path, "source"), Place("jsonl", tmp_path, "target")
    fill(source)
    code, output = run("copy", "--from", source.url, "--to", target.url)
    assert code == EXIT_USAGE and "does not store the 'signal' domain" in output
    with backend_for(target.url, {}) as backend:
        assert backend.list_records(DOMAINS["log"]) == []
    code, output = run("copy", "--from", source.url, "--to", target.url, "--domain", "log")
    assert code == EXIT_OK and f"{len(HOSTILE_KEYS)} records written" in output


# ------------------------------------------------------------------------- properties (memory backends)

_SIGNAL, _MEMORY, _LOG = DOMAINS["signal"], DOMAINS["memory"], DOMAINS["log"]
_records = st.lists(
    st.tuples(key_strings(), json_values(object_only=True), st.none() | st.integers(0, 2**40), st.booleans()),
    max_size=12,
    unique_by=lambda r: r[0],
)


def _store(backend: MemoryBackend, rows: list[tuple[str, Any, int | None, bool]]) -> None:
    for key, value, when, removed in rows:
        payload = encode_value(value)
        backend.put(_SIGNAL, (key, "s", "x"), Record(payload, when))
        backend.put(_MEMORY, ("sig", "b", key), Record(payload, when, removed))
    entries = [((key,), Record(encode_value({**value, "id": key}))) for key, value, _, _ in rows]
    backend.insert_many(_LOG, entries)


_CHANGES = ("absent", "same", "removed flipped", "other when", "other value")


@given(source_rows=_records, extra_rows=_records, data=st.data())
def test_copy_makes_the_target_equal_except_first_write_wins(
    source_rows: list[tuple[str, Any, int | None, bool]],
    extra_rows: list[tuple[str, Any, int | None, bool]],
    data: st.DataObject,
) -> None:
    # The target holds each source record unchanged, changed in one field, or not at all, and maybe more.
    target_rows, clashes = [], 0
    for key, value, when, removed in source_rows:
        change = data.draw(st.sampled_from(_CHANGES))
        if change == "other value":
            clashes += 1  # only log entries, whose value this is, stay as the target had them
            value = {**value, "a-key-longer-than-twenty": 1}
        if change != "absent":
            target_rows.append(
                (
                    key,
                    value,
                    (when or 0) + 1 if change == "other when" else when,
                    removed ^ (change == "removed flipped"),
                )
            )
    known = {row[0] for row in source_rows}
    extra = [row for row in extra_rows if row[0] not in known]
    source, target = MemoryBackend(), MemoryBackend()
    _store(source, source_rows)
    _store(target, target_rows + extra)
    summary = copy_backends(source, target, domains=["signal", "memory", "log"])
    assert {t.domain: t.kept for t in summary.transfers}["log"] == clashes
    verdict = {c.domain: c.ok for c in summary.checks}
    assert verdict == {"signal": not extra, "memory": not extra, "log": not extra and not clashes}
    again = copy_backends(source, target, domains=["signal", "memory", "log"])
    assert again.written == 0 and [c.ok for c in again.checks] == [c.ok for c in summary.checks]


@given(value=json_values(object_only=True), seed=st.randoms(use_true_random=False))
def test_the_digest_ignores_how_the_payload_is_spelled_but_not_what_it_says(value: Any, seed: Any) -> None:
    def shuffled(node: Any) -> Any:
        if isinstance(node, dict):
            items = list(node.items())
            seed.shuffle(items)
            return {k: shuffled(v) for k, v in items}
        return [shuffled(v) for v in node] if isinstance(node, list) else node

    spelled = json.dumps(shuffled(value), indent=1, ensure_ascii=True)
    first, second, third = DomainDigest(), DomainDigest(), DomainDigest()
    first.add(("k",), Record(encode_value(value), 5))
    second.add(("k",), Record(spelled, 5))
    third.add(("k",), Record(encode_value({**value, "a-key-longer-than-twenty": True}), 5))
    assert first.digest == second.digest != third.digest


def test_progress_is_redrawn_in_place_when_stderr_is_a_terminal(tmp_path: Path) -> None:
    source = Place("file", tmp_path, "source")
    fill(source)
    out, err = io.StringIO(), _Stream(tty=True)
    code = main(["export", str(tmp_path / "d.jsonl"), "--url", source.url], out=out, err=err)
    assert code == EXIT_OK
    assert err.getvalue().startswith("\rexport: ") and err.getvalue().endswith("\n")
    assert err.getvalue().count("\n") == 1 and "records (100%)" in err.getvalue()


def test_export_and_import_memory_stays_flat_in_the_number_of_records(tmp_path: Path) -> None:
    import tracemalloc

    spec = DOMAINS["candle"]

    def peaks(n: int) -> tuple[int, int]:
        source, target = f"sqlite:///{tmp_path}/src{n}.db", f"sqlite:///{tmp_path}/dst{n}.db"
        rows = [
            (("BTC/USDT", "1m", "x", i * 60_000), Record(f'{{"timestamp":{i * 60_000},"close":1.5}}')) for i in range(n)
        ]
        with backend_for(source, {}) as backend:
            backend.insert_many(spec, rows)
        del rows
        path = str(tmp_path / f"d{n}.jsonl.gz")
        tracemalloc.start()
        try:
            export(path, source, env={})
            exported = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            assert import_dump(path, target, env={}).ok
            imported = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return exported, imported

    small, large = peaks(2_000), peaks(10_000)
    assert large[0] < 1.5 * small[0] and large[1] < 1.5 * small[1], (small, large)
