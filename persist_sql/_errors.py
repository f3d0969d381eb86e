"""The one place where driver and SQLAlchemy errors become :mod:`persist_core.errors` classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from persist_core.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidValueError,
    PersistError,
    SchemaError,
)
from persist_core.urls import mask_url

__all__ = ["is_privilege_error", "is_timeout", "is_too_large", "is_transient", "over_packet", "translate"]

# PostgreSQL SQLSTATEs. Class 08 (connection exception) is matched by prefix.
_PG_UNAVAILABLE = {"57P01", "57P02", "57P03", "53300"}  # shutdown, crash, starting, no free slots
# statement_timeout (query_canceled) and lock_timeout (lock_not_available): the backend sets both.
_PG_TIMEOUT = {"57014", "55P03"}
_PG_LOGIN = {"28P01", "28000", "3D000"}  # bad password, no such role/database
# psycopg reports a refused login with no SQLSTATE; libpq's message says why.
_PG_LOGIN_TEXT = ("password authentication failed", "authentication failed for user", "no password supplied")
_PG_MISSING_TEXT = ("does not exist",)
_PG_PRIVILEGE = {"42501"}
_PG_SCHEMA = {"42P01", "42703"}  # undefined table, undefined column
# MariaDB/MySQL error numbers.
_MY_UNAVAILABLE = {1040, 1053, 1927, 2002, 2003, 2005, 2006, 2013, 2014, 2045, 2055, 4031}
# Lock wait timeout, MariaDB's max_statement_time, MySQL's max_execution_time.
_MY_TIMEOUT = {1205, 1969, 3024}
_MY_LOGIN = {1044, 1045, 1049}
_MY_PRIVILEGE = {1142, 1143, 1227}
_MY_SCHEMA = {1146, 1054}
_MY_TOO_LARGE = 1153  # ER_NET_PACKET_TOO_LARGE: the statement is over max_allowed_packet
# SQLite primary result codes (names, as sqlite3 reports them from Python 3.11 on).
_LITE_UNAVAILABLE = ("SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_NOTADB")
# The busy timeout ran out: another connection holds the lock (SQLITE_BUSY and its extended codes).
_LITE_TIMEOUT = "SQLITE_BUSY"
_LITE_SCHEMA_TEXT = ("no such table", "no such column", "has no column named")

_MAX_MESSAGE = 400
#: Deadlock victims and serialization failures: the statement was rolled back whole and may run again.
_TRANSIENT = {"40P01", "40001", 1213}


def _message(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return mask_url(text[:_MAX_MESSAGE])


def _code(error: BaseException) -> str | int | None:
    args: Any = getattr(error, "args", ())
    if args and isinstance(args[0], int):  # PyMySQL, mysqlclient (PyMySQL also has a generic sqlstate)
        return int(args[0])
    sqlstate = getattr(error, "sqlstate", None)  # psycopg
    if isinstance(sqlstate, str):
        return sqlstate
    name = getattr(error, "sqlite_errorname", None)  # sqlite3
    if isinstance(name, str):
        return name
    return None


def _is_a(error: BaseException, *pep249_names: str) -> bool:
    return any(cls.__name__ in pep249_names for cls in type(error).__mro__)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` rolled its statement back whole for a reason that a second try may not meet."""
    return _code(error) in _TRANSIENT


def is_timeout(error: BaseException) -> bool:
    """Whether ``error`` (a driver error) reports a limit of ours: a lock or statement timeout, SQLite's busy
    timeout, a connect timeout."""
    code = _code(error)
    if code in _PG_TIMEOUT or code in _MY_TIMEOUT:
        return True
    if isinstance(code, str) and code.startswith(_LITE_TIMEOUT):
        return True
    # psycopg's connect timeout (an OperationalError), socket timeouts.
    return isinstance(error, TimeoutError) or _is_a(error, "ConnectionTimeout")


def is_too_large(error: BaseException) -> bool:
    """Whether ``error`` says the statement is larger than the server accepts (no retry can help)."""
    return _code(error) == _MY_TOO_LARGE


def over_packet(error: BaseException, *, lost: bool, longest: Callable[[], int], max_packet: int | None) -> bool:
    """Whether ``error``, met running a statement, says the statement is over MariaDB/MySQL's
    ``max_allowed_packet``, so that no retry can help.

    The server answers such a statement with error 1153 and closes the connection. When the close reaches the
    client while it is still sending (usual far over the limit, and under load just over it), the 1153 is
    never read and only the lost connection is seen: a statement with a value (``longest()``, its length in
    characters, computed only then) longer than the packet tells the two apart.
    """
    if is_too_large(error):
        return True
    return lost and max_packet is not None and longest() > max_packet


def is_privilege_error(error: BaseException | None) -> bool:
    """Whether ``error`` (a driver error) says the role lacks a privilege."""
    code = None if error is None else _code(error)
    return code in _PG_PRIVILEGE or code in _MY_PRIVILEGE


def translate(
    error: BaseException,
    url: str,
    *,
    disconnect: bool = False,
    operation: str | None = None,
    timeout: float | None = None,
    timed_out: bool = False,
    too_large: bool = False,
) -> PersistError:
    """The :class:`PersistError` for a driver, SQLAlchemy or SQLite ``error`` met while serving ``url``.

    ``url`` is already masked. ``disconnect`` says the dialect recognised a lost connection. ``operation``
    (``"writing signal"``, ``"connecting"``, ...) and ``timeout`` (the deadline in seconds) go into the
    message of a :class:`BackendTimeoutError`; ``timed_out`` says the caller knows the deadline passed (its
    watchdog cut the connection off, or the error came at or after the deadline). The caller raises the
    result ``from error``. ``too_large`` says the caller knows the statement is over MariaDB/MySQL's
    ``max_allowed_packet`` even though the error it met is the connection being closed.
    """
    if isinstance(error, PersistError):
        return error
    original: BaseException = error
    if isinstance(error, sa.exc.DBAPIError) and error.orig is not None:
        original = error.orig
        disconnect = disconnect or error.connection_invalidated
    message = _message(original)
    code = _code(original)
    schema_hint = f"the schema is missing or incomplete; see `backtest-persist check --url {url}`"

    if too_large or code == _MY_TOO_LARGE:  # checked first: the server also drops the connection, which is no outage
        return InvalidValueError("$", f"the statement is larger than max_allowed_packet of {url}: {message}")
    if timed_out or is_timeout(original):
        within = "" if timeout is None else f" within the {timeout:g} s deadline"
        return BackendTimeoutError(f"{operation or 'an operation'} on {url} did not complete{within}: {message}")
    if disconnect or code in _PG_UNAVAILABLE or code in _MY_UNAVAILABLE:
        return BackendUnavailableError(f"{url} is unavailable: {message}")
    if isinstance(code, str) and code.startswith("08"):
        return BackendUnavailableError(f"{url} is unavailable: {message}")
    if isinstance(code, str) and code.startswith(_LITE_UNAVAILABLE):
        return BackendUnavailableError(f"{url} is unavailable: {message}")
    refused = code is None and _is_a(original, "OperationalError") and "FATAL" in message
    if refused and any(text in message for text in (*_PG_LOGIN_TEXT, *_PG_MISSING_TEXT)):
        return ConfigurationError(f"{url} refused the login: {message}")
    if code in _PG_LOGIN or code in _MY_LOGIN:
        return ConfigurationError(f"{url} refused the login: {message}")
    if code in _PG_PRIVILEGE or code in _MY_PRIVILEGE:
        return ConfigurationError(
            f"{url}: the database role lacks a privilege ({message}); the runtime needs SELECT, INSERT and "
            "UPDATE on the tables (docs/sql.md, least-privilege setup)"
        )
    if code in _PG_SCHEMA or code in _MY_SCHEMA or any(text in message for text in _LITE_SCHEMA_TEXT):
        return SchemaError(f"{url}: {message}: {schema_hint}")
    if _is_a(original, "OperationalError", "InterfaceError") or isinstance(original, (OSError, sa.exc.TimeoutError)):
        return BackendUnavailableError(f"{url} is unavailable: {message}")
    return PersistError(f"{url}: database error: {message}")
