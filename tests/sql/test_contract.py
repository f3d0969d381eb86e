"""The contract kit on PostgreSQL, MariaDB and SQLite: every clause of CONTRACTS.md, one test each."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import ClassVar

import pytest

from persist_core.async_backend import AsyncBackend
from persist_core.backend import Backend
from persist_core.testing import BackendContractTests, StorageBreaker, async_face
from persist_sql import AsyncSqlBackend, SqlBackend
from tests.sql import servers


class _BreaksTables:
    """The kit's error-injection hook for SQL: the domain tables renamed away while the backend writes."""

    @pytest.fixture
    def break_storage(self) -> StorageBreaker:
        def broken(backend: Backend) -> AbstractContextManager[object]:
            assert isinstance(backend, SqlBackend)
            return servers.renamed_tables(backend)

        return broken


class TestPostgresContract(_BreaksTables, BackendContractTests):
    declared_capabilities = SqlBackend.capabilities

    @pytest.fixture
    def backend_factory(self, postgres_url: str) -> Callable[[], Backend]:
        servers.reset(postgres_url)
        return functools.partial(SqlBackend.from_url, postgres_url)


class TestMariaDBContract(_BreaksTables, BackendContractTests):
    declared_capabilities = SqlBackend.capabilities

    @pytest.fixture
    def backend_factory(self, mysql_url: str) -> Callable[[], Backend]:
        servers.reset(mysql_url)
        return functools.partial(SqlBackend.from_url, mysql_url)


class TestSqliteContract(_BreaksTables, BackendContractTests):
    declared_capabilities = SqlBackend.capabilities

    @pytest.fixture
    def backend_factory(self, sqlite_template: Path, tmp_path: Path) -> Callable[[], Backend]:
        path = tmp_path / "state.db"
        shutil.copyfile(sqlite_template, path)
        return functools.partial(SqlBackend.from_url, f"sqlite:///{path}")


class TestSqliteAsyncFace(TestSqliteContract):
    """The store clauses again on the asyncio face (SQLite runs in the bounded thread pool)."""

    face = "async"


class _NativeAsyncFace:
    """Every store clause again on the asyncio face, through the native AsyncSqlBackend.

    The kit asks for the async backend at each ``store()`` call; one is built per sync backend (on the same
    database, sharing its schema check and leases) and opens lazily in the kit's event loop at its first call.
    """

    face = "async"
    _natives: ClassVar[dict[int, tuple[Backend, AsyncSqlBackend]]] = {}

    @classmethod
    def async_backend_for(cls, backend: Backend) -> AsyncBackend:
        if not isinstance(backend, SqlBackend):  # pragma: no cover - the fixture builds SqlBackends
            raise TypeError(f"expected a SqlBackend, got {backend!r}")
        entry = cls._natives.get(id(backend))
        if entry is None or entry[0] is not backend:
            entry = cls._natives[id(backend)] = (
                backend,
                AsyncSqlBackend(backend._parsed.sa_url.render_as_string(hide_password=False), sync=backend),
            )
        return entry[1]

    @pytest.fixture(autouse=True)
    def _close_natives(self) -> Iterator[None]:
        yield
        natives, type(self)._natives = type(self)._natives, {}
        for _, native in natives.values():
            async_face.run(native.close())


class TestPostgresAsyncFace(_NativeAsyncFace, TestPostgresContract):
    """The contract on the asyncio face of PostgreSQL (psycopg's AsyncConnection)."""


class TestMariaDBAsyncFace(_NativeAsyncFace, TestMariaDBContract):
    """The contract on the asyncio face of MariaDB (asyncmy)."""
