"""Runs the whole backtest-persist contract kit against the example adapter: one subclass, one fixture (and the
optional error-injection hook)."""

import contextlib
import functools
import sqlite3

import pytest
from sqlite_adapter import SqliteAdapter

from persist_core.testing import BackendContractTests


@contextlib.contextmanager
def renamed_table(adapter):
    """The adapter's table renamed away for the ``with`` block: every statement then fails."""
    conn = sqlite3.connect(adapter.path, isolation_level=None)
    try:
        conn.execute("ALTER TABLE records RENAME TO records_broken")
        try:
            yield
        finally:
            conn.execute("ALTER TABLE records_broken RENAME TO records")
    finally:
        conn.close()


class TestSqliteAdapter(BackendContractTests):
    @pytest.fixture
    def backend_factory(self, tmp_path):
        return functools.partial(SqliteAdapter, tmp_path / "adapter.db")

    @pytest.fixture
    def break_storage(self):
        return renamed_table
