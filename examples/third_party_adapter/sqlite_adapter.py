"""A third-party backend for backtest-persist, written the way an outside author would write one.

It stores every domain in one table of a SQLite file through the standard library's ``sqlite3``, and
imports nothing from backtest-persist but the public ``Backend`` surface. The whole contract test kit
runs against it in ``test_sqlite_adapter.py``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persist_core import Backend, BackendUnavailableError, Capabilities, DomainSpec, Record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    domain  TEXT NOT NULL,
    context TEXT NOT NULL,   -- the context values as a JSON array: injective by construction
    item    ANY  NOT NULL,   -- the item key ('' for slots); TEXT compares byte-wise, INTEGER numerically
    payload TEXT NOT NULL,
    when_ms INTEGER,
    removed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (domain, context, item)
) STRICT, WITHOUT ROWID
"""


class SqliteAdapter(Backend):
    """All 16 domains in one SQLite table; one connection per thread, WAL mode for concurrent processes."""

    capabilities = Capabilities()

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.url = f"sqlite-adapter:{self.path}"
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise BackendUnavailableError(f"cannot open {self.path}: {exc}") from exc
            self._local.conn = conn
        return conn

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._conn().execute(sql, args)
        except sqlite3.Error as exc:  # the one place where driver errors become persist errors
            raise BackendUnavailableError(f"{self.url}: {exc}") from exc

    def open(self) -> None:
        self._execute(_SCHEMA)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @staticmethod
    def _split(domain: DomainSpec, key: tuple[Any, ...]) -> tuple[str, Any]:
        if domain.item is None:
            return json.dumps(list(key)), ""
        return json.dumps(list(key[:-1])), key[-1]

    def get(self, domain: DomainSpec, key: tuple[Any, ...]) -> Record | None:
        context, item = self._split(domain, key)
        row = self._execute(
            "SELECT payload, when_ms, removed FROM records WHERE domain=? AND context=? AND item=?",
            (domain.name, context, item),
        ).fetchone()
        return None if row is None else Record(row[0], row[1], bool(row[2]))

    def scan(
        self, domain: DomainSpec, context: tuple[Any, ...], start: Any = None, stop: Any = None
    ) -> list[tuple[Any, Record]]:
        sql = "SELECT item, payload, when_ms, removed FROM records WHERE domain=? AND context=?"
        args: list[Any] = [domain.name, json.dumps(list(context))]
        if start is not None:
            sql += " AND item >= ?"
            args.append(start)
        if stop is not None:
            sql += " AND item < ?"
            args.append(stop)
        rows = self._execute(sql + " ORDER BY item", args).fetchall()
        return [(row[0], Record(row[1], row[2], bool(row[3]))) for row in rows]

    def put(self, domain: DomainSpec, key: tuple[Any, ...], record: Record) -> None:
        context, item = self._split(domain, key)
        self._execute(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "payload=excluded.payload, when_ms=excluded.when_ms, removed=excluded.removed",
            (domain.name, context, item, record.payload, record.when, int(record.removed)),
        )

    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[tuple[Any, ...], Record]]) -> int:
        stored = 0
        self._execute("BEGIN IMMEDIATE")
        try:
            for key, record in items:
                context, item = self._split(domain, key)
                cursor = self._execute(
                    "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (domain.name, context, item, record.payload, record.when, int(record.removed)),
                )
                stored += cursor.rowcount
            self._execute("COMMIT")
        except BaseException:
            self._execute("ROLLBACK")
            raise
        return stored

    def mark_removed(self, domain: DomainSpec, key: tuple[Any, ...]) -> None:
        context, item = self._split(domain, key)
        self._execute(
            "UPDATE records SET removed=1 WHERE domain=? AND context=? AND item=?", (domain.name, context, item)
        )
