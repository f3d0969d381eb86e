"""The driver I/O of the asyncio SQL backend: one small adapter per async driver (issue 10).

:class:`persist_sql.AsyncSqlBackend` runs the same statements, rows, pool, deadline and error translation on
every database; what differs is how a connection is made, cut off at the deadline, closed and known to be
lost. PostgreSQL runs on psycopg's ``AsyncConnection``; MariaDB/MySQL on asyncmy, chosen by measurement
against aiomysql (docs/decisions.md, "Native async MariaDB"). Both cursors speak the same coroutine API
(``execute``, ``executemany``, ``fetchone``, ``fetchall``, ``rowcount``) with the ``%s`` paramstyle that the
statements are compiled with (:mod:`persist_sql._statements`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
from typing import Any

import sqlalchemy as sa

from persist_core.errors import ConfigurationError
from persist_sql import _deadline, _dialects
from persist_sql._dialects import Kind

__all__ = ["AsyncDriver", "driver_for"]


class AsyncDriver:
    """How the asyncio backend does I/O with one driver. Subclasses fill in every method."""

    #: The driver's module, for messages.
    name = ""

    def __init__(self, sa_url: sa.URL, timeout: float) -> None:
        self.sa_url = sa_url
        self.timeout = timeout

    @property
    def error(self) -> type[Exception]:  # pragma: no cover - abstract
        """The base class of the driver's errors (PEP 249 ``Error``)."""
        raise NotImplementedError

    async def connect(self, kind: Kind) -> Any:  # pragma: no cover - abstract
        """A new autocommit connection with the server's own limits set from the deadline."""
        raise NotImplementedError

    def cut(self, connection: Any) -> bool:
        """Make a statement in flight on ``connection`` fail at once; ``False``: cancel the awaiting task instead."""
        return False

    def close(self, connection: Any) -> None:  # pragma: no cover - abstract
        """Close without a round trip (the server may not answer)."""
        raise NotImplementedError

    def lost(self, connection: Any) -> bool:  # pragma: no cover - abstract
        """Whether ``connection`` is closed or broken: never to be reused."""
        raise NotImplementedError


class Psycopg(AsyncDriver):
    """psycopg's ``AsyncConnection``.

    A cancelled await makes psycopg send a cancel request and wait for the server's answer, which a frozen
    server never gives; so the deadline shuts the socket down instead and psycopg fails at once. The server's
    ``lock_timeout`` and ``statement_timeout`` are connection options (no round trip).
    """

    name = "psycopg"

    def __init__(self, sa_url: sa.URL, timeout: float) -> None:
        super().__init__(sa_url, timeout)
        _, kwargs = sa_url.get_dialect()().create_connect_args(sa_url)
        args: dict[str, Any] = dict(kwargs)
        args["autocommit"] = True
        if "connect_timeout" not in args:  # libpq takes whole seconds, at least 2; the deadline cuts in anyway
            args["connect_timeout"] = max(2, int(timeout) + 1)
        limit_ms = max(1, int(timeout * _dialects.SERVER_SHARE * 1000))
        limits = f"-c lock_timeout={limit_ms} -c statement_timeout={limit_ms}"
        args["options"] = f"{args['options']} {limits}" if args.get("options") else limits
        self.args = args

    @property
    def error(self) -> type[Exception]:
        import psycopg

        return psycopg.Error

    async def connect(self, kind: Kind) -> Any:
        import psycopg

        connection = await psycopg.AsyncConnection.connect(**self.args)
        connection.prepared_max = _dialects.PSYCOPG_PREPARED_MAX
        return connection

    def cut(self, connection: Any) -> bool:
        with contextlib.suppress(Exception):  # already closed or broken: nothing waits on it any more
            _deadline.shut_down_psycopg(connection)  # the sync backend's watchdog cuts it off the same way
        return True

    def close(self, connection: Any) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection may fail; it is gone either way
            connection.pgconn.finish()  # what AsyncConnection.close does, synchronously

    def lost(self, connection: Any) -> bool:
        return bool(connection.broken or connection.closed)


class Asyncmy(AsyncDriver):
    """asyncmy's ``Connection`` (MariaDB and MySQL).

    A cancelled await returns at once: asyncmy closes the connection, whose protocol state is then unknown,
    and nothing waits for the server; so the deadline cancels the awaiting task. The session's lock wait and
    statement limits (:func:`persist_sql._dialects.session_settings`, as the sync backend sets them) are its
    ``init_command``; a lock held elsewhere ends on the server, with the connection intact, before the
    deadline. The connection arguments are the sync backend's (:func:`persist_sql._dialects.engine_options`:
    utf8mb4, no ``FOUND_ROWS``, the connect timeout), without the socket read and write timeouts: the deadline
    bounds every call, and asyncmy's read timeout takes a slower read path.
    """

    name = "asyncmy"
    _UNUSED = ("read_timeout", "write_timeout", "ssl_disabled")  # ssl_disabled: asyncmy uses TLS only if asked

    def __init__(self, sa_url: sa.URL, timeout: float) -> None:
        super().__init__(sa_url, timeout)
        if importlib.util.find_spec("asyncmy") is None:
            raise ConfigurationError(
                'the asyncio face of MariaDB/MySQL needs asyncmy: pip install "backtest-persist[mysql]"'
            )
        from asyncmy.connection import Connection

        _, kwargs = sa_url.get_dialect()().create_connect_args(sa_url)
        args: dict[str, Any] = dict(kwargs)
        args.update(_dialects.engine_options(sa_url, autocommit=True, timeout=timeout)["connect_args"])
        for name in self._UNUSED:
            args.pop(name, None)
        known = inspect.signature(Connection.__init__).parameters
        unknown = sorted(name for name in args if name not in known)
        if unknown:
            raise ConfigurationError(
                f"the asyncio face of MariaDB/MySQL (asyncmy) does not take the URL option(s) {', '.join(unknown)}"
            )
        args["autocommit"] = True
        self.args = args

    @property
    def error(self) -> type[Exception]:
        import asyncmy

        error: type[Exception] = asyncmy.errors.Error
        return error

    async def connect(self, kind: Kind) -> Any:
        import asyncmy

        return await asyncmy.connect(**self.args, init_command=_dialects.session_settings(kind, self.timeout))

    def close(self, connection: Any) -> None:
        loop = connection.loop
        if loop is None or not loop.is_closed():
            connection.close()  # closes the transport; no QUIT to a server that may not answer
            return
        # Its event loop is gone (the backend was used from an earlier asyncio.run): the transport can no
        # longer schedule its own close, so its socket is closed here, where asyncio's selector transport
        # keeps it; cleared, so that the transport does not warn of an unclosed socket when collected.
        transport = connection._transport
        sock = getattr(transport, "_sock", None)
        if sock is not None:
            sock.close()
            transport._sock = None

    def lost(self, connection: Any) -> bool:
        return not connection.connected or bool(connection._stream_broken)


def driver_for(sa_url: sa.URL, timeout: float, display: str) -> AsyncDriver:
    """The adapter for a parsed backend URL (``display``: the masked URL, for the error)."""
    backend, driver = sa_url.get_backend_name(), sa_url.get_driver_name()
    if backend == "postgresql" and driver == "psycopg":
        return Psycopg(sa_url, timeout)
    if backend in ("mysql", "mariadb") and driver in ("pymysql", "mysqldb"):
        # asyncmy takes PyMySQL's connection arguments, whichever sync driver the URL names.
        return Asyncmy(sa_url.set(drivername=f"{backend}+pymysql"), timeout)
    raise ConfigurationError(
        f"the asyncio SQL backend serves PostgreSQL on psycopg and MariaDB/MySQL (on asyncmy), not {display!r}"
    )
