"""Fixtures of the Mongo backend's tests: a database of their own on the shared FerretDB, private servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mongo import servers
from tests.services import in_ci


@pytest.fixture(scope="class")
def class_database() -> Iterator[servers.ScratchDatabase]:
    """A database of this test class on the shared FerretDB, dropped after the class."""
    database = servers.ScratchDatabase(servers.shared_mongo_url(), "c")
    yield database
    database.drop()


def _need(binary: str | None, what: str) -> str:
    if binary is None:
        message = f"{what} binary not found; run scripts/services.sh (it builds/installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture
def private_ferretdb(tmp_path: Path) -> Iterator[servers.PrivateFerretDB]:
    """A FerretDB (SQLite handler) of this test alone, which the test may kill and restart."""
    server = servers.PrivateFerretDB(_need(servers.ferretdb_binary(), "ferretdb"), tmp_path / "ferretdb")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[servers.PrivateRedis]:
    """A redis-server of this test alone (no persistence), which the test may stop and restart."""
    server = servers.PrivateRedis(_need(servers.redis_binary(), "redis-server"), tmp_path / "redis")
    server.start()
    yield server
    server.kill()
