"""The asyncio SQL backend: PostgreSQL on psycopg's ``AsyncConnection``, MariaDB/MySQL on asyncmy (issue 10).

:class:`AsyncSqlBackend` runs the very statements of :class:`persist_sql.SqlBackend` (compiled once per
dialect, :mod:`persist_sql._statements`), puts values in and takes records out with the same helpers
(:mod:`persist_sql._rows`) and translates errors in the same function (:mod:`persist_sql._errors`). What it
adds is the I/O: a small pool of async connections of its own (:class:`AsyncPool`) and a deadline on every
operation. What differs between drivers (connecting, cutting off, closing, knowing a connection lost) is a
small adapter in :mod:`persist_sql._async_drivers`; everything else here serves both databases.

It holds a sync :class:`~persist_sql.SqlBackend` on the same database for what is not on the hot path: the
schema check at open (run in a thread, exactly as the sync backend opens: ``SchemaBehindError``,
``auto_migrate``) and the ownership leases (the facade runs the owner's calls in the thread pool).

Deadline: every operation completes or raises within ``timeout`` seconds (default
:data:`persist_core.deadlines.DEFAULT_TIMEOUT_SECONDS`, URL option ``?timeout=``). At the deadline a statement
in flight is cut off (psycopg: its socket is shut down, so psycopg fails at once rather than first sending a
cancel request to a server that may not answer; asyncmy: the awaiting task is cancelled, which asyncmy
answers at once by closing the connection); a wait for a free connection or a connection attempt is
cancelled. The connection is discarded and :class:`~persist_core.errors.BackendTimeoutError` names the
operation and the URL. The server's own limits (PostgreSQL ``lock_timeout`` and ``statement_timeout``,
MariaDB ``innodb_lock_wait_timeout`` and ``max_statement_time``) are set to 90 % of the deadline, so a held
lock ends on the server with the connection intact before the client cuts anything.

Cancellation: each operation is one statement in autocommit, so the server commits it whole or not at all;
a cancelled ``await`` discards its connection, never reused (psycopg first cancels the statement on the
server and waits for the answer, one round trip; asyncmy closes the connection at once).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from persist_core.async_backend import AsyncBackend
from persist_core.backend import PAGE_SIZE, ItemKey, Key, Record
from persist_core.deadlines import DEFAULT_TIMEOUT_SECONDS, TIMEOUT_OPTION, parse_timeout
from persist_core.domains import DomainSpec
from persist_core.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    PersistError,
)
from persist_core.ownership import LeaseLog
from persist_core.units import Write
from persist_core.urls import mask_url, scrub_chain
from persist_sql import _dialects, _errors, _listing, _rows, _units
from persist_sql._async_drivers import AsyncDriver, driver_for
from persist_sql._backend import SqlBackend, _check_packet
from persist_sql._dialects import Kind
from persist_sql._statements import DomainStatements, statements_for

__all__ = ["AsyncPool", "AsyncSqlBackend"]

_T = TypeVar("_T")


class _Connection:
    """A pooled connection: the driver's connection, its one cursor, when it was last used, its pool epoch."""

    __slots__ = ("connection", "cursor", "driver", "epoch", "used")

    def __init__(self, connection: Any, driver: AsyncDriver, epoch: int) -> None:
        self.connection = connection
        self.driver = driver
        self.cursor = connection.cursor()
        self.epoch = epoch
        self.used = time.monotonic()

    @property
    def lost(self) -> bool:
        """Closed or broken: never to be reused."""
        return self.driver.lost(self.connection)

    def cut(self) -> bool:
        """Make a statement in flight fail at once; ``False`` if the awaiting task must be cancelled instead."""
        return self.driver.cut(self.connection)

    def close(self) -> None:
        """Close without a round trip."""
        self.driver.close(self.connection)


class AsyncPool:
    """At most ``max_size`` async connections of one event loop, the idle ones reused most recent first.

    Nothing here blocks or locks: the pool is used from its loop only. Used from another loop (a backend
    built in one thread and used in another's loop, or a second ``asyncio.run``), it starts a new epoch:
    the idle connections of the old loop are closed and those still in use there are closed when they come
    back. A connection that failed, was cancelled or timed out is discarded, never put back.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[tuple[Any, AsyncDriver]]],
        *,
        max_size: int,
        idle_seconds: float,
    ) -> None:
        if max_size < 1:
            raise ConfigurationError(f"pool_size must be at least 1, not {max_size}")
        self._connect = connect
        self._max_size = max_size
        self._idle_seconds = idle_seconds
        self._idle: list[_Connection] = []
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._epoch = 0
        self._closed = False
        #: Connections checked out (of the current epoch).
        self.in_use = 0

    @property
    def idle(self) -> int:
        """Connections open and free."""
        return len(self._idle)

    async def acquire(self) -> _Connection:
        """A connection for one operation; waits while all are in use (the caller's deadline bounds it)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._rebind(loop)
        if self._closed:
            raise BackendUnavailableError("the backend is closed")
        while self.in_use >= self._max_size:
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake()  # woken and cancelled at once: hand the turn to the next waiter
                raise
        self.in_use += 1
        now = time.monotonic()
        while self._idle:
            entry = self._idle.pop()
            if now - entry.used < self._idle_seconds and not entry.lost:
                return entry
            entry.close()
        epoch = self._epoch
        try:
            connection, driver = await self._connect()
        except BaseException:
            self._give_back(epoch)
            raise
        return _Connection(connection, driver, epoch)

    def release(self, entry: _Connection) -> None:
        """Give a connection back that the caller found healthy (:meth:`acquire` checks it again before reuse)."""
        if entry.epoch != self._epoch or self._closed:
            entry.close()
        else:
            entry.used = time.monotonic()
            self._idle.append(entry)
        self._give_back(entry.epoch)

    def discard(self, entry: _Connection) -> None:
        """Close a connection that failed, or whose state is unknown (cancelled, timed out)."""
        entry.close()
        self._give_back(entry.epoch)

    def drop_idle(self) -> None:
        """Close every idle connection (the server went away: they are dead too)."""
        idle, self._idle = self._idle, []
        for entry in idle:
            entry.close()

    def close(self) -> None:
        """Close the idle connections; those in use are closed when they come back. Idempotent."""
        self._closed = True
        self.drop_idle()

    def _give_back(self, epoch: int) -> None:
        if epoch != self._epoch:
            return
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.drop_idle()
        self._epoch += 1
        self._loop = loop
        self.in_use = 0
        self._waiters.clear()


class _Deadline:
    """The deadline of one operation: at expiry, cut the statement in flight or cancel the wait."""

    __slots__ = ("cancelled", "done", "entry", "expired", "expires", "task")

    def __init__(self, task: asyncio.Task[Any] | None, expires: float) -> None:
        self.task = task
        self.expires = expires  #: in the event loop's time
        self.entry: _Connection | None = None
        self.expired = False
        self.cancelled = False
        self.done = False

    def fire(self) -> None:
        self.expired = True
        if self.entry is not None and self.entry.cut():
            return  # the statement fails at once (psycopg: no cancel request to a server that may not answer)
        if self.task is not None:
            self.cancelled = True
            self.task.cancel()


class _Deadlines:
    """The deadlines of one backend's operations in flight, with one event-loop timer for them all.

    Every operation of a backend has the same timeout, so the deadlines expire in the order they were set:
    a queue, and a timer at the expiry of its first entry, save a timer per operation (a ``call_later`` and
    its ``cancel``: a few microseconds, as much as the rest of the plumbing). A finished operation is only
    marked done; the timer, when it fires, drops those, fires the expired ones and is set again for the
    first one still running. Bound to one event loop at a time: used from another, it starts afresh (the
    old loop's operations are gone with it, as the pool's connections are).
    """

    __slots__ = ("_loop", "_queue", "_timer")

    def __init__(self) -> None:
        self._queue: deque[_Deadline] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self, timeout: float) -> _Deadline:
        """The deadline of an operation of the current task, ``timeout`` seconds from now."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._timer = loop, None
            self._queue.clear()
        deadline = _Deadline(asyncio.current_task(loop), loop.time() + timeout)
        self._queue.append(deadline)
        if self._timer is None:
            self._timer = loop.call_at(deadline.expires, self._fire)
        return deadline

    def disarm(self, deadline: _Deadline) -> None:
        """The operation ended: its deadline no longer fires."""
        deadline.done = True
        deadline.task = deadline.entry = None  # hold no task or connection until the timer drops it
        queue = self._queue
        while queue and queue[0].done:
            queue.popleft()

    def _fire(self) -> None:
        self._timer = None
        loop, queue = self._loop, self._queue
        if loop is None:  # pragma: no cover - armed before any timer is set
            return
        now = loop.time()
        while queue:
            first = queue[0]
            if not first.done and first.expires > now:
                self._timer = loop.call_at(first.expires, self._fire)
                return
            queue.popleft()
            if not first.done:
                first.fire()


@dataclass(frozen=True)
class _Ready:
    """What an opened backend holds: the statements of every domain, the database's kind, the driver adapter
    and its error class, and MariaDB/MySQL's ``max_allowed_packet`` (``None`` elsewhere)."""

    statements: dict[str, DomainStatements]
    kind: Kind
    driver: AsyncDriver
    driver_error: type[Exception]
    max_packet: int | None


#: How one operation uses its cursor.
Work = Callable[[Any], Awaitable[_T]]


class AsyncSqlBackend(AsyncBackend):
    """Records in PostgreSQL (psycopg's ``AsyncConnection``) or MariaDB/MySQL (asyncmy): the asyncio twin of
    :class:`SqlBackend`.

    Build it from the URL of the sync backend (``postgresql://``, ``postgresql+psycopg://``, ``mysql://``,
    ``mysql+pymysql://``, ``mariadb+pymysql://``, ...); SQLite runs on the asyncio face through the thread
    pool. It opens lazily, in the event loop of its first call (or :meth:`open`), so it may be built in one
    thread and used in another's loop.

    Args:
        url: the database URL; its password never appears in messages.
        timeout: the deadline of every operation in seconds (also ``?timeout=`` in the URL); default
            :data:`~persist_core.deadlines.DEFAULT_TIMEOUT_SECONDS`.
        pool_size: the most connections the backend opens at once.
        idle_seconds: a connection idle for longer is closed rather than reused.
        sync: the sync backend of the same URL, opened by the caller and kept open while this one is used
            (``asetup`` passes the facade's own); its schema check and leases are used, and it is not closed
            here. Without it the backend makes and closes one of its own.
        sync_options: keyword options of the sync backend it makes (``auto_migrate``, ...); ignored when
            ``sync`` is given, which was built with them.
    """

    capabilities = SqlBackend.capabilities

    def __init__(
        self,
        url: str,
        *,
        timeout: float | None = None,
        pool_size: int = 10,
        idle_seconds: float = 300.0,
        sync: SqlBackend | None = None,
        **sync_options: Any,
    ) -> None:
        self.url = mask_url(url)
        url_rest, timeout_text = _split_timeout(url)
        parsed = _dialects.parse_url(url_rest)
        where = f"in {self.url!r}"
        if timeout is not None:
            self._timeout = parse_timeout(timeout, where)
        elif timeout_text is not None:
            self._timeout = parse_timeout(timeout_text, where)
        else:
            self._timeout = DEFAULT_TIMEOUT_SECONDS
        if sync is None:
            # The sync backend takes the deadline too once it knows the option (persist_sql._dialects.OPTIONS).
            knows_timeout = TIMEOUT_OPTION in _dialects.OPTIONS
            sync = SqlBackend(url if knows_timeout else url_rest, **sync_options)
            self._owns_sync = True
        else:  # its options (auto_migrate, ...) were the caller's to give it
            self._owns_sync = False
        self._sync = sync
        self._driver = driver_for(parsed.sa_url, self._timeout, self.url)
        self._pool = AsyncPool(self._new_connection, max_size=pool_size, idle_seconds=idle_seconds)
        self._ready: _Ready | None = None
        self._deadlines = _Deadlines()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncSqlBackend:
        """Build (unopened) from a URL; keyword options as for the constructor."""
        return cls(url, **options)

    @property
    def timeout(self) -> float:
        """The deadline of every operation, in seconds."""
        return self._timeout

    @property
    def pool(self) -> AsyncPool:
        """The connections of this backend (``pool.in_use``, ``pool.idle``), for tests and monitoring."""
        return self._pool

    # ----------------------------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        # docstring inherited: the schema check (in a thread), then one connection, within the deadline.
        async def first(cursor: Any) -> None:
            return None

        await self._run("opening", "the backend", first)

    async def close(self) -> None:
        # docstring inherited
        self._pool.close()
        self._ready = None
        if self._owns_sync:
            await asyncio.to_thread(self._sync.close)

    async def _prepare(self) -> _Ready:
        ready = self._ready
        if ready is None:
            # Opening checks the schema exactly as the sync backend does (creates, refuses or migrates).
            ready = await asyncio.to_thread(self._prepare_sync)
            self._ready = ready
        return ready

    def _prepare_sync(self) -> _Ready:
        self._sync.open()
        state = self._sync._started()
        driver = self._driver
        return _Ready(statements_for(state.engine.dialect), state.kind, driver, driver.error, state.max_packet)

    async def _new_connection(self) -> tuple[Any, AsyncDriver]:
        ready = self._ready
        if ready is None:  # pragma: no cover - _attempt prepares before it connects
            raise PersistError(f"{self.url} is not open")
        return await ready.driver.connect(ready.kind), ready.driver

    # ------------------------------------------------------------------------------------ plumbing

    async def _run(self, verb: str, what: str, work: Work[_T], longest: Callable[[], int] = lambda: 0) -> _T:
        """Run one statement within the deadline; after a lost connection or a deadlock, once more on a new one.

        Every statement here may run twice, as on the sync backend: reads, upserts and updates are
        idempotent, and an insert cut off by a lost connection or chosen as a deadlock victim was rolled
        back whole. A statement cut off by the deadline is never retried, nor one over MariaDB's packet
        (``longest``: the length of its longest value, asked only after a lost connection).
        """
        deadline = self._deadlines.arm(self._timeout)
        try:
            return await self._attempt(deadline, work, f"{verb} {what}", longest)
        except asyncio.CancelledError:
            task = deadline.task
            if deadline.cancelled and task is not None and task.uncancel() == 0:
                raise self._timed_out(verb, what) from None
            raise
        except PersistError as error:
            if deadline.expired:
                raise self._timed_out(verb, what) from None
            scrub_chain(error)
            raise
        finally:
            self._deadlines.disarm(deadline)

    async def _attempt(
        self, deadline: _Deadline, work: Work[_T], operation: str, longest: Callable[[], int] = lambda: 0
    ) -> _T:
        ready = self._ready or await self._prepare()
        driver_error = ready.driver_error
        pool = self._pool
        retried = False
        while True:
            try:
                entry = await pool.acquire()
            except (PersistError, asyncio.CancelledError):
                raise
            except Exception as exc:
                raise _errors.translate(exc, self.url, disconnect=True) from exc
            deadline.entry = entry
            try:
                result = await work(entry.cursor)
            except driver_error as exc:
                deadline.entry = None
                lost = entry.lost
                too_large = _errors.over_packet(exc, lost=lost, longest=longest, max_packet=ready.max_packet)
                if lost or too_large:  # the server closes the connection after a too-large packet
                    pool.discard(entry)
                    pool.drop_idle()  # they date from before the outage too
                else:
                    pool.release(entry)  # a statement error in autocommit leaves the connection idle
                if deadline.expired:
                    raise BackendUnavailableError(f"{self.url}: cut off at the deadline") from exc
                if not retried and (lost or _errors.is_transient(exc)) and not too_large:
                    retried = True
                    continue
                if _errors.is_timeout(exc):  # the server's own limit (90 % of the deadline) ended it
                    raise _errors.translate(exc, self.url, operation=operation, timeout=self._timeout) from exc
                raise _errors.translate(exc, self.url, disconnect=lost, too_large=too_large) from exc
            except PersistError:  # refused before any I/O (a value too large for the server)
                deadline.entry = None
                pool.release(entry)
                raise
            except BaseException:
                deadline.entry = None
                pool.discard(entry)  # cancelled mid-statement: the server settles it, but its state is not ours
                raise
            deadline.entry = None
            pool.release(entry)
            return result

    def _timed_out(self, verb: str, what: str) -> BackendTimeoutError:
        return BackendTimeoutError(
            f"{verb} {what} on {self.url} did not complete within the deadline of {self._timeout:g} s "
            f"(the {TIMEOUT_OPTION} option); whether a write took effect is unknown (docs/asyncio.md)"
        )

    def _check_packet(self, domain: DomainSpec, records: Iterable[Record]) -> None:
        """Refuse, before any I/O, a record too large for one MariaDB/MySQL packet (as the sync backend does)."""
        ready = self._ready
        if ready is not None and ready.max_packet is not None:
            for record in records:
                _check_packet(record, ready.max_packet, domain)

    def _check_packet_of(self, writes: Sequence[Write]) -> None:
        for write in writes:
            if write.record is not None:
                self._check_packet(write.domain, (write.record,))

    def _statements(self, domain: DomainSpec) -> DomainStatements:
        ready = self._ready
        if ready is None:  # pragma: no cover - _attempt prepares before any work runs
            raise PersistError(f"{self.url} is not open")
        return ready.statements[domain.name]

    # ---------------------------------------------------------------------------------- operations
    # docstrings inherited from AsyncBackend

    async def get(self, domain: DomainSpec, key: Key) -> Record | None:
        async def work(cursor: Any) -> Record | None:
            st = self._statements(domain)
            await cursor.execute(st.get.text, st.get.bind(key))
            row = await cursor.fetchone()
            return None if row is None else _rows.record_of(row, 0, st.soft_delete)

        return await self._run("reading", domain.name, work)

    async def scan(
        self, domain: DomainSpec, context: Key, start: ItemKey | None = None, stop: ItemKey | None = None
    ) -> list[tuple[ItemKey, Record]]:
        return _rows.scanned(await self._scan_rows(domain, context, start, stop), domain.soft_delete)

    async def read_window(
        self, domain: DomainSpec, context: Key, start: int, stop: int, step: int
    ) -> list[tuple[ItemKey, Record]]:
        rows = await self._scan_rows(domain, context, start, stop)
        return _rows.scanned(rows, domain.soft_delete, start, step)

    async def _scan_rows(self, domain: DomainSpec, context: Key, start: ItemKey | None, stop: ItemKey | None) -> Any:
        if domain.item is None:
            raise PersistError(f"the {domain.name} domain has no item key to scan")
        values = (*context, *(v for v in (start, stop) if v is not None))

        async def work(cursor: Any) -> Any:
            sql = self._statements(domain).scans[2 * (start is not None) + (stop is not None)]
            await cursor.execute(sql.text, sql.bind(values))
            return await cursor.fetchall()

        return await self._run("scanning", domain.name, work)

    async def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        async def work(cursor: Any) -> None:
            self._check_packet(domain, (record,))
            st = self._statements(domain)
            await cursor.execute(st.put.text, st.put.bind(_rows.values_of(st, key, record)))

        await self._run("writing", domain.name, work, lambda: len(record.payload))

    async def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        await self._batch(domain, items, insert_only=False)

    async def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        return await self._batch(domain, items, insert_only=True)

    async def _batch(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]], *, insert_only: bool) -> int:
        if not items:
            return 0

        async def work(cursor: Any) -> int:
            self._check_packet(domain, (record for _, record in items))
            # PostgreSQL: one statement of one array per column; MariaDB/MySQL: executemany, which the driver
            # rewrites into multi-row INSERTs (one per ~1 MB of rows).
            await _execute(cursor, _units.batch_step(self._statements(domain), items, insert_only=insert_only))
            return int(cursor.rowcount)

        verb = "inserting" if insert_only else "writing"

        def longest() -> int:
            return max(len(record.payload) for _, record in items)

        return await self._run(verb, f"a batch of {len(items)} {domain.name} records", work, longest)

    async def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        if not domain.soft_delete:
            raise PersistError(f"the {domain.name} domain has no soft delete")

        async def work(cursor: Any) -> None:
            sql = self._statements(domain).mark_removed
            if sql is None:  # pragma: no cover - checked above
                raise PersistError(f"the {domain.name} domain has no soft delete")
            await cursor.execute(sql.text, sql.bind(key))

        await self._run("removing", domain.name, work)

    async def apply_unit(self, writes: Sequence[Write]) -> None:
        """All or none, as :meth:`SqlBackend.apply_unit`: PostgreSQL one statement in one round trip, MariaDB/MySQL
        one transaction."""
        if not writes:
            return

        async def work(cursor: Any) -> None:
            self._check_packet_of(writes)
            ready = self._ready
            if ready is None:  # pragma: no cover - _attempt prepares before any work runs
                raise PersistError(f"{self.url} is not open")
            steps = _units.unit_steps(ready.statements, writes)
            if ready.kind == "postgresql":
                step = _units.one_statement(steps)
                await cursor.execute(step.sql, step.params)
                return
            # One transaction, rolled back on a failure so that the connection goes back to the pool idle.
            await cursor.execute(_units.begin_statement(ready.kind))
            try:
                for step in steps:
                    await _execute(cursor, step)
                await cursor.connection.commit()
            except Exception:
                try:
                    await cursor.connection.rollback()
                except Exception:  # dropped by the server: closed, so that the pool discards it
                    ready.driver.close(cursor.connection)
                raise

        def longest() -> int:
            return max(len(write.record.payload) if write.record is not None else 0 for write in writes)

        await self._run("writing", f"a unit of {len(writes)} writes", work, longest)

    async def list_contexts(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, int]]:
        contexts: list[tuple[Key, int]] = await self._list(domain, "contexts", after, limit)
        return contexts

    async def list_records(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, Record]]:
        records: list[tuple[Key, Record]] = await self._list(domain, "records", after, limit)
        return records

    async def _list(self, domain: DomainSpec, what: str, after: Key | None, limit: int) -> Any:
        if after == ():  # every key starts with the empty prefix: none comes after it
            return []

        async def work(cursor: Any) -> Any:
            state = self._sync._started()
            text, params = _listing.page(state.kind, state.engine.dialect, domain, what, after, limit)
            await cursor.execute(text, params)
            return _listing.rows_of(domain, what, await cursor.fetchall())

        return await self._run("listing", domain.name, work)

    async def delete_records(self, domain: DomainSpec, keys: Sequence[Key]) -> int:
        if not keys:
            return 0

        async def work(cursor: Any) -> int:
            state = self._sync._started()
            sql = _listing.delete_sql(state.kind, state.engine.dialect, domain)
            await cursor.executemany(sql.text, [sql.bind(key) for key in sorted(set(keys))])
            return int(cursor.rowcount)

        return await self._run("deleting", f"{len(keys)} {domain.name} records", work)

    def lease_log(self) -> LeaseLog:
        return self._sync.lease_log()

    def __repr__(self) -> str:
        return f"<AsyncSqlBackend {self.url}>"


async def _execute(cursor: Any, step: _units.Step) -> None:
    if step.many:
        await cursor.executemany(step.sql, step.params)
    else:
        await cursor.execute(step.sql, step.params)


def _split_timeout(url: str) -> tuple[str, str | None]:
    """``url`` without its ``timeout`` query option, and that option's text (``None`` if absent)."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return url, None  # parse_url reports it
    value = parsed.query.get(TIMEOUT_OPTION)
    if value is None:
        return url, None
    if not isinstance(value, str):
        raise ConfigurationError(f"option {TIMEOUT_OPTION} is given more than once in {mask_url(url)!r}")
    return parsed.difference_update_query([TIMEOUT_OPTION]).render_as_string(hide_password=False), value
