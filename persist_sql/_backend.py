"""The SQL backend: one class for PostgreSQL, MariaDB/MySQL and SQLite (CONTRACTS.md 6.3).

Each operation is one precompiled statement (:mod:`persist_sql._statements`) executed on a pooled driver
connection in autocommit mode: one round trip, no BEGIN/COMMIT, no ping. What differs between databases
is asked of :mod:`persist_sql._dialects`; driver errors become library errors in :mod:`persist_sql._errors`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from persist_core.backend import PAGE_SIZE, Backend, Capabilities, ItemKey, Key, Record
from persist_core.domains import DomainSpec
from persist_core.errors import (
    BackendUnavailableError,
    ConfigurationError,
    CorruptRecordError,
    InvalidValueError,
    PersistError,
)
from persist_core.ownership import Lease as OwnershipLease
from persist_core.ownership import LeaseLog
from persist_core.registry import missing_driver
from persist_core.units import Write
from persist_core.urls import masks_driver_errors, parse_boolean
from persist_sql import _dialects, _errors, _listing, _migrate, _rows, _units
from persist_sql._deadline import Interrupt, Watch, interrupter, watchdog
from persist_sql._dialects import Kind
from persist_sql._pool import Lease, Pool
from persist_sql._statements import DomainStatements, LeaseStatements, lease_statements_for, statements_for

__all__ = ["SqlBackend", "SqlLeaseLog"]

log = logging.getLogger("persist.sql")


#: How one operation uses its connection: ``work(cursor, sql, parameters) -> result``.
Work = Callable[[Any, str, Any], Any]


def _fetch_one(cursor: Any, sql: str, params: Any) -> Any:
    cursor.execute(sql, params)
    return cursor.fetchone()


def _fetch_all(cursor: Any, sql: str, params: Any) -> Any:
    cursor.execute(sql, params)
    return cursor.fetchall()


def _max_packet(lease: Lease) -> int:
    """The server's max_allowed_packet: the largest statement it accepts."""
    return int(_fetch_one(lease[3], "SELECT @@max_allowed_packet", ())[0])


# Room in a packet for the statement around a payload: SQL text, key columns, times (a few hundred bytes).
_PACKET_OVERHEAD = 16 * 1024


def _check_packet(record: Record, max_packet: int, domain: DomainSpec) -> None:
    """Raise :class:`InvalidValueError` if ``record`` cannot fit in one MariaDB/MySQL packet.

    The server answers a larger statement with error 1153, or, when it is much larger, by closing the
    connection mid-send, which reads as an outage (2006/2013) that a caller would retry forever. Both
    drivers send the payload as an escaped string literal: UTF-8, plus a backslash before each quote and
    backslash (JSON text holds no raw NUL, newline or Ctrl-Z).
    """
    payload = record.payload
    if len(payload) * 8 + _PACKET_OVERHEAD < max_packet:  # at most 4 bytes a code point, doubled by escaping
        return
    size = len(payload.encode("utf-8")) + payload.count('"') + payload.count("\\") + payload.count("'")
    if size + _PACKET_OVERHEAD > max_packet:
        raise InvalidValueError(
            "$",
            f"a {domain.name} value of {size} bytes (escaped) does not fit in the server's max_allowed_packet "
            f"of {max_packet} bytes; raise max_allowed_packet or store a smaller value",
        )


def _largest_text(params: Any) -> int:
    """The length of the longest string among ``params`` (nested in tuples, lists and dicts, as bound, or the
    steps of a unit)."""
    if isinstance(params, (str, bytes)):
        return len(params)
    if isinstance(params, _units.Step):
        return _largest_text(params.params)
    if isinstance(params, dict):
        return _largest_text(list(params.values()))
    if isinstance(params, (tuple, list)):
        return max((_largest_text(param) for param in params), default=0)
    return 0


def _row_count(cursor: Any, sql: str, params: Any) -> int:
    cursor.execute(sql, params)
    return int(cursor.rowcount)


def _row_count_many(cursor: Any, sql: str, rows: Any) -> int:
    # PyMySQL and mysqlclient send one multi-row INSERT per ~1 MB of rows; rowcount is their sum.
    cursor.executemany(sql, rows)
    return int(cursor.rowcount)


def _row_count_many_in_transaction(cursor: Any, sql: str, rows: Any) -> int:
    # SQLite: the batch in one transaction (one commit, one fsync), taking the write lock up front.
    cursor.execute(_dialects.SQLITE_BATCH_BEGIN)
    try:
        cursor.executemany(sql, rows)
        count = int(cursor.rowcount)
        cursor.connection.commit()
    except BaseException:
        cursor.connection.rollback()
        raise
    return count


def _unit_in_transaction(cursor: Any, begin: str, steps: Sequence[_units.Step]) -> None:
    # MariaDB/MySQL and SQLite: the unit's statements in one transaction; rolled back on any failure, so that
    # the connection goes back to the pool idle (the backend discards it if the rollback itself fails).
    cursor.execute(begin)
    try:
        for step in steps:
            if step.many:
                cursor.executemany(step.sql, step.params)
            else:
                cursor.execute(step.sql, step.params)
        cursor.connection.commit()
    except Exception:
        _roll_back(cursor.connection)
        raise


def _roll_back(connection: Any) -> None:
    # A connection that cannot roll back (the server dropped it, as after a too-large packet) must not be
    # reused inside a transaction either: it is closed, so that its next use fails as a lost connection. The
    # error raised is the unit's own.
    try:
        connection.rollback()
    except Exception:
        with contextlib.suppress(Exception):
            connection.close()


_engines: dict[tuple[str, float], sa.Engine] = {}
_engines_lock = threading.Lock()


def _engine(sa_url: sa.URL, display: str, timeout: float) -> sa.Engine:
    """The runtime engine of a URL and deadline, shared by the backends of one process.

    An engine holds no connection here (each backend pools its own); sharing it means the dialect is
    initialised (server version, MariaDB or MySQL) once per process rather than once per backend. The
    deadline sets connection options (connect, lock and statement timeouts), hence it is part of the key.
    """
    key = (sa_url.render_as_string(hide_password=False), timeout)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            try:
                engine = sa.create_engine(sa_url, **_dialects.engine_options(sa_url, autocommit=True, timeout=timeout))
            except ImportError as exc:  # parse_url checked the module; this is a dependency of it
                raise missing_driver(display, exc.name or str(exc)) from exc
            _dialects.configure_engine(engine, timeout)
            _engines[key] = engine
    return engine


@dataclass(frozen=True)
class _Open:
    """What an opened backend holds."""

    engine: sa.Engine
    pool: Pool
    kind: Kind
    statements: dict[str, DomainStatements]
    leases: LeaseStatements
    driver_error: type[Exception]
    is_disconnect: Callable[..., bool]
    batch_work: Work
    #: How the deadline watchdog cuts a connection off (None: no watchdog, SQLite).
    interrupt: Interrupt | None
    #: MariaDB/MySQL's max_allowed_packet (read at open), else None: no statement may be larger.
    max_packet: int | None = None


class SqlBackend(Backend):
    """Records in PostgreSQL, MariaDB/MySQL or SQLite tables, one table per domain.

    Build it from a SQLAlchemy URL (``postgresql://``, ``mysql://``, ``mariadb://``, ``sqlite:///file.db``;
    see docs/sql.md). Opening checks the schema revision: an empty database is created at head, an older one
    raises :class:`~persist_core.errors.SchemaBehindError` unless ``auto_migrate`` is set (also as
    ``?auto_migrate=1`` in the URL), a newer one raises :class:`~persist_core.errors.SchemaAheadError`.

    Ownership leases live in the ``persist_leases`` table (:class:`SqlLeaseLog`).

    Args:
        url: the database URL; its password never appears in messages.
        auto_migrate: upgrade an older schema on open instead of refusing it.
        pool_size: the most connections the backend opens at once.
        idle_seconds: a connection idle for longer is closed rather than reused.
        checkout_timeout: how long an operation waits for a free connection when all are in use (the
            deadline bounds it too).
        timeout: the deadline of every operation, in seconds (also ``?timeout=`` in the URL; default
            :data:`~persist_sql._dialects.DEFAULT_TIMEOUT_S`): an operation that has not completed by
            then raises :class:`~persist_core.errors.BackendTimeoutError` (docs/sql.md, "Deadlines").
    """

    capabilities = Capabilities(ownership=True, listing=True, deletion=True, atomic_units=True)

    def __init__(
        self,
        url: str,
        *,
        auto_migrate: bool | None = None,
        pool_size: int = 10,
        idle_seconds: float = 300.0,
        checkout_timeout: float = 30.0,
        timeout: float | str | None = None,
    ) -> None:
        self._parsed = _dialects.parse_url(url)
        self.url = self._parsed.display
        if timeout is None:
            from_url = self._parsed.timeout
            self.timeout = _dialects.DEFAULT_TIMEOUT_S if from_url is None else from_url
        else:
            self.timeout = _dialects.parse_timeout(self.url, timeout)
        if auto_migrate is None:
            auto_migrate = parse_boolean(url, "auto_migrate", self._parsed.options.get("auto_migrate", "0"))
        if pool_size < 1:
            raise ConfigurationError(f"pool_size must be at least 1, not {pool_size}")
        self._auto_migrate = auto_migrate
        self._pool_size = pool_size
        self._idle_seconds = idle_seconds
        self._checkout_timeout = checkout_timeout
        self._open_lock = threading.Lock()
        self._state: _Open | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqlBackend:
        """Build (unopened) from a URL; keyword options as for the constructor."""
        return cls(url, **options)

    # ----------------------------------------------------------------------------------- lifecycle

    def open(self) -> None:
        # docstring inherited
        with self._open_lock:
            if self._state is None:
                self._state = self._connect()

    def close(self) -> None:
        # docstring inherited
        with self._open_lock:
            state, self._state = self._state, None
        if state is not None:
            state.pool.close()

    def _started(self) -> _Open:
        state = self._state
        if state is None:
            self.open()
            state = self._state
            if state is None:  # pragma: no cover - open() either sets it or raises
                raise PersistError(f"{self.url} could not be opened")
        return state

    @masks_driver_errors
    def _connect(self) -> _Open:
        parsed = self._parsed
        try:
            _dialects.prepare_sqlite_file(parsed.sa_url)
        except OSError as exc:  # an unwritable or read-only parent folder: the storage is unusable here
            raise BackendUnavailableError(f"{self.url} is unavailable: cannot create its folder: {exc}") from exc
        deadline = time.monotonic() + self.timeout
        engine = _engine(parsed.sa_url, self.url, self.timeout)
        pool = Pool(
            engine,
            max_size=self._pool_size,
            idle_seconds=self._idle_seconds,
            checkout_timeout=self._checkout_timeout,
            bounded_connect=parsed.sa_url.get_backend_name() != "sqlite",
        )
        try:
            try:
                lease = pool.acquire(deadline)  # the first connection also initialises the dialect
            except PersistError:
                raise
            except Exception as exc:
                raise self._translate(exc, "connecting") from exc
            kind = _dialects.kind_of(engine.dialect)
            interrupt = interrupter(engine.dialect.driver)
            watch = None if interrupt is None else watchdog().arm(deadline, lease[1], interrupt)
            try:
                at_head = self._at_head(engine.dialect, lease, deadline, watch)
                max_packet = _max_packet(lease) if kind in ("mariadb", "mysql") else None
            except BaseException as exc:
                if watch is not None:
                    watch.disarm()
                pool.discard(lease, exc)
                if isinstance(exc, engine.dialect.loaded_dbapi.Error):
                    timed_out = time.monotonic() >= deadline
                    raise self._translate(exc, "checking the schema", timed_out=timed_out) from exc
                raise
            if watch is None or watch.disarm():
                pool.release(lease)
            else:
                pool.discard(lease, None)
            if not at_head:
                _migrate.ensure_schema(parsed, auto_migrate=self._auto_migrate)
            driver_error: type[Exception] = engine.dialect.loaded_dbapi.Error
            return _Open(
                engine=engine,
                pool=pool,
                kind=kind,
                statements=statements_for(engine.dialect),
                leases=lease_statements_for(engine.dialect),
                driver_error=driver_error,
                is_disconnect=engine.dialect.is_disconnect,
                batch_work=_row_count_many_in_transaction if kind == "sqlite" else _row_count_many,
                interrupt=interrupt,
                max_packet=max_packet,
            )
        except BaseException:
            pool.close()
            raise

    def _at_head(self, dialect: sa.Dialect, lease: Lease, deadline: float, watch: Watch | None) -> bool:
        """The fast path of the schema check: one SELECT of the stored revision on the first connection.

        Anything but exactly the head revision (no table, no row, another revision, an error) sends
        :meth:`open` to the full check, which connects for schema work and decides under the migration lock.
        A timeout is raised, not taken for a missing table.
        """
        compiled = sa.select(_migrate.version_table.c.version_num).compile(dialect=dialect)
        try:
            rows = _fetch_all(lease[3], compiled.string, ())
        except dialect.loaded_dbapi.Error as exc:
            if time.monotonic() >= deadline or _errors.is_timeout(exc) or (watch is not None and not watch._token):
                raise
            return False
        return [tuple(row) for row in rows] == [(_migrate.head(),)]

    def _translate(self, error: BaseException, operation: str, *, timed_out: bool = False) -> PersistError:
        return _errors.translate(error, self.url, operation=operation, timeout=self.timeout, timed_out=timed_out)

    # ------------------------------------------------------------------------------------ plumbing

    @masks_driver_errors
    def _run(self, work: Work, sql: str, params: Any, verb: str = "running", what: str = "a statement") -> Any:
        """Run one statement within the deadline; after a lost connection or a deadlock, once more on a new
        connection if time is left.

        Every statement here may run twice: reads, upserts and updates are idempotent, and an insert of new
        rows that was cut off by a lost connection or chosen as a deadlock victim was rolled back whole.
        ``verb`` and ``what`` name the operation in a timeout's message (``"writing"``, ``"signal"``).

        The deadline: waiting for a free connection and connecting count against it; the statement is
        watched by the watchdog (:mod:`persist_sql._deadline`), which cuts its connection off at the
        deadline, and the server's own lock and statement limits end it a little earlier. A timeout is
        never retried (its time is spent) and its connection is discarded: its state is unknown.
        """
        deadline = time.monotonic() + self.timeout
        state = self._started()
        pool = state.pool
        interrupt = state.interrupt
        retried = False
        while True:
            try:
                lease = pool.acquire(deadline)
            except PersistError:
                raise
            except Exception as exc:
                raise self._translate(exc, f"{verb} {what}") from exc
            connection = lease[1]
            watch = None if interrupt is None else watchdog().arm(deadline, connection, interrupt)
            try:
                result = work(lease[3], sql, params)
            except state.driver_error as exc:
                cut_off = watch is not None and not watch.disarm()
                lost = bool(state.is_disconnect(exc, connection, None))
                if cut_off or time.monotonic() >= deadline or _errors.is_timeout(exc):
                    pool.discard(lease, exc)  # its state is unknown: never reused
                    if cut_off or lost:  # the server did not answer: the idle ones are suspect too
                        pool.drop_idle()
                    raise self._translate(exc, f"{verb} {what}", timed_out=True) from exc
                too_large = _errors.over_packet(
                    exc, lost=lost, longest=lambda: _largest_text(params), max_packet=state.max_packet
                )
                if lost or too_large:  # the server closes the connection after a too-large packet
                    pool.discard(lease, exc)
                    pool.drop_idle()  # they date from before the outage too
                else:
                    pool.release(lease)
                if not retried and (lost or _errors.is_transient(exc)) and not too_large:
                    retried = True
                    continue
                raise _errors.translate(exc, self.url, disconnect=lost, too_large=too_large) from exc
            except BaseException as exc:
                if watch is not None:
                    watch.disarm()
                pool.discard(lease, exc)  # interrupted mid-statement: the connection's state is unknown
                raise
            if watch is None or watch.disarm():
                pool.release(lease)
            else:  # cut off just as the statement returned: the result stands, the connection does not
                pool.discard(lease, None)
            return result

    @staticmethod
    def _record(row: Sequence[Any], offset: int, soft_delete: bool) -> Record:
        return _rows.record_of(row, offset, soft_delete)

    def _values(self, st: DomainStatements, key: Key, record: Record) -> tuple[Any, ...]:
        return _rows.values_of(st, key, record)

    def _batch(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]], *, insert_only: bool) -> int:
        if not items:
            return 0
        state = self._started()
        st = state.statements[domain.name]
        if state.max_packet is not None:
            for _, record in items:  # the whole batch first: a driver may split it into several statements
                _check_packet(record, state.max_packet, domain)
        rows = _rows.batch_values(st, items, insert_only=insert_only)  # last record of a key, in key order
        verb, what = ("inserting" if insert_only else "writing"), f"a batch of {len(rows)} {domain.name} records"
        arrays_sql = st.insert_new_arrays if insert_only else st.put_arrays
        if arrays_sql is not None:
            return int(self._run(_row_count, arrays_sql.text, arrays_sql.bind(_rows.array_columns(rows)), verb, what))
        sql = st.insert_new if insert_only else st.put
        if sql.order is not None:
            rows = [tuple(sql.bind(row)) for row in rows]
        return int(self._run(state.batch_work, sql.text, rows, verb, what))

    # ---------------------------------------------------------------------------------- operations

    def get(self, domain: DomainSpec, key: Key) -> Record | None:
        # docstring inherited
        st = self._started().statements[domain.name]
        row = self._run(_fetch_one, st.get.text, st.get.bind(key), "reading", domain.name)
        return None if row is None else self._record(row, 0, st.soft_delete)

    def scan(
        self,
        domain: DomainSpec,
        context: Key,
        start: ItemKey | None = None,
        stop: ItemKey | None = None,
    ) -> list[tuple[ItemKey, Record]]:
        # docstring inherited
        rows = self._scan_rows(domain, context, start, stop, "items")
        if domain.soft_delete:
            return [(row[0], Record(row[1], row[2], bool(row[3]))) for row in rows]
        return [(row[0], Record(row[1], row[2])) for row in rows]

    def read_window(
        self, domain: DomainSpec, context: Key, start: int, stop: int, step: int
    ) -> list[tuple[ItemKey, Record]]:
        # docstring inherited
        rows = self._scan_rows(domain, context, start, stop, "window")
        if domain.soft_delete:
            return [(row[0], Record(row[1], row[2], bool(row[3]))) for row in rows if (row[0] - start) % step == 0]
        return [(row[0], Record(row[1], row[2])) for row in rows if (row[0] - start) % step == 0]

    def _scan_rows(
        self, domain: DomainSpec, context: Key, start: ItemKey | None, stop: ItemKey | None, what: str
    ) -> Any:
        """One range query: the rows of one context between ``start`` and ``stop``, ascending."""
        if domain.item is None:
            raise PersistError(f"the {domain.name} domain has no item key to scan")
        st = self._started().statements[domain.name]
        sql = st.scans[2 * (start is not None) + (stop is not None)]
        values = (*context, *(v for v in (start, stop) if v is not None))
        return self._run(_fetch_all, sql.text, sql.bind(values), "reading", f"{domain.name} {what}")

    def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        # docstring inherited
        state = self._started()
        if state.max_packet is not None:
            _check_packet(record, state.max_packet, domain)
        st = state.statements[domain.name]
        self._run(_row_count, st.put.text, st.put.bind(self._values(st, key, record)), "writing", domain.name)

    def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        # docstring inherited
        self._batch(domain, items, insert_only=False)

    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        # docstring inherited
        return self._batch(domain, items, insert_only=True)

    def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        # docstring inherited
        st = self._started().statements[domain.name]
        if st.mark_removed is None:
            raise PersistError(f"the {domain.name} domain has no soft delete")
        self._run(_row_count, st.mark_removed.text, st.mark_removed.bind(key), "removing", domain.name)

    def apply_unit(self, writes: Sequence[Write]) -> None:
        """Apply a unit of work all or none (:mod:`persist_sql._units`): on PostgreSQL one statement, one
        round trip; on MariaDB/MySQL and SQLite one transaction. Within the deadline, as every operation."""
        if not writes:
            return
        state = self._started()
        if state.max_packet is not None:
            for write in writes:
                if write.record is not None:
                    _check_packet(write.record, state.max_packet, write.domain)
        steps = _units.unit_steps(state.statements, writes)
        what = f"a unit of {len(writes)} writes"
        if state.kind == "postgresql":
            step = _units.one_statement(steps)
            self._run(_row_count, step.sql, step.params, "writing", what)
        else:
            self._run(_unit_in_transaction, _units.begin_statement(state.kind), steps, "writing", what)

    # ------------------------------------------------------------------ operating the state

    def list_contexts(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, int]]:
        # docstring inherited
        contexts: list[tuple[Key, int]] = self._list(domain, "contexts", after, limit)
        return contexts

    def list_records(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, Record]]:
        # docstring inherited
        records: list[tuple[Key, Record]] = self._list(domain, "records", after, limit)
        return records

    def _list(self, domain: DomainSpec, what: str, after: Key | None, limit: int) -> Any:
        if after == ():  # every key starts with the empty prefix: none comes after it
            return []
        state = self._started()
        text, params = _listing.page(state.kind, state.engine.dialect, domain, what, after, limit)
        return _listing.rows_of(domain, what, self._run(_fetch_all, text, params, "listing", domain.name))

    def delete_records(self, domain: DomainSpec, keys: Sequence[Key]) -> int:
        # docstring inherited
        if not keys:
            return 0
        state = self._started()
        sql = _listing.delete_sql(state.kind, state.engine.dialect, domain)
        rows = [tuple(sql.bind(key)) for key in sorted(set(keys))]  # one lock order for every deleter
        what = f"{len(rows)} {domain.name} records"
        return int(self._run(state.batch_work, sql.text, rows, "deleting", what))

    def lease_log(self) -> SqlLeaseLog:
        # docstring inherited
        return SqlLeaseLog(self)


class SqlLeaseLog(LeaseLog):
    """Ownership leases in ``persist_leases``: one row per generation, the generation its primary key.

    Each method is one precompiled statement run through the backend's :meth:`SqlBackend._run` (errors
    translated in one place, a lost connection retried once). ``claim`` is the first-write-wins insert of the
    candle and log domains (``ON CONFLICT DO NOTHING``; on MariaDB ``ON DUPLICATE KEY UPDATE`` of the key to
    itself) and tells by its row count whether it stored the row.
    """

    def __init__(self, backend: SqlBackend) -> None:
        self._backend = backend
        self._prune_refused = False

    def _statements(self) -> LeaseStatements:
        return self._backend._started().leases

    # docstrings inherited from LeaseLog

    def head(self) -> tuple[int, OwnershipLease] | None:
        sql = self._statements().head
        row = self._backend._run(_fetch_one, sql.text, sql.bind(()), "reading", "the ownership lease")
        if row is None:
            return None
        return int(row[0]), self._parse(int(row[0]), row[1])

    def claim(self, generation: int, lease: OwnershipLease) -> bool:
        st = self._statements()
        text = lease.to_json()
        claim = st.claim
        claimed = self._backend._run(_row_count, claim.text, claim.bind((generation, text)), "claiming", "ownership")
        if int(claimed) == 1:
            return True
        # Not inserted: another claim holds the generation, or ours did and its connection was lost before
        # the reply came, so that the retry found our own row. A lease names its holder's host, pid, start
        # time and claim time to the millisecond: an equal text is this very claim.
        stored = self._backend._run(
            _fetch_one, st.lease_of.text, st.lease_of.bind((generation,)), "reading", "the ownership lease"
        )
        return stored is not None and stored[0] == text

    def renew(self, generation: int, lease: OwnershipLease) -> None:
        sql = self._statements().renew
        self._backend._run(_row_count, sql.text, sql.bind((generation, lease.to_json())), "renewing", "ownership")

    def prune(self, below: int) -> None:
        """Delete the generations below ``below``; never raises.

        Needs DELETE on ``persist_leases`` (docs/sql.md). A role without it keeps every generation (one
        small row per takeover): the refusal is logged once and pruning stops for this log.
        """
        if self._prune_refused:
            return
        sql = self._statements().prune
        try:
            self._backend._run(_row_count, sql.text, sql.bind((below,)), "pruning", "old ownership leases")
        except ConfigurationError as exc:
            self._prune_refused = True
            log.info("%s: old ownership leases are kept (no DELETE on persist_leases): %s", self._backend.url, exc)
        except PersistError as exc:
            log.warning("%s: could not prune old ownership leases: %s", self._backend.url, exc)

    def _parse(self, generation: int, text: Any) -> OwnershipLease:
        try:
            return OwnershipLease.from_json(str(text))
        except ValueError as exc:
            raise CorruptRecordError(
                f"{self._backend.url}: unreadable ownership lease of generation {generation} in persist_leases: {exc}"
            ) from exc
