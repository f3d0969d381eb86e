"""The benchmark runner: our operation and the raw operation it is built on, interleaved, in one run.

A provider module exposes ``bench_pairs(quick: bool) -> list[Pair]`` (and optionally ``TARGETS``, a
mapping ``(backend, operation) -> minimum ratio``). For each :class:`Pair` the runner calls ``setup``,
warms both sides up, then times ``ours(i)`` and ``raw(i)`` one call at a time with
:func:`time.perf_counter_ns`, in alternating chunks of about a millisecond (ours first in even chunks,
raw first in odd ones), so that machine noise hits both sides alike. The ratio is ours ops/s divided by
raw ops/s: above 1 we are faster than the raw reference, below 1 we pay that much overhead. Only ratios
from one run mean anything on a noisy machine.
"""

from __future__ import annotations

import gc
import importlib
import math
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from persist_core.urls import mask_url

__all__ = [
    "PROVIDERS",
    "Collected",
    "Pair",
    "PairResult",
    "Stats",
    "auto_chunk",
    "collect_pairs",
    "format_table",
    "format_targets",
    "percentile",
    "results_json",
    "run_pair",
    "run_pairs",
]

#: The modules asked for pairs, in this order. A missing module or server is reported, not fatal.
PROVIDERS: tuple[str, ...] = (
    "persist_core.bench.codec_pairs",
    "persist_core.bench.core_pairs",
    "persist_core.bench.jsonl_pairs",
    "persist_sql.bench",
    "persist_sql.async_bench",
    "persist_mongo.bench",
    "persist_mongo.async_bench",
    "persist_core.bench.unit_pairs",
)

#: The most operations per chunk before the runner switches sides.
CHUNK = 50
#: A chunk lasts about this long: slow operations (an fsync'ed write) alternate every call or two, so
#: that a stall of the disk or the machine lands on both sides alike; fast ones run in chunks of ``CHUNK``.
CHUNK_NS = 1_000_000


@dataclass
class Pair:
    """One benchmark row: an operation of ours and the raw operation it is built on.

    ``ours(i)`` does one operation through the library and ``raw(i)`` the same work through the raw
    driver or the standard library, for ``i`` in ``range(n)``. Both are called again with the first
    indices during warm-up, so they must be repeatable. ``setup`` runs before the warm-up and ``teardown``
    after the last call (also when a call raised).
    """

    backend: str
    operation: str
    ours: Callable[[int], object]
    raw: Callable[[int], object]
    raw_label: str
    n: int = 2000
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None


@dataclass(frozen=True)
class Stats:
    """Timings of one side of a pair.

    Attributes:
        n: operations timed.
        ops_per_s: ``n`` divided by the summed time of the timed calls (the harness' own loop excluded).
        p50_us, p99_us: latency percentiles (nearest rank) in microseconds.
    """

    n: int
    ops_per_s: float
    p50_us: float
    p99_us: float

    @classmethod
    def from_ns(cls, durations_ns: Sequence[int]) -> Stats:
        """Summarise per-call durations in nanoseconds."""
        if not durations_ns:
            raise ValueError("no timings to summarise")
        ordered = sorted(durations_ns)
        total = sum(ordered)
        # A call faster than the clock's resolution reads as 0 ns; count it as 1 ns rather than divide by 0.
        ops = len(ordered) * 1e9 / max(total, 1)
        return cls(len(ordered), ops, percentile(ordered, 50) / 1e3, percentile(ordered, 99) / 1e3)

    def as_dict(self) -> dict[str, float | int]:
        """The figures as plain JSON types."""
        return {"n": self.n, "ops_per_s": self.ops_per_s, "p50_us": self.p50_us, "p99_us": self.p99_us}


@dataclass(frozen=True)
class PairResult:
    """The measured figures of one pair."""

    backend: str
    operation: str
    raw_label: str
    ours: Stats
    raw: Stats

    @property
    def ratio(self) -> float:
        """Ours ops/s divided by raw ops/s (1.0 = as fast as the raw operation)."""
        return self.ours.ops_per_s / self.raw.ops_per_s

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON types."""
        return {
            "backend": self.backend,
            "operation": self.operation,
            "raw_label": self.raw_label,
            "ours": self.ours.as_dict(),
            "raw": self.raw.as_dict(),
            "ratio": self.ratio,
        }


def percentile(ordered: Sequence[int], pct: float) -> int:
    """The nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _time_calls(op: Callable[[int], object], indices: Iterable[int], out: list[int]) -> None:
    clock = time.perf_counter_ns
    append = out.append
    for i in indices:
        start = clock()
        op(i)
        append(clock() - start)


def auto_chunk(per_call_ns: float) -> int:
    """Calls per chunk for calls of ``per_call_ns``: about :data:`CHUNK_NS` worth, 1 to :data:`CHUNK`."""
    return max(1, min(CHUNK, int(CHUNK_NS / max(per_call_ns, 1.0))))


def run_pair(pair: Pair, *, chunk: int | None = None, warmup: int | None = None) -> PairResult:
    """Measure one pair: setup, warm-up, interleaved timed chunks, teardown.

    Args:
        chunk: calls per side before switching to the other side (default: as many as take about
            :data:`CHUNK_NS` by the warm-up's timing, between 1 and :data:`CHUNK`).
        warmup: untimed calls per side before timing (default: a tenth of ``n``, at least 10, at most ``n``).
    """
    if pair.n < 1 or (chunk is not None and chunk < 1):
        raise ValueError("n and chunk must be positive")
    warm = min(pair.n, max(10, pair.n // 10)) if warmup is None else min(pair.n, warmup)
    ours_ns: list[int] = []
    raw_ns: list[int] = []
    if pair.setup is not None:
        pair.setup()
    try:
        started = time.perf_counter_ns()
        for i in range(warm):
            pair.ours(i)
            pair.raw(i)
        if chunk is None:
            chunk = auto_chunk((time.perf_counter_ns() - started) / max(1, 2 * warm))
        gc.collect()
        for number, start in enumerate(range(0, pair.n, chunk)):
            indices = range(start, min(start + chunk, pair.n))
            if number % 2 == 0:
                _time_calls(pair.ours, indices, ours_ns)
                _time_calls(pair.raw, indices, raw_ns)
            else:
                _time_calls(pair.raw, indices, raw_ns)
                _time_calls(pair.ours, indices, ours_ns)
    finally:
        if pair.teardown is not None:
            pair.teardown()
    return PairResult(pair.backend, pair.operation, pair.raw_label, Stats.from_ns(ours_ns), Stats.from_ns(raw_ns))


@dataclass
class Collected:
    """What the providers handed over: pairs, the providers that were skipped and why, and targets."""

    pairs: list[Pair] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    targets: dict[tuple[str, str], float] = field(default_factory=dict)


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return mask_url(f"{type(exc).__name__}: {text}" if not isinstance(exc, ImportError) else text)


def collect_pairs(quick: bool, providers: Sequence[str] = PROVIDERS) -> Collected:
    """Import each provider module and ask it for its pairs.

    A provider whose module, driver or server is missing is recorded in ``skipped`` (one line each):
    benchmarks are not tests, and a machine without PostgreSQL can still measure the file backend.
    """
    collected = Collected()
    for name in providers:
        try:
            module = importlib.import_module(name)
            pairs = list(module.bench_pairs(quick))
        except Exception as exc:  # any failure of an optional provider is a skip, never a crash
            collected.skipped.append(f"{name}: {_why(exc)}")
            continue
        collected.pairs.extend(pairs)
        targets: Mapping[tuple[str, str], float] = getattr(module, "TARGETS", {})
        collected.targets.update(targets)
    return collected


def run_pairs(
    pairs: Sequence[Pair],
    *,
    progress: Callable[[str], None] | None = None,
    chunk: int | None = None,
) -> tuple[list[PairResult], list[str]]:
    """Run every pair; a pair whose setup or calls fail is skipped with its reason."""
    results: list[PairResult] = []
    skipped: list[str] = []
    for pair in pairs:
        if progress is not None:
            progress(f"{pair.backend} {pair.operation}: {pair.n} x 2 calls")
        try:
            results.append(run_pair(pair, chunk=chunk))
        except Exception as exc:
            skipped.append(f"{pair.backend} {pair.operation}: {_why(exc)}")
    return results, skipped


_HEADERS = ("backend", "operation", "ours ops/s", "p50 us", "p99 us", "raw", "raw ops/s", "p50 us", "p99 us", "ratio")
_RIGHT = {2, 3, 4, 6, 7, 8, 9}


def _us(value: float) -> str:
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def format_table(results: Sequence[PairResult]) -> str:
    """The results as an aligned text table (one row per pair)."""
    rows = [
        (
            r.backend,
            r.operation,
            f"{r.ours.ops_per_s:,.0f}",
            _us(r.ours.p50_us),
            _us(r.ours.p99_us),
            r.raw_label,
            f"{r.raw.ops_per_s:,.0f}",
            _us(r.raw.p50_us),
            _us(r.raw.p99_us),
            f"{r.ratio:.2f}x",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [_HEADERS, *rows]) for i in range(len(_HEADERS))]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in _RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(_HEADERS), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def format_targets(results: Sequence[PairResult], targets: Mapping[tuple[str, str], float]) -> list[str]:
    """One line per measured pair that has a target: the ratio, the target and whether it was met."""
    lines = []
    for r in results:
        target = targets.get((r.backend, r.operation))
        if target is not None:
            verdict = "met" if r.ratio >= target else "MISSED"
            lines.append(f"target {r.backend} {r.operation}: {r.ratio:.2f}x (>= {target:.2f}x) {verdict}")
    return lines


def results_json(
    results: Sequence[PairResult],
    skipped: Sequence[str],
    targets: Mapping[tuple[str, str], float],
    *,
    quick: bool,
) -> dict[str, Any]:
    """Everything a run measured, with enough about the machine to tell runs apart."""
    return {
        "meta": {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "python": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "quick": quick,
            "chunk_max": CHUNK,
            "chunk_ns": CHUNK_NS,
        },
        "results": [{**r.as_dict(), "target": targets.get((r.backend, r.operation))} for r in results],
        "skipped": list(skipped),
    }
