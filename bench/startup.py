"""Start-up and per-operation cost against the number of stored records (issue 11, part 3).

For each backend and size N, the storage holds N records (half 1m candles of one symbol, half log entries,
as in the issue's report) and this script times, on a fresh process-level ``setup()`` each round:

* ``setup+read``: ``setup(url)``, then the first read of a signal slot and of a 100-candle window, then close
  (median of several rounds): what a restarting bot pays before its first decision;
* per operation (mean over many calls, on one open facade): a 100-candle window read, a signal read,
  a signal write and a one-entry log append.

The storage grows in place from one size to the next (only the new records are written). Usage::

    python bench/startup.py                                   # file and sqlite, 10^3 to 10^5
    python bench/startup.py --backend postgresql mariadb --sizes 1000 10000 100000 1000000
    python bench/startup.py --json bench/results/startup.json

PostgreSQL and MariaDB use a scratch database on the servers of ``PERSIST_TEST_POSTGRES_URL`` and
``PERSIST_TEST_MYSQL_URL`` (``scripts/services.sh env``), dropped at the end. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from persist_core import setup
from persist_core.backend import Record
from persist_core.domains import DOMAINS
from persist_core.registry import create_backend

CANDLES = {"symbol": "BTC/USDT", "interval": "1m", "exchange_name": "binance"}
SIGNAL = {"symbol": "BTC/USDT", "strategy_name": "bench", "exchange_name": "binance"}
BAR = '{"close":1.5,"high":2.0,"low":0.5,"open":1.0,"timestamp":%d,"volume":3.0}'
ENTRY = '{"createdAt":"2026-01-01T00:00:00Z","id":"%s","payload":{"n":%d},"type":"info"}'


@contextlib.contextmanager
def _storage(kind: str) -> Iterator[str]:
    """A URL of fresh, empty storage of ``kind``, removed afterwards."""
    if kind in ("file", "sqlite"):
        with tempfile.TemporaryDirectory(prefix="persist-startup-") as folder:
            yield f"file:{folder}/dump?durability=process" if kind == "file" else f"sqlite:///{folder}/state.db"
        return
    import sqlalchemy as sa

    server = os.environ["PERSIST_TEST_POSTGRES_URL" if kind == "postgresql" else "PERSIST_TEST_MYSQL_URL"]
    name = f"persist_startup_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE {name}"))
        admin.dispose()


def _grow(url: str, have: int, want: int) -> float:
    """Store records ``have`` .. ``want - 1`` in batches (even: the next 1m candle, odd: a log entry); seconds."""
    started = time.perf_counter()
    backend = create_backend(url)
    candle, log = DOMAINS["candle"], DOMAINS["log"]
    context = tuple(CANDLES.values())
    with backend:
        for low in range(have, want, 10_000):
            numbers = range(low, min(low + 10_000, want))
            backend.insert_many(
                candle, [((*context, n // 2 * 60_000), Record(BAR % (n // 2 * 60_000))) for n in numbers if n % 2 == 0]
            )
            backend.insert_many(log, [((f"e{n:08}",), Record(ENTRY % (f"e{n:08}", n))) for n in numbers if n % 2])
    return time.perf_counter() - started


def _mean_us(call: Callable[[int], Any], count: int) -> float:
    for i in range(count // 10):  # warm-up
        call(i)
    started = time.perf_counter()
    for i in range(count):
        call(i)
    return (time.perf_counter() - started) / count * 1e6


def _measure(url: str, rounds: int, calls: int) -> dict[str, float]:
    startups = []
    for _ in range(rounds):
        started = time.perf_counter()
        with setup(url, env={}) as persist:
            persist.live.signal(**SIGNAL).read()
            persist.live.candle(**CANDLES).read(100, 0)  # type: ignore[arg-type]
            startups.append((time.perf_counter() - started) * 1000)
    with setup(url, env={}) as persist:
        stores = persist.live
        candles, signal, log = stores.candle(**CANDLES), stores.signal(**SIGNAL), stores.log()  # type: ignore[arg-type]
        run = uuid.uuid4().hex[:6]
        return {
            "setup_read_ms": statistics.median(startups),
            "window_us": _mean_us(lambda i: candles.read(100, (i % 200) * 60_000), calls),
            "signal_read_us": _mean_us(lambda i: signal.read(), calls),
            "signal_write_us": _mean_us(lambda i: signal.write({"n": i}), calls),
            "log_append_us": _mean_us(lambda i: log.write([{"id": f"z{run}{i:07}", "n": i}]), calls),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--backend", nargs="+", default=["file", "sqlite"], choices=["file", "sqlite", "postgresql", "mariadb"]
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[1_000, 10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=5, help="setup rounds per size (median)")
    parser.add_argument("--calls", type=int, default=300, help="calls per operation (mean)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = []
    columns = ("build s", 8), ("setup+read ms", 14), ("window us", 10), ("sig read us", 12), ("sig write us", 13)
    print(f"{'backend':<11} {'records':>9} " + " ".join(f"{name:>{width}}" for name, width in columns) + "  log add us")
    for kind in args.backend:
        with _storage(kind) as url:
            have = 0
            for size in sorted(args.sizes):
                built = _grow(url, have, size)
                have = size
                row = {"backend": kind, "records": size, "build_s": built, **_measure(url, args.rounds, args.calls)}
                rows.append(row)
                print(
                    f"{kind:<11} {size:>9} {built:>8.1f} {row['setup_read_ms']:>14.1f} {row['window_us']:>10.0f} "
                    f"{row['signal_read_us']:>12.0f} {row['signal_write_us']:>13.0f} {row['log_append_us']:>11.0f}",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
