"""``prune`` (issue 11): exactly the records the retention rules name go, on real backends; nothing else."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persist_core import OwnershipError, setup
from persist_core.backend import Key, Record
from persist_core.backends.jsonl import JsonlBackend
from persist_core.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from persist_core.domains import DOMAINS, DomainSpec
from persist_core.errors import ConfigurationError
from persist_core.prune import PrunePolicy, PruneReport, item_time, parse_duration, parse_time, prune, prune_storages
from persist_core.registry import create_backend
from persist_core.stores import CollectionStore, make_store
from tests.sql import servers

NOW = 1_750_000_000_000
DAY = 86_400_000
MINUTE = 60_000
SIGNAL = {"symbol": "BTC/USDT", "strategy_name": "s", "exchange_name": "binance"}
BAR = {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 3.0}


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(params=["file", "sqlite", "postgresql", "mariadb"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file:{tmp_path}/dump"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    server = servers.driver_url(request.param)
    servers.reset(server)
    return server


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _fill(url: str) -> None:
    """Every rule's domains, with records on both sides of each rule, and domains no rule touches."""
    with setup(url, env={}) as persist:
        persist.live.signal(**SIGNAL).write({"side": "long"})
        for symbol in ("BTC/USDT", "ETH/USDT"):
            persist.live.candle(symbol=symbol, interval="1m", exchange_name="binance").write(
                [{"timestamp": i * MINUTE, **BAR} for i in range(12)]
            )
        persist.live.candle(symbol="BTC/USDT", interval="5m", exchange_name="binance").write(
            [{"timestamp": i * 5 * MINUTE, **BAR} for i in range(4)]
        )
        persist.live.log().write(
            [{"id": f"e{i:02}", "timestamp": NOW - (i * 7 % 10) * DAY} for i in range(10)] + [{"id": "undated"}]
        )
        for backtest in (False, True):
            persist.live.notification(backtest=backtest).write(
                [{"id": f"n{i}", "createdAt": _iso(NOW - i * DAY)} for i in range(6)]
            )
        persist.live.storage(backtest=False).write([{"id": f"s{i}", "updatedAt": NOW - i * 20 * DAY} for i in range(4)])
        for bucket in ("a", "b"):
            measure = persist.live.measure(bucket=bucket)
            for i in range(4):
                measure.write(f"k{i}", {"v": i}, when=NOW - i * 50 * DAY)
            measure.remove("k0")  # recent: stays
            measure.remove("k3")  # 150 days old: purged with the flag
        memory = persist.live.memory(signal_id="sig", bucket_name="llm")
        memory.write("old", {"v": 1}, when=NOW - 400 * DAY)
        memory.write("undated", {"v": 2})
        memory.remove("old")
        memory.remove("undated")
        persist.live.state(signal_id="sig", bucket_name="llm").write({"x": 1})


def _snapshot(url: str) -> dict[tuple[str, Key], Record]:
    backend = create_backend(url)
    with backend:
        out = {}
        for name, spec in DOMAINS.items():
            after: Key | None = None
            while page := backend.list_records(spec, after=after, limit=7):
                out.update({(name, key): record for key, record in page})
                after = page[-1][0]
        return out


def _expected_gone(
    before: dict[tuple[str, Key], Record], *, keep: int, age_ms: int, candles: int, purge: int | None
) -> set[tuple[str, Key]]:
    """What the rules say goes, worked out from the whole snapshot at once (the prune itself streams)."""
    gone = {k for k in before if k[0] == "candle" and k[1][-1] < candles}
    for name in ("log", "notification", "storage"):
        spec = DOMAINS[name]
        by_context: dict[Key, list[tuple[int, Key]]] = {}
        for (domain, key), record in before.items():
            if domain == name:
                when = item_time(spec, json.loads(record.payload))
                if when is not None:
                    by_context.setdefault(key[: len(spec.context)], []).append((when, key))
        for dated in by_context.values():
            dated.sort(reverse=True)
            gone |= {(name, key) for n, (when, key) in enumerate(dated) if n >= keep or when < NOW - age_ms}
    if purge is not None:
        gone |= {
            k
            for k, r in before.items()
            if k[0] in ("measure", "interval", "memory") and r.removed and r.when is not None and r.when < NOW - purge
        }
    return gone


def test_prune_deletes_exactly_what_the_rules_say_and_a_dry_run_counts_the_same(url: str) -> None:
    _fill(url)
    before = _snapshot(url)
    rules: dict[str, Any] = {
        "candles_before": 5 * MINUTE,
        "keep_last": 4,
        "older_than": "5d",
        "purge_removed_older_than": "100d",
    }
    dry = prune(url, env={}, now_ms=NOW, dry_run=True, **rules)
    assert _snapshot(url) == before  # a dry run deletes nothing
    report = prune(url, env={}, now_ms=NOW, **rules)
    after = _snapshot(url)
    gone = _expected_gone(before, keep=4, age_ms=5 * DAY, candles=5 * MINUTE, purge=100 * DAY)
    assert gone and set(before) - set(after) == gone
    assert all(after[k] == before[k] for k in after)  # what stays is unchanged
    assert {(d.domain, d.deleted) for d in dry.domains} == {(d.domain, d.deleted) for d in report.domains}
    assert report.deleted == len(gone)
    by_domain = {d.domain: d for d in report.domains}
    assert by_domain["log"].undated == 1 and ("log", ("undated",)) in after
    assert by_domain["memory"].undated == 1  # removed without a when: kept unless the age is 0
    assert prune(url, env={}, now_ms=NOW, **rules).deleted == 0  # a second run finds nothing


def test_removed_entries_stay_without_the_flag(url: str) -> None:
    _fill(url)
    before = _snapshot(url)
    report = prune(url, env={}, now_ms=NOW, keep_last=2)
    after = _snapshot(url)
    assert {d.domain for d in report.domains} == {"log", "notification", "storage"}
    assert {k for k in before if k[0] not in ("log", "notification", "storage")} <= set(after)
    assert set(before) - set(after) == _expected_gone(before, keep=2, age_ms=10**15, candles=-1, purge=None)


def test_purge_with_age_zero_takes_every_removed_entry(tmp_path: Path) -> None:
    url = f"file:{tmp_path}/dump"
    _fill(url)
    before = _snapshot(url)
    prune(url, env={}, now_ms=NOW, purge_removed_older_than="0d")
    after = _snapshot(url)
    assert set(before) - set(after) == {k for k, r in before.items() if r.removed}


def test_domains_narrow_the_rules_and_a_domain_no_rule_concerns_is_refused(tmp_path: Path) -> None:
    url = f"file:{tmp_path}/dump"
    _fill(url)
    before = _snapshot(url)
    report = prune(url, env={}, now_ms=NOW, keep_last=1, domains=["storage"])
    assert [d.domain for d in report.domains] == ["storage"]
    assert {k[0] for k in set(before) - set(_snapshot(url))} == {"storage"}
    with pytest.raises(ConfigurationError, match="no given rule prunes the signal domain"):
        prune(url, env={}, keep_last=1, domains=["signal"])
    with pytest.raises(ConfigurationError, match="needs a rule"):
        prune(url, env={})


def _split_env(tmp_path: Path) -> dict[str, str]:
    """The log on a ``jsonl:`` route, everything else on ``file:``; ten dated log entries and an undated one."""
    env = {"PERSIST_URL": f"file:{tmp_path}/dump", "PERSIST_LOG_URL": f"jsonl:{tmp_path}/log.jsonl"}
    with setup(env=env) as persist:
        persist.live.log().write([{"id": f"e{i}", "timestamp": NOW - i * DAY} for i in range(10)] + [{"id": "u"}])
        persist.live.notification(backtest=False).write([{"id": f"n{i}", "timestamp": NOW - i * DAY} for i in range(4)])
    return env


def _log_lines(tmp_path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]


def test_a_jsonl_log_is_pruned_by_age_then_by_count_and_nothing_else_goes(tmp_path: Path) -> None:
    env = _split_env(tmp_path)
    dry = prune(env=env, now_ms=NOW, older_than="5d", domains=["log"], dry_run=True)
    assert _log_lines(tmp_path) == [*(f"e{i}" for i in range(10)), "u"]
    report = prune(env=env, now_ms=NOW, older_than="5d", domains=["log"])
    assert [(d.domain, d.url, d.deleted, d.undated) for d in report.domains] == [
        ("log", f"jsonl:{tmp_path}/log.jsonl", 4, 1)
    ]
    assert dry.deleted == report.deleted
    assert _log_lines(tmp_path) == ["e0", "e1", "e2", "e3", "e4", "e5", "u"]  # the file itself, in its order
    report = prune(env=env, now_ms=NOW, keep_last=2)
    assert {d.domain: d.deleted for d in report.domains} == {"log": 4, "notification": 2, "storage": 0}
    assert _log_lines(tmp_path) == ["e0", "e1", "u"]
    with setup(env=env) as persist:
        assert [e["id"] for e in persist.live.log().read()] == ["e0", "e1", "u"]
        assert [n["id"] for n in persist.live.notification(backtest=False).read()] == ["n0", "n1"]
    assert list(tmp_path.glob("log.jsonl.*")) == []  # no temp file, no quarantine


def test_cli_prune_of_a_jsonl_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _split_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    code, out, _ = run("prune", "--keep-last", "3", "--domain", "log", "--json")
    assert code == EXIT_OK
    assert json.loads(out)["domains"] == [
        {"domain": "log", "url": f"jsonl:{tmp_path}/log.jsonl", "examined": 11, "deleted": 7, "undated": 1}
    ]
    assert _log_lines(tmp_path) == ["e0", "e1", "e2", "u"]


def test_the_facade_prunes_its_jsonl_log_and_another_instance_follows(tmp_path: Path) -> None:
    env = _split_env(tmp_path)
    with setup(env=env) as persist, create_backend(env["PERSIST_LOG_URL"]) as backend:
        persist.claim_ownership()
        log, other = persist.live.log(), make_store(backend, DOMAINS["log"], {})
        assert isinstance(other, CollectionStore)
        assert len(other.read()) == 11  # another instance of the jsonl backend, indexed before the prune
        assert persist.prune(keep_last=3, domains=["log"]).deleted == 7
        log.write([{"id": "e9", "timestamp": NOW}, {"id": "new"}])  # a pruned id may come again
        other.write([{"id": "e0", "timestamp": 0}, {"id": "late"}])  # e0 is still there: skipped
        expected = ["e0", "e1", "e2", "e9", "late", "new", "u"]
        assert [e["id"] for e in log.read()] == [e["id"] for e in other.read()] == expected
        assert log.read()[0] == {"id": "e0", "timestamp": NOW}
    assert _log_lines(tmp_path) == ["e0", "e1", "e2", "u", "e9", "new", "late"]


class _CountingJsonl(JsonlBackend):
    """The jsonl backend, recording the size of every deletion it is asked for."""

    def __init__(self, path: Path, batch: int | None) -> None:
        super().__init__(path, durability="process")
        if batch is not None:
            self.capabilities = dataclasses.replace(JsonlBackend.capabilities, deletion_batch=batch)
        self.calls: list[int] = []

    def delete_records(self, domain: DomainSpec, keys: Sequence[Key]) -> int:
        self.calls.append(len(keys))
        return super().delete_records(domain, keys)


@pytest.mark.parametrize(("batch", "calls"), [(None, [9]), (4, [4, 4, 1])])
def test_prune_deletes_in_batches_of_the_backends_deletion_batch(
    tmp_path: Path, batch: int | None, calls: list[int]
) -> None:
    """A jsonl deletion rewrites the file, so it asks for its keys in large batches: one compaction here."""
    _split_env(tmp_path)
    with _CountingJsonl(tmp_path / "log.jsonl", batch) as backend:
        report = prune_storages([(backend, ["log"])], PrunePolicy.build(NOW, keep_last=1))
        assert report.deleted == 9 and backend.calls == calls
    assert _log_lines(tmp_path) == ["e0", "u"]


def test_prune_under_a_live_owner_in_another_process_is_refused(tmp_path: Path) -> None:
    from tests.ownership.test_processes import Child

    url = f"file:{tmp_path}/dump"
    _fill(url)
    before = _snapshot(url)
    child = Child(url, 2.0, {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}, tmp_path / "child.err")
    try:
        child.expect("ack", timeout=30)
        assert prune(url, env={}, now_ms=NOW, keep_last=1, dry_run=True).deleted > 0  # a dry run claims nothing
        with pytest.raises(OwnershipError, match=f"pid {child.proc.pid}"):
            prune(url, env={}, now_ms=NOW, keep_last=1)
        code, _, err = run("prune", "--url", url, "--keep-last", "1")
        assert code == EXIT_FAILED and "OwnershipError" in err
        assert {k for k in _snapshot(url) if k[0] != "signal"} == {k for k in before if k[0] != "signal"}
    finally:
        child.kill()


def test_the_facade_prunes_its_own_live_state_while_it_owns_it(tmp_path: Path) -> None:
    url = f"file:{tmp_path}/dump"
    with setup(url, env={}) as persist:
        persist.claim_ownership()
        log = persist.live.log()
        log.write([{"id": f"e{i}", "timestamp": i} for i in range(5)])
        report = persist.prune(keep_last=2)
        assert isinstance(report, PruneReport) and report.deleted == 3
        assert [e["id"] for e in log.read()] == ["e3", "e4"]


def test_cli_prune(tmp_path: Path) -> None:
    url = f"file:{tmp_path}/dump"
    _fill(url)
    before = _snapshot(url)
    code, out, _ = run("prune", "--url", url, "--candles-before", "1970-01-01T00:03:00Z", "--dry-run", "--json")
    assert code == EXIT_OK and _snapshot(url) == before
    report = json.loads(out)
    assert report["dry_run"] is True and report["deleted"] == 3 * 2 + 1  # three per 1m context, one at 5m
    code, out, _ = run("prune", "--url", url, "--candles-before", str(3 * MINUTE))
    assert code == EXIT_OK and "deleted 7 records" in out
    assert set(before) - set(_snapshot(url)) == {k for k in before if k[0] == "candle" and k[1][-1] < 3 * MINUTE}
    for bad in (["--older-than", "soon"], ["--candles-before", "yesterday"], ["--keep-last", "0"], []):
        code, _, err = run("prune", "--url", url, *bad)
        assert code == EXIT_USAGE and "backtest-persist:" in err


@pytest.mark.parametrize(
    ("text", "ms"), [("90d", 90 * DAY), ("12h", 12 * 3_600_000), ("30m", 30 * MINUTE), ("2w", 14 * DAY), ("0d", 0)]
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration(text, "age") == ms


def test_times() -> None:
    assert parse_time("2024-01-01", "t") == parse_time("2024-01-01T00:00:00+00:00", "t") == 1_704_067_200_000
    assert parse_time("1704067200000", "t") == 1_704_067_200_000
    with pytest.raises(ConfigurationError):
        parse_time(datetime(2024, 1, 1), "t")  # a naive datetime is refused


@given(
    times=st.lists(st.one_of(st.none(), st.integers(0, 50)), max_size=30),
    keep=st.integers(1, 6),
    page=st.integers(1, 4),
)
def test_keep_last_keeps_the_newest_dated_items_at_any_page_size(
    times: list[int | None], keep: int, page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streaming heap against a sort of the whole context, across page and batch boundaries."""
    monkeypatch.setattr("persist_core.prune.PAGE_SIZE", page)
    with setup("memory://", env={}) as persist:
        items = [{"id": f"i{n:02}", **({} if t is None else {"timestamp": t})} for n, t in enumerate(times)]
        persist.backtest.notification(backtest=True).write(items)
        persist.backtest.notification(backtest=False).write(items[:3])
        persist.prune(keep_last=keep)
        dated = sorted(((t, f"i{n:02}") for n, t in enumerate(times) if t is not None), reverse=True)
        kept = {key for _, key in dated[:keep]} | {f"i{n:02}" for n, t in enumerate(times) if t is None}
        assert {i["id"] for i in persist.backtest.notification(backtest=True).read()} == kept
        assert len(persist.backtest.notification(backtest=False).read()) == min(3, len(times)) - max(
            0, len([t for t in times[:3] if t is not None]) - keep
        )
