"""Copy throughput (issue 11): ``backtest-persist copy`` of N records file -> PostgreSQL, beside a raw bulk insert.

The source is a file storage holding N records (half 1m candles of ten symbols, half log entries, built as in
``bench/startup.py``). Timed, each into a scratch PostgreSQL database of its own (dropped at the end):

* ``copy``: :func:`persist_core.transfer.copy`, which lists the source page by page, writes what the target
  lacks in batches and then verifies both sides (counts and a SHA-256 digest per domain): what an operator
  moving a bot runs;
* ``copy again``: the same copy a second time (idempotent: it reads both sides, writes nothing, verifies);
* ``raw COPY``: the same rows, already in memory, into the same tables with psycopg's ``COPY ... FROM STDIN``
  in one transaction (the fastest way PostgreSQL takes rows; no reading of the source, no verification);
* ``raw executemany``: the same rows with psycopg ``executemany`` of ``INSERT ... ON CONFLICT DO NOTHING``
  (pipelined) in one transaction.

Usage::

    eval "$(bash scripts/services.sh env)"
    python bench/copy_speed.py                 # 10^5 records
    python bench/copy_speed.py --records 20000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from startup import _storage  # the scratch storages of the start-up bench

from persist_core.backend import Record
from persist_core.domains import DOMAINS
from persist_core.registry import create_backend
from persist_core.transfer import copy

BAR = '{"close":1.5,"high":2.0,"low":0.5,"open":1.0,"timestamp":%d,"volume":3.0}'
ENTRY = '{"createdAt":"2026-01-01T00:00:00Z","id":"%s","payload":{"n":%d},"type":"info"}'
SYMBOLS = 10


def _rows(records: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The candle and log keys and payloads of the source: ``records`` in all."""
    candles = [
        (f"SYM{i % SYMBOLS}/USDT", "1m", "binance", (i // SYMBOLS) * 60_000, BAR % ((i // SYMBOLS) * 60_000))
        for i in range((records + 1) // 2)
    ]
    log = [(f"e{n:08}", ENTRY % (f"e{n:08}", n)) for n in range(1, records, 2)]
    return candles, log


def _fill(url: str, candles: list[tuple[Any, ...]], log: list[tuple[Any, ...]]) -> float:
    started = time.perf_counter()
    with create_backend(url) as backend:
        for low in range(0, len(candles), 10_000):
            batch = candles[low : low + 10_000]
            backend.insert_many(DOMAINS["candle"], [(row[:4], Record(row[4])) for row in batch])
        for low in range(0, len(log), 10_000):
            backend.insert_many(DOMAINS["log"], [((row[0],), Record(row[1])) for row in log[low : low + 10_000]])
    return time.perf_counter() - started


def _raw(url: str, candles: list[tuple[Any, ...]], log: list[tuple[Any, ...]], how: str) -> float:
    """Insert the rows with raw psycopg into the tables our backend created in ``url``'s database; seconds."""
    import psycopg
    import sqlalchemy as sa

    with create_backend(url):  # creates the schema, as the copy's target does
        pass
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            if how == "copy":
                columns = "symbol, interval, exchange_name, timestamp, payload"
                with cur.copy(f"COPY candle_items ({columns}) FROM STDIN") as c:
                    for row in candles:
                        c.write_row(row)
                with cur.copy("COPY log_items (entry_id, payload) FROM STDIN") as c:
                    for row in log:
                        c.write_row(row)
            else:
                cur.executemany(
                    "INSERT INTO candle_items (symbol, interval, exchange_name, timestamp, payload) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    candles,
                )
                cur.executemany("INSERT INTO log_items (entry_id, payload) VALUES (%s, %s) ON CONFLICT DO NOTHING", log)
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records in the source (default 10^5)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    candles, log = _rows(args.records)
    n = len(candles) + len(log)
    figures: dict[str, float] = {}
    with _storage("file") as source:
        figures["fill_s"] = _fill(source, candles, log)
        with _storage("postgresql") as target:
            started = time.perf_counter()
            summary = copy(source, target, env={})
            figures["copy_s"] = time.perf_counter() - started
            if not summary.ok or summary.written != n:
                print(f"copy did not verify or wrote {summary.written} of {n}", file=sys.stderr)
                return 1
            started = time.perf_counter()
            again = copy(source, target, env={})
            figures["copy_again_s"] = time.perf_counter() - started
            if not again.ok or again.written:
                print(f"the second copy wrote {again.written} records or did not verify", file=sys.stderr)
                return 1
        for how in ("copy", "executemany"):
            with _storage("postgresql") as raw_target:
                figures[f"raw_{how}_s"] = _raw(raw_target, candles, log, how)
    print(f"{n} records (candles of {SYMBOLS} symbols and log entries), file -> PostgreSQL:")
    for label, key in (
        ("copy (with verification)", "copy_s"),
        ("copy again (writes nothing)", "copy_again_s"),
        ("raw psycopg COPY FROM STDIN", "raw_copy_s"),
        ("raw psycopg executemany", "raw_executemany_s"),
    ):
        print(f"  {label:<30} {figures[key]:7.2f} s  {n / figures[key]:>9,.0f} records/s")
    print(f"  (building the file source took {figures['fill_s']:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"records": n, **figures}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
