"""The connections of one backend: a small LIFO pool of driver connections with no ping on checkout.

SQLAlchemy's engine creates each connection (so its dialect is initialised and its connect events run);
this pool only keeps them. Checking one out is a ``deque.pop``: the operation's own statement is its only
round trip. A dead connection is found by that statement failing; the backend then drops every idle
connection of the same generation (after a server restart they are all dead) and retries once on a new
one (:meth:`persist_sql.SqlBackend._run`). Connections idle for longer than ``idle_seconds`` are closed
instead of reused, because a firewall or ``wait_timeout`` may have dropped them silently, and a statement
sent on a silently dropped connection hangs instead of failing.

Both ways an operation can wait here are bounded by its deadline: waiting for a free connection, and
making a new one, which runs in a helper thread when ``bounded_connect`` is set (a server that accepted
the TCP connection and then stopped answering blocks libpq, PyMySQL and mysqlclient beyond our deadline:
libpq's connect timeout is whole seconds and at least 2). The caller gives up at the deadline; the helper
closes the connection if it arrives later.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import PoolProxiedConnection

__all__ = ["CheckoutTimeoutError", "Lease", "Pool"]

#: A checked-out connection: (SQLAlchemy's wrapper, the driver connection, the pool generation, a cursor of
#: that connection). The cursor lives as long as its connection: making one per statement costs more than
#: reusing it, and a connection serves one operation at a time.
Lease = tuple[PoolProxiedConnection, Any, int, Any]


class CheckoutTimeoutError(TimeoutError):
    """No connection within the operation's deadline (all in use, or a new one did not connect in time)."""


class Pool:
    """At most ``max_size`` connections, the idle ones reused most recent first.

    One plain lock guards the idle list and the count of connections in use; a condition on that lock is
    waited on only when every connection is in use.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        max_size: int,
        idle_seconds: float,
        checkout_timeout: float,
        bounded_connect: bool = False,
    ) -> None:
        self._engine = engine
        self._idle: list[tuple[PoolProxiedConnection, float, int, Any]] = []
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._waiting = 0
        self._in_use = 0
        self._max_size = max_size
        self._idle_seconds = idle_seconds
        self._timeout = checkout_timeout
        self._generation = 0
        self._closed = False
        self._bounded_connect = bounded_connect

    def acquire(self, deadline: float | None = None) -> Lease:
        """A connection for one operation, by ``deadline`` (monotonic; default: ``checkout_timeout`` from now).

        Raises:
            CheckoutTimeoutError: no connection was free, or a new one did not connect, by the deadline (or
                within ``checkout_timeout``, whichever comes first).
            Exception: the driver's error when a new connection cannot be made.
        """
        stale: list[PoolProxiedConnection] = []
        reused: tuple[PoolProxiedConnection, float, int, Any] | None = None
        with self._lock:
            if self._in_use >= self._max_size:
                self._wait(deadline)
            self._in_use += 1
            generation = self._generation
            if self._idle:
                now = time.monotonic()
                while self._idle:
                    entry = self._idle.pop()
                    if entry[2] == generation and now - entry[1] < self._idle_seconds:
                        reused = entry
                        break
                    stale.append(entry[0])
        for wrapper in stale:
            _close(wrapper)
        if reused is not None:
            return reused[0], reused[0].dbapi_connection, generation, reused[3]
        try:
            if self._bounded_connect:
                wrapper, cursor = _Connecting(self._engine).result(deadline)
            else:
                wrapper, cursor = _new_connection(self._engine)
        except BaseException:
            self._give_back()
            raise
        return wrapper, wrapper.dbapi_connection, generation, cursor

    def _wait(self, deadline: float | None) -> None:
        # Caller holds the lock.
        start = time.monotonic()
        until = start + self._timeout if deadline is None else min(deadline, start + self._timeout)
        self._waiting += 1
        try:
            while self._in_use >= self._max_size:
                left = until - time.monotonic()
                if left <= 0 or not self._freed.wait(left):
                    raise CheckoutTimeoutError(
                        f"no free connection within {time.monotonic() - start:.2f} s (all {self._max_size} are in use)"
                    )
        finally:
            self._waiting -= 1

    def _give_back(self) -> None:
        with self._lock:
            self._in_use -= 1
            if self._waiting:
                self._freed.notify()

    def release(self, lease: Lease) -> None:
        """Give a healthy connection back."""
        wrapper, _, born, cursor = lease
        stale: list[PoolProxiedConnection] = []
        with self._lock:
            self._in_use -= 1
            if self._waiting:
                self._freed.notify()
            if born == self._generation and not self._closed:
                now = time.monotonic()
                self._idle.append((wrapper, now, born, cursor))
                # The least recently used connections sit at the front; close those nobody reused in time.
                if now - self._idle[0][1] >= self._idle_seconds:
                    keep = [entry for entry in self._idle if now - entry[1] < self._idle_seconds]
                    stale = [entry[0] for entry in self._idle if now - entry[1] >= self._idle_seconds]
                    self._idle[:] = keep
            else:
                stale.append(wrapper)
        for old in stale:
            _close(old)

    def discard(self, lease: Lease, error: BaseException | None) -> None:
        """Throw away a connection that failed or whose state is unknown."""
        try:
            with contextlib.suppress(Exception):  # invalidating a broken connection may fail; it is gone anyway
                lease[0].invalidate(error if isinstance(error, Exception) else None)
        finally:
            self._give_back()

    def drop_idle(self) -> None:
        """Close every idle connection and retire the current generation (the server went away)."""
        with self._lock:
            self._generation += 1
            stale = [entry[0] for entry in self._idle]
            self._idle.clear()
        for wrapper in stale:
            _close(wrapper)

    def close(self) -> None:
        """Close the idle connections; connections still checked out are closed when they come back."""
        self._closed = True
        self.drop_idle()


def _new_connection(engine: sa.Engine) -> tuple[PoolProxiedConnection, Any]:
    wrapper = engine.raw_connection()
    try:
        cursor = wrapper.dbapi_connection.cursor()  # type: ignore[union-attr]
    except BaseException:
        _close(wrapper)
        raise
    return wrapper, cursor


class _Connecting:
    """One new connection made in a helper thread, waited for until a deadline.

    A caller that gives up leaves the helper to finish on its own: the driver's own connect timeout ends
    it, and a connection that arrives after the caller left is closed, never pooled.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._outcome: tuple[PoolProxiedConnection, Any] | BaseException | None = None
        self._abandoned = False
        threading.Thread(target=self._connect, name="persist-sql-connect", daemon=True).start()

    def _connect(self) -> None:
        outcome: tuple[PoolProxiedConnection, Any] | BaseException
        try:
            outcome = _new_connection(self._engine)
        except BaseException as exc:  # handed to the waiting caller, who raises it
            outcome = exc
        with self._lock:
            if not self._abandoned:
                self._outcome = outcome
                self._done.set()
                return
        if isinstance(outcome, tuple):
            _close(outcome[0])

    def result(self, deadline: float | None) -> tuple[PoolProxiedConnection, Any]:
        start = time.monotonic()
        self._done.wait(None if deadline is None else max(0.0, deadline - start))
        with self._lock:
            outcome = self._outcome
            if outcome is None:
                self._abandoned = True
                raise CheckoutTimeoutError(f"no connection within {time.monotonic() - start:.2f} s")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def _close(wrapper: PoolProxiedConnection) -> None:
    # invalidate() closes the driver connection without the rollback that a normal close sends first,
    # which would be a round trip (and an error logged) on a connection that may be dead. Connections
    # here are autocommit: there is never a transaction to roll back.
    with contextlib.suppress(Exception):  # closing a broken connection may fail; it is gone either way
        wrapper.invalidate()
