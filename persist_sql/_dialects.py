"""What differs between PostgreSQL, MariaDB/MySQL and SQLite, and nothing else.

Everything dialect-specific lives here: which driver a bare URL picks, the engine options, the byte-wise
collation of key columns, the payload column type, table options, the upsert syntax, the batch form of a
write and the lock that serialises two migrating processes. The rest of the package asks these functions
and stays dialect-neutral.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import re
import sqlite3
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect

from persist_core import deadlines
from persist_core.errors import BackendUnavailableError, ConfigurationError
from persist_core.registry import check_driver, missing_driver
from persist_core.urls import check_credentials, describe_options, mask_url, parse_boolean

__all__ = [
    "OPTIONS",
    "Kind",
    "ParsedUrl",
    "array_parameters",
    "batch_by_arrays",
    "configure_engine",
    "engine_options",
    "insert",
    "insert_new",
    "key_collation",
    "kind_of",
    "migration_lock",
    "parse_timeout",
    "parse_url",
    "pass_through",
    "payload_out",
    "payload_type",
    "prepare_sqlite_file",
    "session_settings",
    "table_options",
    "upsert",
]

#: The database families the backend knows. MySQL 8 is supported by the same code as MariaDB but only
#: MariaDB is tested.
Kind = Literal["postgresql", "mariadb", "mysql", "sqlite"]

#: Query parameters of the URL that configure this backend rather than the driver.
OPTIONS = frozenset({"auto_migrate", "timeout"})
_OPTIONS_HELP = {
    "auto_migrate": "a boolean: 1/0, true/false, yes/no, on/off",
    "timeout": "seconds, a number > 0, the deadline of every operation",
}
#: Query parameters that go to a MariaDB/MySQL driver (docs/sql.md): what SQLAlchemy's mysqldb and pymysql
#: dialects translate or hand on, and both drivers accept.
MYSQL_PASS_THROUGH = frozenset(
    {
        "charset",
        "client_flag",
        "compress",
        "connect_timeout",
        "init_command",
        "local_infile",
        "passwd",
        "password",
        "read_timeout",
        "sql_mode",
        "ssl_ca",
        "ssl_capath",
        "ssl_cert",
        "ssl_check_hostname",
        "ssl_cipher",
        "ssl_key",
        "unix_socket",
        "use_unicode",
        "write_timeout",
    }
)
#: Driver-specific additions to :data:`MYSQL_PASS_THROUGH`.
MYSQL_DRIVER_PASS_THROUGH = {
    "pymysql": frozenset({"bind_address", "program_name", "ssl_disabled", "ssl_verify_cert", "ssl_verify_identity"}),
    "mysqldb": frozenset({"ssl_mode"}),
}
#: Query parameters that go to SQLite: pysqlite's own and, with ``uri=true``, SQLite's URI parameters.
#: (``check_same_thread`` and ``isolation_level`` are set by the backend and are not the user's to change;
#: ``timeout``, pysqlite's busy timeout, is the backend's own deadline option, which sets it.)
SQLITE_PASS_THROUGH = frozenset(
    {"cache", "cached_statements", "detect_types", "immutable", "mode", "nolock", "psow", "uri", "vfs"}
)
#: Seconds a connection attempt of schema work (migrations, ``check``) may take; runtime connections are
#: bounded by the backend's ``timeout`` instead.
CONNECT_TIMEOUT_S = 10
#: The default deadline of every operation of a runtime backend, in seconds (the ``timeout`` option).
DEFAULT_TIMEOUT_S = deadlines.DEFAULT_TIMEOUT_SECONDS
#: The largest ``timeout`` accepted: a day (PostgreSQL's statement_timeout is a 32-bit count of ms).
MAX_TIMEOUT_S = deadlines.MAX_TIMEOUT_SECONDS
#: The share of the deadline given to the server's own limits (lock and statement timeouts): a server that
#: still answers reports its own limit, with the connection intact, before the client-side bound fires.
SERVER_SHARE = 0.9
#: Seconds a SQLite connection waits for another writer's lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 30.0
#: Seconds a process waits for another process' migration before giving up.
MIGRATION_LOCK_TIMEOUT_S = 300


@dataclass(frozen=True)
class ParsedUrl:
    """A backend URL split into what SQLAlchemy gets and what the backend keeps.

    Attributes:
        sa_url: the SQLAlchemy URL with the driver chosen and the backend's own options removed.
        display: the URL as the user wrote it, password masked: for every message.
        options: the backend's own query options (``auto_migrate``).
    """

    sa_url: sa.URL
    display: str
    options: Mapping[str, str]

    @property
    def timeout(self) -> float | None:
        """The ``timeout`` URL option in seconds, ``None`` when the URL has none."""
        value = self.options.get("timeout")
        return None if value is None else parse_timeout(self.display, value)


#: The module of each driver that persist_core.registry.SQL_DRIVERS lets through.
_DRIVER_MODULES = {"psycopg": "psycopg", "pymysql": "pymysql", "mysqldb": "MySQLdb", "pysqlite": "sqlite3"}


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def parse_url(url: str) -> ParsedUrl:
    """Pick the driver of a bare URL and split off the backend's options.

    ``postgres://`` and ``postgresql://`` use psycopg 3; ``mysql://`` and ``mariadb://`` use mysqlclient when
    it is installed and PyMySQL otherwise (docs/sql.md says why). An in-memory SQLite URL is refused: every
    connection would see its own empty database, which is not shared storage.
    """
    display = mask_url(url)
    check_credentials(url)
    check_driver(url)
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"not a SQLAlchemy URL: {display!r}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    backend = backend.lower()
    if backend in ("postgres", "postgresql"):
        drivername = f"postgresql+{driver or 'psycopg'}"
    elif backend in ("mysql", "mariadb"):
        drivername = f"{backend}+{driver or ('mysqldb' if _have('MySQLdb') else 'pymysql')}"
    elif backend == "sqlite":
        drivername = f"sqlite+{driver or 'pysqlite'}"
        database = parsed.database or ""
        memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory" or "mode=memory" in database
        if memory:
            raise ConfigurationError(
                f"{display!r} is an in-memory SQLite database, private to one connection: use a file "
                "(sqlite:///path/state.db) or the memory:// backend"
            )
    else:
        raise ConfigurationError(f"the sql backend does not serve {backend!r} URLs: {display!r}")
    module = _DRIVER_MODULES[drivername.partition("+")[2].lower()]
    if not _have(module):  # here rather than at the first connection, with the command that installs it
        raise missing_driver(url, module)
    _check_query(url, display, parsed.query, drivername)
    options: dict[str, str] = {}
    for name, value in parsed.query.items():
        if name not in OPTIONS:
            continue
        if not isinstance(value, str):
            raise ConfigurationError(f"option {name} is given more than once in {display!r}")
        options[name] = value
        if name == "timeout":
            parse_timeout(display, value)
        else:
            parse_boolean(url, name, value)
    sa_url = parsed.set(drivername=drivername).difference_update_query(OPTIONS)
    return ParsedUrl(sa_url, display, options)


def parse_timeout(display: str, value: object) -> float:
    """The ``timeout`` option in seconds (see persist_core.deadlines); ``display`` is the masked URL."""
    return deadlines.parse_timeout(value, f"for {display!r}")


def pass_through(drivername: str) -> frozenset[str] | None:
    """The query parameters that go to the driver of ``drivername`` (docs/sql.md), ``None`` if unknown.

    PostgreSQL: every connection parameter of the installed libpq (psycopg lists them), since SQLAlchemy's
    psycopg dialect hands the query to libpq as it is. ``None`` for a driver we do not know, or one that is
    not installed (its import fails later, with the extra to install).
    """
    backend, _, driver = drivername.partition("+")
    if backend == "postgresql":
        if driver != "psycopg" or not _have("psycopg"):
            return None
        from psycopg import pq

        return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())
    if backend in ("mysql", "mariadb"):
        return MYSQL_PASS_THROUGH | MYSQL_DRIVER_PASS_THROUGH.get(driver, frozenset())
    if backend == "sqlite":
        return SQLITE_PASS_THROUGH
    return None


def _check_query(url: str, display: str, query: Mapping[str, Any], drivername: str) -> None:
    # A misspelt option (auto_migrat=1, sslmod=require) would otherwise reach the driver at the first
    # connection as a generic error, or be dropped; this names it when the URL is read.
    allowed = pass_through(drivername)
    if allowed is None:
        return
    unknown = sorted(name for name in query if name not in OPTIONS and name not in allowed)
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(mask_url(name) for name in unknown)} in {display!r}; known: "
            f"{describe_options(_OPTIONS_HELP)}; passed to the {drivername} driver: {', '.join(sorted(allowed))} "
            "(docs/sql.md)"
        )


def kind_of(dialect: Dialect) -> Kind:
    """The database family of an (initialised) dialect; MariaDB is told apart from MySQL by the server."""
    if dialect.name == "postgresql":
        return "postgresql"
    if dialect.name in ("mysql", "mariadb"):
        return "mariadb" if getattr(dialect, "is_mariadb", False) else "mysql"
    if dialect.name == "sqlite":
        return "sqlite"
    raise ConfigurationError(f"the sql backend does not support the {dialect.name!r} dialect")


def engine_options(sa_url: sa.URL, *, autocommit: bool, timeout: float | None = None) -> dict[str, Any]:
    """``create_engine`` keyword arguments.

    Runtime engines are autocommit: each statement is its own transaction, so a write is one round trip
    (no BEGIN/COMMIT). Statements are compiled with a positional paramstyle so that a call passes a tuple.
    The backend pools connections itself (:mod:`persist_sql._pool`), so the engine only creates them.

    ``timeout`` is the runtime backend's deadline (docs/sql.md, "Deadlines"): it sets the driver's connect
    timeout, MariaDB/MySQL's read and write timeouts, SQLite's busy timeout, and PostgreSQL's lock and
    statement timeouts (as connection options, so they cost no round trip). The server's own limits get
    :data:`SERVER_SHARE` of it. Without it (schema work, ``check``): a :data:`CONNECT_TIMEOUT_S` connect
    timeout, a :data:`SQLITE_BUSY_TIMEOUT_S` busy timeout and no statement limits, since a migration cut
    in the middle would be worse than a wait. Whatever the URL sets explicitly is kept.
    """
    query = sa_url.query
    connect_args: dict[str, Any] = {}
    options: dict[str, Any] = {"poolclass": sa.pool.NullPool}
    backend = sa_url.get_backend_name()
    # Drivers take whole seconds (libpq at least 2); the backend's client-side bound cuts a connection
    # attempt off at the deadline itself (persist_sql._pool).
    connect_timeout = CONNECT_TIMEOUT_S if timeout is None else max(1, math.ceil(timeout))
    if backend == "postgresql":
        options["paramstyle"] = "format"
        if "connect_timeout" not in query:
            connect_args["connect_timeout"] = max(2, connect_timeout)
        if timeout is not None and sa_url.get_driver_name() == "psycopg":
            server_ms = max(1, int(timeout * SERVER_SHARE * 1000))
            ours = f"-c lock_timeout={server_ms} -c statement_timeout={server_ms}"
            theirs = query.get("options")
            # libpq applies the settings in order: the URL's own, after ours, win.
            connect_args["options"] = f"{ours} {theirs}" if isinstance(theirs, str) else ours
    elif backend in ("mysql", "mariadb"):
        options["paramstyle"] = "format"
        # SQLAlchemy sets CLIENT.FOUND_ROWS; without it, an ON DUPLICATE KEY UPDATE that changes nothing
        # counts 0 affected rows and an insert 1, so a batch's rowcount is the number of rows inserted.
        flags = query.get("client_flag")
        connect_args["client_flag"] = int(flags) if isinstance(flags, str) else 0
        if "charset" not in query:
            connect_args["charset"] = "utf8mb4"
        if "connect_timeout" not in query:
            connect_args["connect_timeout"] = connect_timeout
        if timeout is not None:
            # Each read or write of the socket (mysqlclient: whole seconds). A backstop: the backend's
            # watchdog shuts the socket down at the deadline itself.
            for name in ("read_timeout", "write_timeout"):
                if name not in query:
                    connect_args[name] = max(1, math.ceil(timeout))
        if sa_url.get_driver_name() == "pymysql" and _loopback(sa_url) and not any(k.startswith("ssl") for k in query):
            # PyMySQL >= 1.2 tries TLS by default ("preferred", without verifying the certificate) and
            # builds a default SSL context for every connection: ~60 ms of loading CA files each time.
            # TLS to this same machine protects nothing, so loopback connections skip it.
            connect_args["ssl_disabled"] = True
    elif backend == "sqlite":
        connect_args["check_same_thread"] = False
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_S if timeout is None else timeout
    if autocommit:
        options["isolation_level"] = "AUTOCOMMIT"
    options["connect_args"] = connect_args
    return options


def session_settings(kind: Kind, timeout: float) -> str | None:
    """The statement that sets a new MariaDB/MySQL connection's lock wait and statement limits, or ``None``.

    ``innodb_lock_wait_timeout`` takes whole seconds (at least 1); MariaDB's ``max_statement_time`` takes
    fractions and also ends a lock wait, so on MariaDB it is the one that acts. MySQL's own
    ``max_execution_time`` covers SELECTs only; there the lock wait limit and the client-side bound act.
    """
    server = timeout * SERVER_SHARE
    if kind == "mariadb":
        return f"SET SESSION innodb_lock_wait_timeout = {max(1, math.ceil(server))}, max_statement_time = {server:.3f}"
    if kind == "mysql":
        return f"SET SESSION innodb_lock_wait_timeout = {max(1, math.ceil(server))}"
    return None


def _loopback(sa_url: sa.URL) -> bool:
    host = (sa_url.host or "localhost").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


#: Server-side prepared statements psycopg keeps per connection: every statement of the 16 domains (~130)
#: fits, so none is deallocated and prepared again (each costs a round trip). psycopg's default is 100.
PSYCOPG_PREPARED_MAX = 256


def configure_engine(engine: sa.Engine, timeout: float | None = None) -> None:
    """Per-connection set-up.

    psycopg: room for every statement among the prepared ones (:data:`PSYCOPG_PREPARED_MAX`). MariaDB/MySQL,
    with a ``timeout``: the session's lock wait and statement limits (:func:`session_settings`; one round
    trip per new connection). SQLite: WAL mode, which lets readers go on while one writer commits, in this
    process and in others; the busy timeout (``timeout``, else :data:`SQLITE_BUSY_TIMEOUT_S`) makes a second
    writer wait for the first instead of failing. The journal mode is stored in the file, so setting it is a
    no-op after the first connection.
    """
    if engine.dialect.driver == "psycopg":

        @sa.event.listens_for(engine, "connect")
        def _prepared_max(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.prepared_max = PSYCOPG_PREPARED_MAX

        return
    if engine.dialect.name in ("mysql", "mariadb"):
        if timeout is None:
            return
        seconds = timeout

        @sa.event.listens_for(engine, "connect")
        def _limits(dbapi_connection: Any, record: Any) -> None:
            kind: Kind = "mariadb" if "mariadb" in str(dbapi_connection.get_server_info()).lower() else "mysql"
            statement = session_settings(kind, seconds)
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(statement)
            finally:
                cursor.close()

        return
    if engine.dialect.name != "sqlite":
        return
    busy = SQLITE_BUSY_TIMEOUT_S if timeout is None else timeout

    @sa.event.listens_for(engine, "connect")
    def _wal(dbapi_connection: Any, record: Any) -> None:
        _switch_to_wal(dbapi_connection, busy)


def _switch_to_wal(dbapi_connection: Any, busy_seconds: float = SQLITE_BUSY_TIMEOUT_S) -> None:
    """Put the database file in WAL mode, waiting (up to the busy timeout) for other connections' locks.

    SQLite does not run its busy handler for a journal-mode change: while another process holds the
    migration's exclusive lock on a new file, the change fails at once with "database is locked". So retry
    here, and stop as soon as the file is in WAL mode (another process may have switched it meanwhile).
    """
    deadline = time.monotonic() + busy_seconds
    pause = 0.005
    cursor = dbapi_connection.cursor()
    try:
        while True:
            try:
                if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    # Answers the mode it ends in; a file system without WAL support keeps the old one.
                    cursor.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
    finally:
        cursor.close()


def prepare_sqlite_file(sa_url: sa.URL) -> None:
    """Create the folder of a SQLite database file (the file backend creates its root folder too)."""
    database = sa_url.database or ""
    if sa_url.get_backend_name() == "sqlite" and not database.startswith("file:"):
        folder = os.path.dirname(os.path.abspath(database))
        os.makedirs(folder, exist_ok=True)


# --------------------------------------------------------------------------------------------- schema


def key_collation(kind: Kind) -> str | None:
    """A collation that compares key text byte-wise (UTF-8 byte order = code point order = Python's).

    MariaDB's ``utf8mb4_bin`` pads with spaces (``'a' = 'a '``), which would merge two distinct keys in the
    unique constraint, so the NO PAD binary collation is used; MySQL 8 spells it ``utf8mb4_0900_bin``.
    SQLite's default BINARY collation is already a byte comparison.
    """
    return {"postgresql": "C", "mariadb": "utf8mb4_nopad_bin", "mysql": "utf8mb4_0900_bin", "sqlite": None}[kind]


def payload_type(kind: Kind) -> sa.types.TypeEngine[Any]:
    """The payload column type: a JSON type that keeps the document's text exactly.

    PostgreSQL gets ``json``, not ``jsonb``: ``jsonb`` stores numbers as ``numeric`` and prints the float
    ``1e16`` as the integer ``10000000000000000``, which would read back as an ``int``. SQLite gets ``TEXT``:
    a column declared ``JSON`` has NUMERIC affinity there, which turns the payload ``3`` into an integer and
    ``1.0`` into a REAL (docs/sql.md).
    """
    if kind == "postgresql":
        return postgresql.JSON()
    if kind in ("mariadb", "mysql"):
        return mysql.JSON()
    return sa.Text()


def payload_out(kind: Kind, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The payload as the text the backend returns (psycopg would parse ``json`` into objects)."""
    return sa.cast(column, sa.Text) if kind == "postgresql" else column


def table_options(kind: Kind) -> dict[str, Any]:
    """Table keyword arguments: InnoDB and utf8mb4 on MariaDB/MySQL, clustered keys on SQLite."""
    if kind in ("mariadb", "mysql"):
        # SQLAlchemy's "mariadb" dialect (mariadb:// URLs) reads only mariadb_* options, "mysql" only mysql_*.
        options = {"engine": "InnoDB", "charset": "utf8mb4", "collate": key_collation(kind)}
        return {f"{prefix}_{name}": value for prefix in ("mysql", "mariadb") for name, value in options.items()}
    if kind == "sqlite":
        return {"sqlite_with_rowid": False}
    return {}


# ------------------------------------------------------------------------------------------ statements


def insert(kind: Kind, table: sa.Table) -> Any:
    """The dialect's ``INSERT`` construct for ``table`` (it knows that dialect's conflict clause)."""
    if kind == "postgresql":
        return postgresql.insert(table)
    if kind == "sqlite":
        return sqlite.insert(table)
    return mysql.insert(table)


def upsert(kind: Kind, stmt: Any, key: list[sa.Column[Any]], update: list[str]) -> Any:
    """``INSERT ... ON CONFLICT DO UPDATE`` (PostgreSQL, SQLite) / ``ON DUPLICATE KEY UPDATE`` (MariaDB).

    ``stmt`` comes from :func:`insert`; ``update`` names the columns taken from the new row, and
    ``updated_at`` is set to the current time.
    """
    now = sa.func.current_timestamp()
    if kind in ("mariadb", "mysql"):
        return stmt.on_duplicate_key_update({**{c: stmt.inserted[c] for c in update}, "updated_at": now})
    return stmt.on_conflict_do_update(
        index_elements=key, set_={**{c: stmt.excluded[c] for c in update}, "updated_at": now}
    )


def insert_new(kind: Kind, stmt: Any, key: list[sa.Column[Any]]) -> Any:
    """``INSERT`` that skips rows whose key exists, its row count being the rows actually inserted.

    PostgreSQL and SQLite: ``ON CONFLICT DO NOTHING``. MariaDB has no ``DO NOTHING``, and ``INSERT IGNORE``
    would also turn real errors into warnings, so a key column is assigned to itself: a duplicate then
    counts 0 affected rows (see :func:`engine_options` on ``FOUND_ROWS``).
    """
    if kind in ("mariadb", "mysql"):
        return stmt.on_duplicate_key_update({key[0]: key[0]})
    return stmt.on_conflict_do_nothing(index_elements=key)


#: How a SQLite batch starts: taking the write lock up front means the batch never has to upgrade a read
#: lock, the one case where SQLite fails with SQLITE_BUSY at once instead of waiting the busy timeout.
SQLITE_BATCH_BEGIN = "BEGIN IMMEDIATE"


def batch_by_arrays(kind: Kind) -> bool:
    """Whether a batch write is one statement over array parameters (PostgreSQL ``unnest``).

    Elsewhere a batch is ``executemany`` of the one-row statement: PyMySQL and mysqlclient rewrite it into
    one multi-row ``INSERT`` per ~1 MB, and SQLite runs it in one ``BEGIN IMMEDIATE`` transaction in-process.
    """
    return kind == "postgresql"


_PLACEHOLDER = re.compile(r"%%|%s")


def array_parameters(dialect: Dialect, sql: str) -> str:
    """``sql`` with its array parameters sent the fastest way the driver knows.

    psycopg's text format escapes every element of a text array with a regular expression (about 14 ms
    for 1,000 candle payloads); its binary format (``%b``) writes length-prefixed bytes (about 1 ms).
    ``%%`` is a literal percent sign in this paramstyle and stays as it is.
    """
    if dialect.driver != "psycopg":
        return sql
    return _PLACEHOLDER.sub(lambda match: "%b" if match.group() == "%s" else "%%", sql)


# ------------------------------------------------------------------------------------------- migration

_LOCK_NAME = "persist_sql.migrate"
#: pg_advisory_xact_lock takes a bigint; a fixed one derived from the name keeps it readable in pg_locks.
_PG_LOCK_KEY = zlib.crc32(_LOCK_NAME.encode())


@contextlib.contextmanager
def migration_lock(kind: Kind, connection: Connection) -> Iterator[None]:
    """Hold the lock that lets only one process check and migrate the schema at a time.

    Taken before the migration's transaction begins and released after it has committed: a process that
    gets the lock next must see the finished schema and its revision row, not a transaction still under
    way. PostgreSQL: a session-level advisory lock. MariaDB: ``GET_LOCK`` named after the database (its DDL
    commits implicitly, so no transaction-level lock could hold). SQLite: nothing here; the migration
    connection begins its transaction with ``BEGIN EXCLUSIVE`` (see :mod:`persist_sql._migrate`), which
    excludes every other connection to the file until it commits. ``connection`` must not be in a
    transaction; it is left without one.
    """
    if kind == "sqlite":
        yield
        return
    if kind == "postgresql":
        take = sa.select(sa.func.pg_advisory_lock(_PG_LOCK_KEY))
        give = sa.select(sa.func.pg_advisory_unlock(_PG_LOCK_KEY))
    else:
        name = f"{_LOCK_NAME}:{connection.exec_driver_sql('SELECT DATABASE()').scalar()}"[:64]
        take = sa.select(sa.func.get_lock(name, MIGRATION_LOCK_TIMEOUT_S))
        give = sa.select(sa.func.release_lock(name))
    got = connection.execute(take).scalar()
    connection.commit()  # end the statement's implicit transaction; the lock belongs to the session
    if kind != "postgresql" and got != 1:
        raise BackendUnavailableError(
            f"timed out after {MIGRATION_LOCK_TIMEOUT_S}s waiting for another process' migration"
        )
    try:
        yield
    finally:
        if connection.in_transaction():
            connection.rollback()
        connection.execute(give)
        connection.commit()
