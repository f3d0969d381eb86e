"""The value cache's scripts on the wire: each call one ``EVALSHA`` with the least work around it.

A write of the cache is two script calls (``begin`` and ``commit``) around the MongoDB update, against one ``SET``
for a hand-written write-through cache; so what a script call costs the client counts twice. Going through
redis-py's ``Script`` object, a call pays for the client's command layer (argument checks, retry and
observability hooks, a response callback), and on ``redis.asyncio`` for packing the command in Python and for
running the send under ``asyncio.wait_for``, which makes a task per send: about 45 µs of CPU per call on the
test machine, more than the round trip itself. A :class:`Wire` packs the command with hiredis, sends it and
reads the reply, nothing else, on a connection it keeps; a call that finds that connection busy (another thread
or task is using it) borrows one from the pool instead, so calls never wait for each other (docs/decisions.md,
"Script calls on the wire").

A script is loaded once per wire with ``SCRIPT LOAD``, pipelined ahead of its first ``EVALSHA`` (Redis runs the
two in order on one connection, so no round trip is waited for); a ``NOSCRIPT`` reply (a restarted Redis, a
``SCRIPT FLUSH``) loads it again, once. Written once for both faces, as a generator (:mod:`persist_mongo._steps`):
the pool's and the connection's calls are plain calls on redis-py and coroutines on ``redis.asyncio``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from typing import Any

import hiredis  # the mongo extra installs redis[hiredis]
import redis

from persist_mongo._steps import Steps

__all__ = ["Wire"]


class Wire:
    """Script calls on ``pool``'s connections (redis-py's, or ``redis.asyncio``'s if ``is_async``).

    On the asyncio face, the pool's connections should have no socket timeout (redis.asyncio runs each send under
    ``asyncio.wait_for`` then, a task per send): reads are bounded by ``timeout`` with ``asyncio.timeout`` here, and
    so are sends that could wait (redis-py's socket timeout bounds both on the sync face).
    """

    def __init__(self, pool: Any, *, timeout: float, is_async: bool) -> None:
        self._pool = pool
        self._timeout = timeout
        self._async = is_async
        self._loaded: set[str] = set()
        self._kept: Any = None  # the connection this wire keeps (taken from the pool at its first use)
        self._pid = os.getpid()
        # Held by the call using the kept connection: a lock between threads, a flag on one event loop.
        self._lock = threading.Lock()
        self._busy = False

    def call(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Steps[Any]:
        """Run ``script`` (a registered ``Script``, for its ``sha`` and text) and return its reply; a driver error is
        raised (an error reply as ``ResponseError``)."""
        kept = took = self._take()
        try:
            conn = self._kept if kept else None
            if conn is None:
                conn = yield self._io(self._pool.get_connection())
                if kept:
                    self._kept = conn
            try:
                return (yield from self._run(conn, script, keys, args))
            except BaseException as exc:
                if not isinstance(exc, redis.exceptions.ResponseError):  # the connection's state is unknown
                    yield self._io(conn.disconnect())
                    if kept:  # given back to the pool below, as a borrowed one is
                        self._kept, kept = None, False
                raise
            finally:
                if not kept:
                    yield self._io(self._pool.release(conn))
        finally:
            if took:
                self._give_back()

    def close(self) -> Any:
        """Disconnect the pool's connections, the kept one too (a coroutine on the asyncio face)."""
        self._kept = None
        return self._pool.disconnect()

    def _take(self) -> bool:
        """Whether this call may use the kept connection (no other call is): it then holds it until
        :meth:`_give_back`. Never waits."""
        if self._pid != os.getpid():  # a forked child: the parent's connection is not ours to use
            self._pid, self._kept, self._lock, self._busy = os.getpid(), None, threading.Lock(), False
        if self._async:
            if self._busy:
                return False
            self._busy = True
            return True
        return self._lock.acquire(blocking=False)

    def _give_back(self) -> None:
        if self._async:
            self._busy = False
        else:
            self._lock.release()

    def _run(self, conn: Any, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Steps[Any]:
        for attempt in (1, 2):
            load = script.sha not in self._loaded
            if load:
                yield self._send(conn, ("SCRIPT", "LOAD", script.script))
            yield self._send(conn, ("EVALSHA", script.sha, len(keys), *keys, *args))
            if load:
                yield self._read(conn)
                self._loaded.add(script.sha)
            try:
                return (yield self._read(conn))
            except redis.exceptions.NoScriptError:
                self._loaded.clear()  # all scripts are gone, not only this one
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, conn: Any, command: tuple[Any, ...]) -> Any:
        # hiredis packs in C (redis.asyncio packs in Python, ~15 µs a command); both faces take a list of chunks.
        packed: bytes = hiredis.pack_command(command)
        sent = conn.send_packed_command([packed], False)
        # Every call reads its reply, so Redis has read all that was sent before: a command under asyncio's
        # high-water mark (64 KiB) is handed to the socket at once and the send cannot wait. A larger one can.
        if self._async and len(packed) > _SMALL:
            return _bounded(sent, self._timeout)
        return sent

    def _read(self, conn: Any) -> Any:
        # Not read_response(timeout=...): given a timeout, redis.asyncio answers None when it runs out, and keeps
        # the connection with the reply still to come.
        return self._io(conn.read_response())

    def _io(self, call: Any) -> Any:
        """A driver call, bounded on the asyncio face (see the class)."""
        return _bounded(call, self._timeout) if self._async else call


#: Bytes of a command that asyncio hands to the socket without waiting (under its default high-water mark).
_SMALL = 64 * 1024


async def _bounded(call: Any, timeout: float) -> Any:
    try:
        async with asyncio.timeout(timeout):
            return await call
    except TimeoutError:
        raise redis.TimeoutError(f"Redis did not answer within {timeout:g}s") from None
