"""The backends the ownership tests run on: each yields ``(url, extra environment)`` on fresh storage.

PostgreSQL and MariaDB run on a scratch database of each test's own on the shared test servers
(``scripts/services.sh``): skipped when a server is unreachable, failed under ``CI=true``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

BACKENDS = ["file", "sqlite", "postgresql", "mariadb", "mongo"]


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A URL of fresh storage on one backend, and the environment a process needs to use it."""
    kind = request.param
    if kind == "file":
        yield f"file:{tmp_path / 'dump'}", {}
    elif kind == "sqlite":
        pytest.importorskip("sqlalchemy")
        yield f"sqlite:///{tmp_path / 'state.db'}", {}
    elif kind in ("postgresql", "mariadb"):
        pytest.importorskip("sqlalchemy")
        from persist_sql import SqlBackend
        from tests.sql import servers

        server = servers.server_url(servers.POSTGRES if kind == "postgresql" else servers.MYSQL)
        with servers.scratch_database(server) as url:
            with SqlBackend(url):  # creates the schema, as `backtest-persist migrate` would
                pass
            yield url, {}
    elif kind == "mongo":
        pytest.importorskip("pymongo")
        from tests.mongo import servers

        # A database of this test alone on the shared FerretDB (fails under CI=true if it is unreachable),
        # with the shared Redis as the id cache, as a deployment would run it.
        server, redis_url = servers.shared_mongo_url(), servers.shared_redis_url()
        database = servers.ScratchDatabase(server, "own")
        try:
            yield database.url, {"PERSIST_REDIS_URL": redis_url}
        finally:
            database.drop()
            servers.delete_redis_namespace(redis_url, database.name)
    else:  # pragma: no cover
        raise AssertionError(kind)
