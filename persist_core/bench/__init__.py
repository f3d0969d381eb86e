"""Benchmarks: each operation of ours timed next to the raw operation it is built on, in the same run.

Run them with ``backtest-persist bench``; :mod:`persist_core.bench.harness` is the runner and
:class:`~persist_core.bench.harness.Pair` the unit a provider module hands it. See ``docs/benchmarks.md``.
"""

from persist_core.bench.harness import Pair, PairResult, Stats, run_pair

__all__ = ["Pair", "PairResult", "Stats", "run_pair"]
