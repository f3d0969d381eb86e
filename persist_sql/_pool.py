"""The connections of one backend: a small LIFO pool of driver connections with no ping on checkout.

SQLAlchemy's engine creates each connection (so its dialect is initialised and its connect events run);
this pool only keeps them. Checking one out is a ``deque.pop``: the operation's own statement is its only
round trip. A dead connection is found by that statement failing; the backend then drops every idle
connection of the same generation (after a server restart they are all dead) and retries once on a new
one (:meth:`persist_sql.SqlBackend._run`). Connections idle for longer than ``idle_seconds`` are closed
instead of reused, because a firewall or ``wait_timeout`` may have dropped them silently, and a statement
sent on a silently dropped connection hangs instead of failing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import PoolProxiedConnection

from persist_core.errors import BackendUnavailableError

__all__ = ["Lease", "Pool"]

#: A checked-out connection: (SQLAlchemy's wrapper, the driver connection, the pool generation, a cursor of
#: that connection). The cursor lives as long as its connection: making one per statement costs more than
#: reusing it, and a connection serves one operation at a time.
Lease = tuple[PoolProxiedConnection, Any, int, Any]


class Pool:
    """At most ``max_size`` connections, the idle ones reused most recent first.

    One plain lock guards the idle list and the count of connections in use; a condition on that lock is
    waited on only when every connection is in use.
    """

    def __init__(self, engine: sa.Engine, *, max_size: int, idle_seconds: float, checkout_timeout: float) -> None:
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

    def acquire(self) -> Lease:
        """A connection for one operation; raises the driver's error if a new one cannot be made."""
        stale: list[PoolProxiedConnection] = []
        reused: tuple[PoolProxiedConnection, float, int, Any] | None = None
        with self._lock:
            if self._in_use >= self._max_size:
                self._wait()
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
            wrapper = self._engine.raw_connection()
            cursor = wrapper.dbapi_connection.cursor()  # type: ignore[union-attr]
        except BaseException:
            self._give_back()
            raise
        return wrapper, wrapper.dbapi_connection, generation, cursor

    def _wait(self) -> None:
        # Caller holds the lock.
        deadline = time.monotonic() + self._timeout
        self._waiting += 1
        try:
            while self._in_use >= self._max_size:
                left = deadline - time.monotonic()
                if left <= 0 or not self._freed.wait(left):
                    raise BackendUnavailableError(
                        f"no free connection within {self._timeout}s (all {self._max_size} are in use)"
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


def _close(wrapper: PoolProxiedConnection) -> None:
    # invalidate() closes the driver connection without the rollback that a normal close sends first,
    # which would be a round trip (and an error logged) on a connection that may be dead. Connections
    # here are autocommit: there is never a transaction to roll back.
    with contextlib.suppress(Exception):  # closing a broken connection may fail; it is gone either way
        wrapper.invalidate()
