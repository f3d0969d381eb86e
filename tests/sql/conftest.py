"""Fixtures of the SQL backend's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from persist_sql import SqlBackend
from tests.sql import servers


@pytest.fixture(scope="session", autouse=True)
def _session_databases() -> Iterator[None]:
    """Drop the session's own databases on the shared servers when the session ends."""
    yield
    servers.drop_session_databases()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """This session's database on the shared PostgreSQL (the owner role)."""
    return servers.session_url(servers.POSTGRES)


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """This session's database on the shared MariaDB (the owner role)."""
    return servers.session_url(servers.MYSQL)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file created at head once; tests copy it instead of creating 16 tables each."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    with SqlBackend(f"sqlite:///{path}"):
        pass
    return path


@pytest.fixture
def postgres_scratch(postgres_url: str) -> Iterator[str]:
    """The URL of an empty PostgreSQL database of this test alone."""
    with servers.scratch_database(postgres_url) as url:
        yield url


@pytest.fixture
def mysql_scratch(mysql_url: str) -> Iterator[str]:
    """The URL of an empty MariaDB database of this test alone."""
    with servers.scratch_database(mysql_url) as url:
        yield url
