"""Test databases of the SQL backend: the shared servers' URLs, fast resets, scratch databases.

The tests work in a database of their own session (:func:`session_url`), created on the shared server at
first use and dropped at the end, so that two test runs on one machine (or a bench) never empty each other's
tables. Every contract test starts on empty tables: :func:`reset` deletes the rows of the 17 tables (much
faster than dropping and creating them). Tests that need a database of their own (schema states, migration
races, least privilege) get a scratch database that is dropped afterwards.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from persist_core.domains import DOMAINS
from persist_sql import SqlBackend
from persist_sql._schema import LEASE_TABLE
from tests.services import in_ci, require

POSTGRES = "PERSIST_TEST_POSTGRES_URL"
POSTGRES_APP = "PERSIST_TEST_POSTGRES_APP_URL"
MYSQL = "PERSIST_TEST_MYSQL_URL"
MYSQL_APP = "PERSIST_TEST_MYSQL_APP_URL"

_engines: dict[str, sa.Engine] = {}
_ready: set[str] = set()


def _probe(url: str) -> None:
    engine = sa.create_engine(SqlBackend(url)._parsed.sa_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def server_url(name: str) -> str:
    """The URL of a shared test server (skipped locally, failed in CI, when it does not answer)."""
    return require(name, _probe)


_session_databases: dict[str, tuple[str, str]] = {}  # server variable -> (shared URL, session database URL)


def session_url(name: str) -> str:
    """The URL of this test session's database on the shared server ``name`` (created at first use)."""
    if name not in _session_databases:
        shared = server_url(name)
        database = f"persist_scratch_{uuid.uuid4().hex[:12]}"
        _create_database(shared, database)
        _session_databases[name] = (shared, _with_database(shared, database))
    return _session_databases[name][1]


def drop_session_databases() -> None:
    """Drop the databases that :func:`session_url` created (at the end of the session)."""
    while _session_databases:
        _, (shared, url) = _session_databases.popitem()
        engine = _engines.pop(url, None)
        if engine is not None:
            engine.dispose()
        _drop_database(admin_engine(shared), sa.make_url(shared).get_backend_name(), sa.make_url(url).database or "")


def admin_engine(url: str) -> sa.Engine:
    """A pooled engine on ``url`` for the tests' own statements (kept for the session)."""
    engine = _engines.get(url)
    if engine is None:
        engine = sa.create_engine(SqlBackend(url)._parsed.sa_url, pool_size=1)
        _engines[url] = engine
    return engine


def reset(url: str) -> None:
    """Empty the 16 tables and the leases of ``url``'s database (creating the schema at head the first time)."""
    if url not in _ready:
        with SqlBackend(url):
            pass
        _ready.add(url)
    with admin_engine(url).begin() as connection:
        for spec in DOMAINS.values():
            connection.execute(sa.table(spec.table_name).delete())
        connection.execute(sa.table(LEASE_TABLE).delete())


def _with_database(url: str, database: str) -> str:
    return sa.make_url(url).set(database=database).render_as_string(hide_password=False)


@contextlib.contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """A new, empty database on ``url``'s server (same owner), dropped afterwards; yields its URL."""
    name = f"persist_scratch_{uuid.uuid4().hex[:12]}"
    _create_database(url, name)
    try:
        yield _with_database(url, name)
    finally:
        _drop_database(admin_engine(url), sa.make_url(url).get_backend_name(), name)


@contextlib.contextmanager
def own_storage(kind: str, folder: Path) -> Iterator[str]:
    """The URL of an empty storage of one test: ``file``/``sqlite`` under ``folder``, or a scratch database on
    the shared ``postgresql``/``mariadb`` server (dropped afterwards)."""
    if kind in ("file", "sqlite"):
        yield f"file:{folder}/dump" if kind == "file" else f"sqlite:///{folder / 'state.db'}"
        return
    with scratch_database(server_url(POSTGRES if kind == "postgresql" else MYSQL)) as url:
        yield url


def _create_database(url: str, name: str) -> None:
    with admin_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))


def _drop_database(engine: sa.Engine, backend: str, name: str) -> None:
    # A session of another role (the least-privilege one) may take a moment to end after its client closed
    # it, and the owner may not terminate it: retry for a few seconds.
    statement = f"DROP DATABASE IF EXISTS {name}" + (" WITH (FORCE)" if backend == "postgresql" else "")
    deadline = time.monotonic() + 10
    while True:
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(sa.text(statement))
            return
        except sa.exc.DBAPIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def driver_url(kind: str) -> str:
    """The shared server of ``kind``; ``mysqlclient`` is MariaDB through the other driver, when installed."""
    if kind == "postgresql":
        return session_url(POSTGRES)
    url = session_url(MYSQL)
    if kind == "mysqlclient":
        try:
            import MySQLdb  # noqa: F401
        except ImportError:
            message = "mysqlclient is not installed (optional driver; scripts/test.sh installs it)"
            if in_ci():
                pytest.fail(message)
            pytest.skip(message)
        url = sa.make_url(url).set(drivername="mysql+mysqldb").render_as_string(hide_password=False)
    return url


@contextlib.contextmanager
def renamed_tables(backend: SqlBackend) -> Iterator[None]:
    """Rename the 16 domain tables of ``backend``'s database away for the ``with`` block, then back: the contract
    kit's ``break_storage`` hook (every statement of the backend then meets a missing table)."""
    url = backend._parsed.sa_url
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    quote = engine.dialect.identifier_preparer.quote
    names = [spec.table_name for spec in DOMAINS.values()]

    def rename(pairs: list[tuple[str, str]]) -> None:
        with engine.begin() as connection:
            for old, new in pairs:
                connection.execute(sa.text(f"ALTER TABLE {quote(old)} RENAME TO {quote(new)}"))

    try:
        rename([(name, f"{name}_broken") for name in names])
        try:
            yield
        finally:
            rename([(f"{name}_broken", name) for name in names])
    finally:
        engine.dispose()
