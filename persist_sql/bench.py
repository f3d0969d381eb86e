"""Benchmark pairs of the SQL backend: each operation next to the raw driver doing the same statement.

Rows (issue 4's targets in :data:`TARGETS`):

- PostgreSQL: slot upsert and point read against raw psycopg prepared statements (``prepare=True``) of the
  same ``INSERT ... ON CONFLICT DO UPDATE`` / ``SELECT``; a 1,000-candle window read against the same range
  ``SELECT``; a bulk write of 1,000 new candles against psycopg ``executemany`` (pipelined) of the same
  ``INSERT ... ON CONFLICT DO NOTHING`` in one transaction.
- MariaDB and SQLite: slot upsert and point read against the raw driver (PyMySQL or mysqlclient, whichever
  the URL uses; the standard library's sqlite3).

Our side goes through ``Persist`` and the typed stores, so it pays for validation and JSON encoding; the raw
side pays for ``json.dumps``/``json.loads`` of the same value. Both sides use one autocommit connection on the
same table, on contexts of their own. Servers: the ``PERSIST_TEST_POSTGRES_URL`` / ``PERSIST_TEST_MYSQL_URL``
environment variables (defaults: the test servers of ``scripts/services.sh``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from typing import Any

from persist_core.bench.core_pairs import sample_value
from persist_core.bench.harness import Pair
from persist_core.config import resolve_routes
from persist_core.persist import Persist
from persist_core.stores import CandleStore, ObjectSlotStore
from persist_sql import SqlBackend

__all__ = ["TARGETS", "bench_pairs"]

#: Issue 4's targets, and issue 13's for SQLite: the smallest acceptable ratio ours/raw per (backend, operation).
TARGETS: dict[tuple[str, str], float] = {
    ("postgresql", "upsert"): 0.9,
    ("postgresql", "point read"): 0.85,
    ("postgresql", "bulk candle write 1000"): 0.8,
    ("sqlite", "upsert"): 0.9,
}

#: The same defaults as the test suite (tests/services.py): the servers that scripts/services.sh starts.
_DEFAULT_URLS = {
    "PERSIST_TEST_POSTGRES_URL": "postgresql+psycopg://persist:persist-test-pw@127.0.0.1:5432/persist_test",
    "PERSIST_TEST_MYSQL_URL": "mysql+pymysql://persist:persist-test-pw@127.0.0.1:3306/persist_test",
}
_WINDOW = 1000
_CANDLE_BASE_MS = 1_500_000_000_000
_STEP_MS = 60_000

# The raw statements, written as a user of the driver would write them.
_PG_UPSERT = (
    "INSERT INTO signal_items (symbol, strategy_name, exchange_name, payload, when_ms) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (symbol, strategy_name, exchange_name) DO UPDATE SET payload = excluded.payload, "
    "when_ms = excluded.when_ms, updated_at = CURRENT_TIMESTAMP"
)
_PG_READ = (
    "SELECT payload::text, when_ms FROM signal_items WHERE symbol = %s AND strategy_name = %s AND exchange_name = %s"
)
_PG_WINDOW = (
    "SELECT timestamp, payload::text FROM candle_items WHERE symbol = %s AND interval = %s AND exchange_name = %s "
    "AND timestamp >= %s AND timestamp < %s ORDER BY timestamp"
)
_PG_CANDLE = (
    "INSERT INTO candle_items (symbol, interval, exchange_name, timestamp, payload, when_ms) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
_MY_UPSERT = (
    "INSERT INTO signal_items (symbol, strategy_name, exchange_name, payload, when_ms) VALUES (%s, %s, %s, %s, %s) "
    "ON DUPLICATE KEY UPDATE payload = VALUES(payload), when_ms = VALUES(when_ms), updated_at = CURRENT_TIMESTAMP"
)
_MY_READ = "SELECT payload, when_ms FROM signal_items WHERE symbol = %s AND strategy_name = %s AND exchange_name = %s"
_LITE_UPSERT = (
    "INSERT INTO signal_items (symbol, strategy_name, exchange_name, payload, when_ms) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (symbol, strategy_name, exchange_name) DO UPDATE SET payload = excluded.payload, "
    "when_ms = excluded.when_ms, updated_at = CURRENT_TIMESTAMP"
)
_LITE_READ = "SELECT payload, when_ms FROM signal_items WHERE symbol = ? AND strategy_name = ? AND exchange_name = ?"


def _url(name: str) -> str:
    return os.environ.get(name) or _DEFAULT_URLS[name]


def _raw_connection(backend: SqlBackend) -> Any:
    """A driver connection of its own, made the way the backend makes them (same options, autocommit)."""
    wrapper = backend._started().engine.raw_connection()
    wrapper.detach()
    return wrapper.dbapi_connection


class _Rows:
    """One database's pairs: our stores and a raw connection of its own, on contexts of their own."""

    slot: ObjectSlotStore  # set by setup()
    window: CandleStore
    bulk: CandleStore

    def __init__(self, url: str) -> None:
        self.url = url
        self.value = sample_value()
        self.tag = f"bench-{uuid.uuid4().hex[:8]}"
        self.persist: Persist | None = None
        self.raw: Any = None
        self.ours_key = (f"{self.tag}-ours", "bench", "bench")
        self.raw_key = (f"{self.tag}-raw", "bench", "bench")
        self.next_ours = 0
        self.next_raw = 0

    # -- lifecycle ----------------------------------------------------------------------------------

    def setup(self) -> None:
        self.persist = Persist(resolve_routes(self.url, env={}))
        backend = self.persist.backend("live", "signal")
        if not isinstance(backend, SqlBackend):  # pragma: no cover - the routes name one SQL URL
            raise TypeError(f"expected the SQL backend, got {backend!r}")
        self.raw = _raw_connection(backend)
        # Stores are made once, as an engine keeps them: the timed calls pay for the operation alone.
        symbol, strategy, exchange = self.ours_key
        self.slot = self.persist.live.signal(symbol=symbol, strategy_name=strategy, exchange_name=exchange)
        self.window = self.candles(self.ours_key[0])
        self.bulk = self.candles(f"{self.tag}-bulk-ours")
        self.slot.write(self.value)
        self.raw_write(0)
        window = [self._candle(k) for k in range(_WINDOW)]
        self.candles(self.ours_key[0]).write(window)
        self.candles(self.raw_key[0]).write(window)

    def teardown(self) -> None:
        if self.raw is not None:
            self.raw.close()
        if self.persist is not None:
            self.persist.close()

    # -- helpers ------------------------------------------------------------------------------------

    def candles(self, symbol: str) -> CandleStore:
        if self.persist is None:  # pragma: no cover - called after setup()
            raise RuntimeError("setup() first")
        return self.persist.live.candle(symbol=symbol, interval="1m", exchange_name="bench")

    def _candle(self, k: int) -> dict[str, Any]:
        price = 42_000.0 + (k % 97) * 0.25
        return {
            "timestamp": _CANDLE_BASE_MS + k * _STEP_MS,
            "open": price,
            "high": price + 12.5,
            "low": price - 11.75,
            "close": price + 0.5,
            "volume": 153.25 + k % 13,
        }

    # -- ours ---------------------------------------------------------------------------------------

    def ours_write(self, i: int) -> None:
        self.slot.write(self.value)

    def ours_read(self, i: int) -> object:
        return self.slot.read()

    # -- raw (overridden per database) --------------------------------------------------------------

    def raw_write(self, i: int) -> None:
        raise NotImplementedError

    def raw_read(self, i: int) -> object:
        raise NotImplementedError


class _PostgresRows(_Rows):
    """psycopg 3 with server-side prepared statements from the first call."""

    def raw_write(self, i: int) -> None:
        self.raw.execute(_PG_UPSERT, (*self.raw_key, json.dumps(self.value, separators=(",", ":")), None), prepare=True)

    def raw_read(self, i: int) -> object:
        row = self.raw.execute(_PG_READ, self.raw_key, prepare=True).fetchone()
        return json.loads(row[0])

    def ours_window(self, i: int) -> object:
        window = self.window.read(_WINDOW, _CANDLE_BASE_MS)
        if window is None:  # pragma: no cover - setup wrote the whole window
            raise RuntimeError("the benchmark window is incomplete")
        return window

    def raw_window(self, i: int) -> object:
        args = (self.raw_key[0], "1m", "bench", _CANDLE_BASE_MS, _CANDLE_BASE_MS + _WINDOW * _STEP_MS)
        rows = self.raw.execute(_PG_WINDOW, args, prepare=True).fetchall()
        if len(rows) != _WINDOW:  # pragma: no cover - setup wrote the whole window
            raise RuntimeError("the benchmark window is incomplete")
        return [json.loads(payload) for _, payload in rows]

    def _batch(self, start: int) -> list[dict[str, Any]]:
        return [self._candle(k) for k in range(start, start + _WINDOW)]

    def ours_bulk(self, i: int) -> int:
        # Every call writes 1,000 candles that are new (first write wins would skip repeated ones).
        self.next_ours += 1
        return self.bulk.write(self._batch(self.next_ours * _WINDOW))

    def raw_bulk(self, i: int) -> None:
        self.next_raw += 1
        symbol = f"{self.tag}-bulk-raw"
        rows = [
            (symbol, "1m", "bench", c["timestamp"], json.dumps(c, separators=(",", ":")), None)
            for c in self._batch(self.next_raw * _WINDOW)
        ]
        with self.raw.transaction(), self.raw.cursor() as cursor:
            cursor.executemany(_PG_CANDLE, rows)

    def teardown(self) -> None:
        try:
            if self.raw is not None:
                self.raw.execute("DELETE FROM candle_items WHERE symbol LIKE %s", (f"{self.tag}-%",))
                self.raw.execute("DELETE FROM signal_items WHERE symbol LIKE %s", (f"{self.tag}-%",))
        finally:
            super().teardown()


class _MariaDBRows(_Rows):
    def raw_write(self, i: int) -> None:
        with self.raw.cursor() as cursor:
            cursor.execute(_MY_UPSERT, (*self.raw_key, json.dumps(self.value, separators=(",", ":")), None))

    def raw_read(self, i: int) -> object:
        with self.raw.cursor() as cursor:
            cursor.execute(_MY_READ, self.raw_key)
            return json.loads(cursor.fetchone()[0])

    def teardown(self) -> None:
        try:
            if self.raw is not None:
                with self.raw.cursor() as cursor:
                    cursor.execute("DELETE FROM candle_items WHERE symbol LIKE %s", (f"{self.tag}-%",))
                    cursor.execute("DELETE FROM signal_items WHERE symbol LIKE %s", (f"{self.tag}-%",))
        finally:
            super().teardown()


class _SqliteRows(_Rows):
    """A database file of its own in a temporary folder, made by setup() and removed by teardown()."""

    def __init__(self) -> None:
        super().__init__("sqlite://")  # replaced in setup(): building the pairs must create nothing
        self.folder = ""

    def setup(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="persist-bench-sqlite-")
        self.url = f"sqlite:///{os.path.join(self.folder, 'bench.db')}"
        super().setup()

    def raw_write(self, i: int) -> None:
        self.raw.execute(_LITE_UPSERT, (*self.raw_key, json.dumps(self.value, separators=(",", ":")), None))

    def raw_read(self, i: int) -> object:
        return json.loads(self.raw.execute(_LITE_READ, self.raw_key).fetchone()[0])

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            if self.folder:
                shutil.rmtree(self.folder, ignore_errors=True)


def bench_pairs(quick: bool) -> list[Pair]:
    """The PostgreSQL, MariaDB and SQLite rows; ``quick`` runs fewer operations."""
    n, window_n, bulk_n = (300, 40, 20) if quick else (3000, 300, 100)
    pairs: list[Pair] = []
    pg = _PostgresRows(_url("PERSIST_TEST_POSTGRES_URL"))
    prepared = "psycopg prepared"
    pairs += [
        Pair("postgresql", "upsert", pg.ours_write, pg.raw_write, prepared, n=n, setup=pg.setup),
        Pair("postgresql", "point read", pg.ours_read, pg.raw_read, prepared, n=n),
        Pair("postgresql", "window read 1000", pg.ours_window, pg.raw_window, prepared, n=window_n),
        Pair(
            "postgresql", "bulk candle write 1000", pg.ours_bulk, pg.raw_bulk, "psycopg executemany (pipeline)",
            n=bulk_n, teardown=pg.teardown,
        ),
    ]  # fmt: skip
    my_url = _url("PERSIST_TEST_MYSQL_URL")
    my = _MariaDBRows(my_url)
    driver = SqlBackend(my_url)._parsed.sa_url.get_driver_name()
    pairs += [
        Pair("mariadb", "upsert", my.ours_write, my.raw_write, driver, n=n, setup=my.setup),
        Pair("mariadb", "point read", my.ours_read, my.raw_read, driver, n=n, teardown=my.teardown),
    ]
    lite = _SqliteRows()
    pairs += [
        Pair("sqlite", "upsert", lite.ours_write, lite.raw_write, "sqlite3", n=n, setup=lite.setup),
        Pair("sqlite", "point read", lite.ours_read, lite.raw_read, "sqlite3", n=n, teardown=lite.teardown),
    ]
    return pairs
