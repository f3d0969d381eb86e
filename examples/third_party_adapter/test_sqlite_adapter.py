"""Runs the whole backtest-persist contract kit against the example adapter: one subclass, one fixture."""

import functools

import pytest
from sqlite_adapter import SqliteAdapter

from persist_core.testing import BackendContractTests


class TestSqliteAdapter(BackendContractTests):
    @pytest.fixture
    def backend_factory(self, tmp_path):
        return functools.partial(SqliteAdapter, tmp_path / "adapter.db")
