"""Units of work on SQL, what the kit cannot see: round trips per unit, and units racing on shared rows."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import psycopg
import pytest

from persist_core.backend import Record
from persist_core.domains import DOMAINS
from persist_core.errors import InvalidValueError
from persist_core.testing.async_face import run
from persist_core.units import Write, WriteOp
from persist_sql import AsyncSqlBackend, SqlBackend, _units
from tests.sql import servers
from tests.sql.test_operations import _in_threads
from tests.sql.test_operations import any_url as _any_url

SIGNAL, STRATEGY, STORAGE, LOG, MEASURE = (
    DOMAINS[name] for name in ("signal", "strategy", "storage", "log", "measure")
)
CTX = ("UNIT/USDT", "ops", "x")
any_url = _any_url  # the fixture of test_operations: every database and MariaDB driver


def _step(n: int) -> list[Write]:
    """The demo's step and a soft delete: five domains, every kind of write."""
    return [
        Write(SIGNAL, WriteOp.PUT, CTX, Record(f'{{"n":{n}}}', n)),
        Write(STORAGE, WriteOp.PUT, (False, f"s{n}"), Record("{}")),
        Write(LOG, WriteOp.INSERT, (f"ops-{n}",), Record("{}")),
        Write(MEASURE, WriteOp.PUT, ("b", f"k{n}"), Record("1")),
        Write(MEASURE, WriteOp.REMOVE, ("b", f"k{n - 1}")),
        Write(STRATEGY, WriteOp.PUT, CTX, Record(f'{{"cursor":{n}}}', n)),
    ]


@pytest.fixture(params=["postgresql", "mariadb"])
def server_backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, SqlBackend]]:
    url = servers.driver_url(request.param)
    servers.reset(url)
    with SqlBackend(url, pool_size=1) as backend:
        yield request.param, backend


def test_a_unit_is_one_round_trip_on_postgresql_and_one_transaction_on_mariadb(
    server_backend: tuple[str, SqlBackend],
) -> None:
    """PostgreSQL: one ``ReadyForQuery`` per unit on the wire and no BEGIN/COMMIT (one statement, autocommit).
    MariaDB: its ``Questions`` counter: BEGIN, one statement per group of the unit's net effects, COMMIT."""
    kind, backend = server_backend
    for n in range(6):  # psycopg prepares a statement on its 5th execution: one extra round trip, once
        backend.apply_unit(_step(n))
    pool = backend._started().pool
    lease = pool.acquire()
    connection = lease[1]
    pool.release(lease)
    units = range(6, 16)
    if kind == "mariadb":

        def asked() -> int:
            with connection.cursor() as cursor:
                cursor.execute("SHOW SESSION STATUS LIKE 'Questions'")
                return int(cursor.fetchone()[1])

        before = asked()
        for n in units:
            backend.apply_unit(_step(n))
        statements = sum(len(_units.unit_steps(backend._started().statements, _step(n))) for n in units)
        assert statements == 6 * len(units)  # five domains, the measure domain's removal and put apart
        assert asked() - before - 1 == statements + 2 * len(units)  # the second SHOW counts itself
    else:
        with tempfile.TemporaryFile("w+") as trace:
            connection.pgconn.trace(trace.fileno())
            connection.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            for n in units:
                backend.apply_unit(_step(n))
            connection.pgconn.untrace()
            trace.seek(0)
            lines = trace.read().splitlines()
        assert sum("ReadyForQuery" in line for line in lines) == len(units)
        assert not any("BEGIN" in line or "COMMIT" in line for line in lines)
    n = units[-1]
    assert backend.get(STRATEGY, CTX) == Record(f'{{"cursor":{n}}}', n)
    assert backend.get(MEASURE, ("b", f"k{n - 1}")) == Record("1", None, True)


def test_units_on_shared_rows_in_opposite_orders_do_not_deadlock(any_url: str) -> None:
    """Four threads apply units that write the same rows of three domains, half of them in the reverse order:
    the statements lock domains in name order and keys in key order, so none waits for another in a cycle
    (a deadlock would be retried once, then raised); the last unit of each row is whole."""
    keys = [(True, f"shared-{i}") for i in range(8)]

    def unit(who: int, n: int) -> list[Write]:
        writes = [Write(STORAGE, WriteOp.PUT, key, Record(f'{{"who":{who},"n":{n}}}')) for key in keys]
        writes += [
            Write(SIGNAL, WriteOp.PUT, CTX, Record(f'{{"who":{who},"n":{n}}}')),
            Write(STRATEGY, WriteOp.PUT, CTX, Record(f'{{"who":{who},"n":{n}}}')),
        ]
        return writes[::-1] if who % 2 else writes

    with SqlBackend(any_url) as backend:

        def run(who: int) -> None:
            for n in range(25):
                backend.apply_unit(unit(who, n))

        assert _in_threads(4, run) == [None] * 4
        last = backend.get(SIGNAL, CTX)
        assert last is not None
        assert backend.get(STRATEGY, CTX) == last  # one unit was last on every row
        assert all(backend.get(STORAGE, key) == last for key in keys)


@pytest.mark.parametrize("mib", [17, 64])
@pytest.mark.parametrize("face", ["sync", "async"])
@pytest.mark.parametrize("checked", [True, False], ids=["checked", "server-refuses"])
def test_a_unit_with_a_value_over_max_allowed_packet_is_refused_whole(
    face: str, checked: bool, mib: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MariaDB: every record of the unit is checked against ``max_allowed_packet`` before anything is sent.
    Past that check (disabled: ``server-refuses``) the server drops the connection in the middle of the unit's
    transaction, after answering 1153, or before the client has sent the whole statement, which the client
    sees as a lost connection (2006; a race the load of the machine decides at 17 MiB; usual at 64). The
    unit's rollback then fails too. Either way it is an InvalidValueError (a lost connection while sending a
    value longer than the packet is the same refusal), nothing is written and the next unit runs."""
    if not checked:
        monkeypatch.setattr("persist_sql._backend._check_packet", lambda *args: None)
        monkeypatch.setattr("persist_sql._async_backend._check_packet", lambda *args: None)
    url = servers.driver_url("mariadb")
    servers.reset(url)
    big = Record('{"blob":"' + "x" * (mib * 1024 * 1024) + '"}')
    writes = [*_step(1), Write(DOMAINS["state"], WriteOp.PUT, ("s", "b"), big)]
    with SqlBackend(url, pool_size=1) as backend:
        native = AsyncSqlBackend(url, sync=backend)
        try:
            apply = (lambda w: run(native.apply_unit(w))) if face == "async" else backend.apply_unit
            with pytest.raises(InvalidValueError, match="max_allowed_packet"):
                apply(writes)
            assert [backend.get(w.domain, w.key) for w in writes] == [None] * len(writes)
            apply(_step(1))  # the backend is still usable
            assert backend.get(STRATEGY, CTX) == Record('{"cursor":1}', 1)
        finally:
            run(native.close())


def test_a_unit_on_the_asyncio_face_of_postgresql_is_one_round_trip() -> None:
    """The native asyncio backend sends the same one statement: one ``ReadyForQuery`` per unit, no BEGIN."""
    url = servers.driver_url("postgresql")
    servers.reset(url)
    with SqlBackend(url) as backend:
        native = AsyncSqlBackend(url, sync=backend, pool_size=1)

        async def units(numbers: range) -> None:
            for n in numbers:
                await native.apply_unit(_step(n))

        try:
            run(units(range(6)))  # psycopg prepares a statement on its 5th execution
            connection = native.pool._idle[-1].connection
            with tempfile.TemporaryFile("w+") as trace:
                connection.pgconn.trace(trace.fileno())
                connection.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
                run(units(range(6, 16)))
                connection.pgconn.untrace()
                trace.seek(0)
                lines = trace.read().splitlines()
            assert sum("ReadyForQuery" in line for line in lines) == 10
            assert not any("BEGIN" in line or "COMMIT" in line for line in lines)
            assert backend.get(STRATEGY, CTX) == Record('{"cursor":15}', 15)
        finally:
            run(native.close())
