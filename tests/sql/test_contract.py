"""The contract kit on PostgreSQL, MariaDB and SQLite: every clause of CONTRACTS.md, one test each."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from persist_core.backend import Backend
from persist_core.testing import BackendContractTests
from persist_sql import SqlBackend
from tests.sql import servers


class TestPostgresContract(BackendContractTests):
    declared_capabilities = SqlBackend.capabilities

    @pytest.fixture
    def backend_factory(self, postgres_url: str) -> Callable[[], Backend]:
        servers.reset(postgres_url)
        return functools.partial(SqlBackend.from_url, postgres_url)


class TestMariaDBContract(BackendContractTests):
    declared_capabilities = SqlBackend.capabilities

    @pytest.fixture
    def backend_factory(self, mysql_url: str) -> Callable[[], Backend]:
        servers.reset(mysql_url)
        return functools.partial(SqlBackend.from_url, mysql_url)


class TestSqliteContract(BackendContractTests):
    declared_capabilities = SqlBackend.capabilities

    @pytest.fixture
    def backend_factory(self, sqlite_template: Path, tmp_path: Path) -> Callable[[], Backend]:
        path = tmp_path / "state.db"
        shutil.copyfile(sqlite_template, path)
        return functools.partial(SqlBackend.from_url, f"sqlite:///{path}")


class TestSqliteAsyncFace(TestSqliteContract):
    """The store clauses again on the asyncio face (SQLite runs in the bounded thread pool)."""

    face = "async"


class TestMariaDBAsyncFace(TestMariaDBContract):
    """The store clauses again on the asyncio face (MariaDB runs in the bounded thread pool)."""

    face = "async"
