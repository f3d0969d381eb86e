"""The benchmark harness computes what it says: synthetic pairs with known costs, call order, skips, output."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import types
from collections.abc import Callable

import pytest

from persist_core.bench import codec_pairs, core_pairs, jsonl_pairs
from persist_core.bench.harness import (
    Pair,
    PairResult,
    Stats,
    auto_chunk,
    collect_pairs,
    format_table,
    format_targets,
    percentile,
    results_json,
    run_pair,
    run_pairs,
)


def busy(micros: int) -> Callable[[int], None]:
    """An operation that spins for at least ``micros`` microseconds (exact lower bound, unlike sleep)."""

    def op(i: int) -> None:
        end = time.perf_counter_ns() + micros * 1000
        while time.perf_counter_ns() < end:
            pass

    return op


def test_a_faster_ours_gives_a_ratio_above_one() -> None:
    result = run_pair(Pair("synthetic", "fast", busy(40), busy(120), "3x slower", n=150), chunk=25)
    # Each call spins at least its cost, so these bounds hold on any machine; noise only pushes towards them.
    assert result.ours.ops_per_s <= 1e6 / 40
    assert result.raw.ops_per_s <= 1e6 / 120
    assert result.ours.p50_us >= 40
    assert result.raw.p50_us >= 120
    assert result.ours.p99_us >= result.ours.p50_us
    assert result.ratio > 1.3
    assert result.ratio == pytest.approx(result.ours.ops_per_s / result.raw.ops_per_s)


def test_a_slower_ours_gives_a_ratio_below_one() -> None:
    result = run_pair(Pair("synthetic", "slow", busy(120), busy(40), "3x faster", n=150), chunk=25)
    assert result.ratio < 0.77


def test_sides_alternate_by_chunk_and_every_index_is_timed_once() -> None:
    calls: list[tuple[str, int]] = []
    events: list[str] = []
    pair = Pair(
        "synthetic",
        "order",
        lambda i: calls.append(("ours", i)),
        lambda i: calls.append(("raw", i)),
        "log",
        n=10,
        setup=lambda: events.append("setup"),
        teardown=lambda: events.append("teardown"),
    )
    result = run_pair(pair, chunk=4, warmup=2)
    assert events == ["setup", "teardown"]
    warmup, timed = calls[:4], calls[4:]
    assert warmup == [("ours", 0), ("raw", 0), ("ours", 1), ("raw", 1)]
    # Chunks of 4: ours first in even chunks, raw first in odd ones; the last chunk is short.
    expected = ["ours"] * 4 + ["raw"] * 4 + ["raw"] * 4 + ["ours"] * 4 + ["ours"] * 2 + ["raw"] * 2
    assert [side for side, _ in timed] == expected
    for side in ("ours", "raw"):
        assert sorted(i for s, i in timed if s == side) == list(range(10))
    assert result.ours.n == result.raw.n == 10


def test_chunks_last_about_a_millisecond() -> None:
    def recording(side: str, cost_us: int, calls: list[str]) -> Callable[[int], None]:
        spin = busy(cost_us)

        def op(i: int) -> None:
            calls.append(side)
            spin(i)

        return op

    slow: list[str] = []
    run_pair(Pair("s", "slow", recording("o", 700, slow), recording("r", 700, slow), "x", n=4), warmup=2)
    assert slow[4:] == ["o", "r", "r", "o", "o", "r", "r", "o"]  # a call of 0.7 ms: sides alternate every call
    assert [auto_chunk(ns) for ns in (0, 300, 20_000, 30_000, 400_000, 700_000, 5_000_000)] == [50, 50, 50, 33, 2, 1, 1]


def test_teardown_runs_when_an_operation_fails() -> None:
    events: list[str] = []

    def broken(i: int) -> None:
        raise OSError("disk on fire")

    pair = Pair("synthetic", "broken", broken, busy(1), "x", n=5, teardown=lambda: events.append("teardown"))
    with pytest.raises(OSError, match="disk on fire"):
        run_pair(pair)
    assert events == ["teardown"]


def test_stats_from_known_durations() -> None:
    durations = [1000] * 99 + [100_000]
    stats = Stats.from_ns(durations)
    assert stats.n == 100
    assert stats.p50_us == 1.0
    assert stats.p99_us == 1.0
    assert stats.ops_per_s == pytest.approx(100 / 199_000e-9)
    assert Stats.from_ns([5, 1, 3]).p50_us == 0.003
    with pytest.raises(ValueError, match="no timings"):
        Stats.from_ns([])


@pytest.mark.parametrize(
    ("pct", "expected"),
    [(0, 1), (1, 1), (50, 50), (99, 99), (99.5, 100), (100, 100)],
)
def test_percentile_is_nearest_rank(pct: float, expected: int) -> None:
    assert percentile(list(range(1, 101)), pct) == expected


def test_missing_and_failing_providers_are_skipped_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    failing = types.ModuleType("bench_failing_provider")

    def bench_pairs(quick: bool) -> list[Pair]:
        raise ConnectionError("cannot reach postgresql://bench:hunter22@127.0.0.1:1/db")

    failing.bench_pairs = bench_pairs  # type: ignore[attr-defined]
    working = types.ModuleType("bench_working_provider")
    working.bench_pairs = lambda quick: [Pair("fake", "op", busy(1), busy(1), "raw", n=1 if quick else 2)]  # type: ignore[attr-defined]
    working.TARGETS = {("fake", "op"): 0.5}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench_failing_provider", failing)
    monkeypatch.setitem(sys.modules, "bench_working_provider", working)

    collected = collect_pairs(True, ["bench_no_such_provider", "bench_failing_provider", "bench_working_provider"])
    assert [(p.backend, p.n) for p in collected.pairs] == [("fake", 1)]
    assert collected.targets == {("fake", "op"): 0.5}
    assert len(collected.skipped) == 2
    assert collected.skipped[0].startswith("bench_no_such_provider: No module named")
    assert collected.skipped[1].startswith("bench_failing_provider: ConnectionError: cannot reach")
    assert "hunter22" not in collected.skipped[1]
    assert "***" in collected.skipped[1]


def test_a_pair_that_fails_is_skipped_and_the_others_run() -> None:
    def no_server() -> None:
        raise ConnectionRefusedError("connection refused")

    pairs = [
        Pair("down", "write", busy(1), busy(1), "raw", n=3, setup=no_server),
        Pair("up", "write", busy(1), busy(1), "raw", n=3),
    ]
    progress: list[str] = []
    results, skipped = run_pairs(pairs, progress=progress.append)
    assert [r.backend for r in results] == ["up"]
    assert skipped == ["down write: ConnectionRefusedError: connection refused"]
    assert progress == ["down write: 3 x 2 calls", "up write: 3 x 2 calls"]


def _result(backend: str, ours: float, raw: float) -> PairResult:
    return PairResult(backend, "write", "tmp+rename", Stats(100, ours, 10.0, 25.5), Stats(100, raw, 8.0, 2000.0))


def test_table_targets_and_json() -> None:
    results = [_result("file", 900.0, 1000.0), _result("memory", 20_000.0, 10_000.0)]
    table = format_table(results).splitlines()
    assert table[0].split()[:4] == ["backend", "operation", "ours", "ops/s"]
    assert "0.90x" in table[2]
    assert "2.00x" in table[3]
    assert "1,000" in table[2]
    assert "2000" in table[2]
    targets = {("file", "write"): 0.95, ("memory", "write"): 0.8}
    assert format_targets(results, targets) == [
        "target file write: 0.90x (>= 0.95x) MISSED",
        "target memory write: 2.00x (>= 0.80x) met",
    ]
    document = json.loads(json.dumps(results_json(results, ["x: skipped"], targets, quick=True)))
    assert document["meta"]["quick"] is True
    assert document["skipped"] == ["x: skipped"]
    assert document["results"][0]["ratio"] == pytest.approx(0.9)
    assert document["results"][0]["target"] == 0.95
    assert document["results"][1]["ours"] == {"n": 100, "ops_per_s": 20_000.0, "p50_us": 10.0, "p99_us": 25.5}


def test_core_value_is_one_kilobyte_of_json() -> None:
    size = len(json.dumps(core_pairs.sample_value(), separators=(",", ":")).encode())
    assert 1000 <= size <= 1100


def test_core_pairs_run_and_clean_up() -> None:
    pairs = core_pairs.bench_pairs(quick=True)
    assert {(p.backend, p.operation) for p in pairs} == {*core_pairs.TARGETS, ("file", "write vs encoding raw")}
    for pair in pairs:
        result = run_pair(dataclasses.replace(pair, n=5), warmup=1)
        assert result.ours.n == result.raw.n == 5
    file_rows = [p for p in pairs if p.backend == "file"]
    # Both file pairs removed their temp folders in teardown.
    roots = {p.ours.__self__.root for p in file_rows}  # the rows object behind the bound methods
    assert all(root and not os.path.exists(root) for root in roots)


def test_core_file_read_returns_the_value_it_times() -> None:
    pair = next(p for p in core_pairs.bench_pairs(quick=True) if (p.backend, p.operation) == ("file", "read"))
    assert pair.setup is not None
    assert pair.teardown is not None
    pair.setup()
    try:
        assert pair.ours(0) == pair.raw(0) == core_pairs.sample_value()
    finally:
        pair.teardown()


def _json_lines(path: str) -> list[object]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def test_jsonl_pairs_run_append_what_they_say_and_clean_up() -> None:
    pairs = jsonl_pairs.bench_pairs(quick=True)
    assert {p.operation for p in pairs} == {
        "append 100",
        "append 100 vs encoding raw",
        "append 100 process",
        "insert_many 100",
    }
    for pair in pairs:
        assert pair.setup is not None
        assert pair.teardown is not None
        pair.setup()
        rows = pair.ours.__self__  # type: ignore[attr-defined]
        try:
            pair.ours(0)
            pair.raw(0)
            ours = _json_lines(os.path.join(rows.root, "ours.jsonl"))
            raw = _json_lines(os.path.join(rows.root, "raw.jsonl"))
            assert len(ours) == len(raw) == jsonl_pairs.BATCH
            assert ours == raw  # the same entries, in the same order, on both sides
        finally:
            pair.teardown()
        assert not os.path.exists(rows.root)


def test_codec_pairs_time_the_same_work_on_both_sides() -> None:
    """Each codec row's two sides give the same text or value, so the ratio compares like with like."""
    pairs = codec_pairs.bench_pairs(quick=True)
    operations = {p.operation for p in pairs}
    assert {"validate+encode 1 KB", "decode 1 KB"} <= operations
    for pair in pairs:
        ours, raw = pair.ours(0), pair.raw(0)
        if isinstance(raw, bytes):  # orjson.dumps
            raw = raw.decode()
        assert ours == raw
        result = run_pair(dataclasses.replace(pair, n=5), warmup=1)
        assert result.ours.n == result.raw.n == 5
