"""The client-side bound of an operation: a watchdog that cuts a connection off at its deadline.

A server that stops answering while connected (a SIGSTOPped process, a proxy or firewall that stops
forwarding) cannot enforce its own limits, and TCP does not notice while the peer's kernel still
acknowledges: libpq's ``tcp_user_timeout`` and keepalives never fire. So each statement arms a
:class:`Watch` with the operation's deadline; if the statement is still running then, one long-lived
thread shuts the connection's socket down (``shutdown(SHUT_RDWR)``), the blocked driver call returns with
an error, and the backend reports a :class:`~persist_core.errors.BackendTimeoutError` and discards the
connection.

The cost per statement is one small object and a ``deque.append`` to arm, one ``list.pop`` to disarm: no
lock, no timer per call. The watchdog thread scans the armed watches at the nearest deadline, at least every
:data:`TICK` seconds while any is armed, dropping the disarmed ones, and sleeps when there is none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["TICK", "Watch", "Watchdog", "interrupter", "shut_down_psycopg", "watchdog"]

log = logging.getLogger("persist.sql")

#: The longest the watchdog sleeps while watches are armed: how late past its deadline a watch may fire
#: when it was armed after the watchdog went to sleep.
TICK = 0.05

#: How a watch cuts its connection off: ``interrupt(driver_connection)``.
Interrupt = Callable[[Any], None]


class Watch:
    """One statement's deadline. Exactly one of :meth:`disarm` (the statement ended) and the watchdog's
    firing wins: both take the one token, and ``list.pop`` is atomic."""

    __slots__ = ("_token", "connection", "deadline", "interrupt")

    def __init__(self, deadline: float, connection: Any, interrupt: Interrupt) -> None:
        self.deadline = deadline
        self.connection = connection
        self.interrupt = interrupt
        self._token = [True]

    def _take(self) -> bool:
        try:
            self._token.pop()
        except IndexError:
            return False
        return True

    def disarm(self) -> bool:
        """Stop watching; ``False`` if the watchdog fired (the connection was cut off: discard it)."""
        if self._take():
            return True
        # The watchdog took the token first: wait until it has finished cutting the connection off, so
        # that the caller never closes (and the system reuses) the socket while it is being shut down.
        with _firing:
            pass
        return False


_firing = threading.Lock()


class Watchdog:
    """The one thread that fires expired watches (started at first use, a daemon)."""

    def __init__(self) -> None:
        self._watches: deque[Watch] = deque()
        self._wake = threading.Event()
        self._sleeping = True
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def arm(self, deadline: float, connection: Any, interrupt: Interrupt) -> Watch:
        """Watch ``connection`` until :meth:`Watch.disarm`; at ``deadline`` (monotonic), ``interrupt`` it."""
        watch = Watch(deadline, connection, interrupt)
        self._watches.append(watch)
        if self._sleeping:
            if self._thread is None:
                self._start()
            self._wake.set()
        return watch

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._loop, name="persist-sql-watchdog", daemon=True)
                thread.start()
                self._thread = thread

    def _loop(self) -> None:
        watches = self._watches
        while True:
            now = time.monotonic()
            nearest = now + TICK
            # Only the entries present now: arm() may append meanwhile, to the right end.
            for _ in range(len(watches)):
                watch = watches.popleft()
                if not watch._token:  # disarmed
                    continue
                if watch.deadline <= now:
                    self._fire(watch)
                else:
                    watches.append(watch)
                    nearest = min(nearest, watch.deadline)
            if watches:
                time.sleep(max(0.0, nearest - time.monotonic()))
                continue
            self._sleeping = True
            if not watches:  # checked again after announcing the sleep: arm() sets the event from now on
                self._wake.wait()
            self._wake.clear()
            self._sleeping = False

    @staticmethod
    def _fire(watch: Watch) -> None:
        with _firing:
            if not watch._take():
                return
            try:
                watch.interrupt(watch.connection)
            except Exception as exc:  # a connection that closed meanwhile: nothing left to cut off
                log.debug("deadline watchdog: could not cut a connection off: %r", exc)


_watchdog = Watchdog()


def _after_fork_in_child() -> None:
    # A forked child has no watchdog thread, only the parent's record of one: without a new watchdog its
    # watches would never fire (no client-side deadline) and never leave the queue.
    global _watchdog, _firing
    _watchdog = Watchdog()
    _firing = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def watchdog() -> Watchdog:
    """The process' watchdog."""
    return _watchdog


def _shutdown_fd(fd: int) -> None:
    # A duplicate of the descriptor: shutdown() acts on the socket shared by both, close() on the duplicate
    # only, so the driver's own descriptor stays valid (and is closed by the driver).
    sock = socket.socket(fileno=os.dup(fd))
    try:
        sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.close()


def shut_down_psycopg(connection: Any) -> None:
    """Shut the socket of a psycopg connection (sync or async) down, so that a statement waiting on it fails."""
    _shutdown_fd(connection.pgconn.socket)


def _pymysql(connection: Any) -> None:
    sock = connection._sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _mysqldb(connection: Any) -> None:
    _shutdown_fd(connection.fileno())


def interrupter(driver: str) -> Interrupt | None:
    """How to cut a connection of ``driver`` off, ``None`` where no watchdog is needed or known.

    SQLite has none: it is a local file, and its one wait, for another connection's lock, is bounded by
    the busy timeout.
    """
    return {"psycopg": shut_down_psycopg, "pymysql": _pymysql, "mysqldb": _mysqldb}.get(driver)
