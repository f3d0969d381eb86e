"""What the contract kit cannot see: round trips per operation, counts under concurrency, dead connections."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from persist_core.backend import Record
from persist_core.domains import DOMAINS
from persist_core.errors import BackendUnavailableError, InvalidValueError
from persist_core.stores import make_store
from persist_sql import SqlBackend
from persist_sql import _backend as backend_module
from tests.services import read_only_mount
from tests.sql import servers

CANDLE = DOMAINS["candle"]
LOG = DOMAINS["log"]
MEASURE = DOMAINS["measure"]
SIGNAL = DOMAINS["signal"]
STORAGE = DOMAINS["storage"]
CONTEXT = ("OPS/USDT", "1m", "ops")


def _candles(start: int, count: int, tag: str = "") -> list[tuple[tuple[Any, ...], Record]]:
    return [((*CONTEXT, 60_000 * k), Record(f'{{"k":{k},"tag":"{tag}"}}')) for k in range(start, start + count)]


def _every_operation(backend: SqlBackend, n: int) -> int:
    """One call of each backend operation; returns how many calls it made."""
    backend.put(SIGNAL, ("S", "s", "x"), Record(f'{{"n":{n}}}', n))
    backend.get(SIGNAL, ("S", "s", "x"))
    backend.put(MEASURE, ("b", f"k{n}"), Record("1"))
    backend.mark_removed(MEASURE, ("b", f"k{n}"))
    backend.scan(MEASURE, ("b",))
    backend.put_many(STORAGE, [((True, f"s{n}-{i}"), Record("{}")) for i in range(20)])
    backend.insert_many(CANDLE, _candles(n * 100, 50))
    backend.insert_many(LOG, [((f"e{n}-{i}",), Record("{}")) for i in range(20)])
    backend.read_window(CANDLE, CONTEXT, 0, 60_000 * 1000, 60_000)
    return 9


@pytest.fixture(params=["postgresql", "mariadb", "mysqlclient"])
def server_backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, SqlBackend]]:
    url = servers.driver_url(request.param)
    servers.reset(url)
    with SqlBackend(url, pool_size=1) as backend:
        yield ("postgresql" if request.param == "postgresql" else "mariadb"), backend


def test_every_operation_is_one_round_trip(server_backend: tuple[str, SqlBackend]) -> None:
    """Counted by the server (MariaDB's Questions) or on the wire (libpq's trace of ReadyForQuery)."""
    kind, backend = server_backend
    for n in range(6):  # psycopg prepares a statement on its 5th execution: one extra round trip, once
        _every_operation(backend, n)
    pool = backend._started().pool
    lease = pool.acquire()
    connection = lease[1]
    pool.release(lease)
    if kind == "mariadb":
        questions = "SHOW SESSION STATUS LIKE 'Questions'"

        def asked() -> int:
            with connection.cursor() as cursor:
                cursor.execute(questions)
                return int(cursor.fetchone()[1])

        before = asked()
        calls = sum(_every_operation(backend, n) for n in range(6, 16))
        assert asked() - before - 1 == calls  # the second SHOW counts itself
    else:
        with tempfile.TemporaryFile("w+") as trace:
            connection.pgconn.trace(trace.fileno())
            connection.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            calls = sum(_every_operation(backend, n) for n in range(6, 16))
            connection.pgconn.untrace()
            trace.seek(0)
            lines = trace.read().splitlines()
        assert sum("ReadyForQuery" in line for line in lines) == calls
        assert not any("BEGIN" in line or "COMMIT" in line for line in lines)


@pytest.fixture(params=["postgresql", "mariadb", "mysqlclient", "sqlite"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ops.db'}"
    url = servers.driver_url(request.param)
    servers.reset(url)
    return url


def _in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * count
    barrier = threading.Barrier(count)

    def run(who: int) -> None:
        barrier.wait()
        try:
            results[who] = work(who)
        except BaseException as exc:
            results[who] = exc

    threads = [threading.Thread(target=run, args=(who,)) for who in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_insert_many_counts_only_its_own_rows_when_batches_overlap(any_url: str) -> None:
    """Four writers insert overlapping batches at once: the counts add up to the distinct keys, and every
    stored candle is the one its counted writer sent."""
    with SqlBackend(any_url) as backend:
        for round_no in range(3):
            base = round_no * 1000
            batches = {who: _candles(base + who * 50, 200, tag=str(who)) for who in range(4)}
            counts = _in_threads(4, lambda who: backend.insert_many(CANDLE, batches[who]))  # noqa: B023
            assert all(isinstance(c, int) for c in counts), counts
            stored = backend.scan(CANDLE, CONTEXT, 60_000 * base, 60_000 * (base + 350))
            assert len(stored) == 350
            assert sum(counts) == 350
            winners = [int(record.payload.split('"tag":"')[1][0]) for _, record in stored]
            assert sorted(winners.count(who) for who in range(4)) == sorted(counts)


def test_upserts_of_overlapping_batches_do_not_deadlock(any_url: str) -> None:
    """put_many batches that share keys, sent in opposite orders, all succeed (keys are locked in order)."""
    keys = [(False, f"sig-{i:03d}") for i in range(150)]
    with SqlBackend(any_url) as backend:

        def work(who: int) -> None:
            order = keys if who % 2 else list(reversed(keys))
            for _ in range(5):
                backend.put_many(STORAGE, [(key, Record(f'{{"who":{who}}}')) for key in order])

        assert _in_threads(4, work) == [None] * 4
        assert len(backend.scan(STORAGE, (False,))) == 150


def test_put_many_with_a_key_twice_keeps_the_last(any_url: str) -> None:
    with SqlBackend(any_url) as backend:
        backend.put_many(STORAGE, [((True, "a"), Record("1")), ((True, "b"), Record("2")), ((True, "a"), Record("3"))])
        assert backend.scan(STORAGE, (True,)) == [("a", Record("3")), ("b", Record("2"))]


# -------------------------------------------------------------------------------------- connections


def _server_pid(backend: SqlBackend, kind: str) -> int:
    pool = backend._started().pool
    lease = pool.acquire()
    try:
        cursor = lease[1].cursor()
        cursor.execute("SELECT pg_backend_pid()" if kind == "postgresql" else "SELECT CONNECTION_ID()")
        pid = int(cursor.fetchone()[0])
        cursor.close()
        return pid
    finally:
        pool.release(lease)


def _kill(url: str, kind: str, pid: int) -> None:
    statement = f"SELECT pg_terminate_backend({pid})" if kind == "postgresql" else f"KILL {pid}"
    with servers.admin_engine(url).connect() as connection:
        connection.execute(sa.text(statement))
        connection.commit()


def test_a_connection_killed_by_the_server_is_replaced_without_an_error(
    server_backend: tuple[str, SqlBackend],
) -> None:
    kind, backend = server_backend
    url = servers.session_url(servers.POSTGRES if kind == "postgresql" else servers.MYSQL)
    backend.put(SIGNAL, ("S", "s", "x"), Record('{"v":1}'))
    for operation in range(4):
        pid = _server_pid(backend, kind)
        _kill(url, kind, pid)
        time.sleep(0.2)  # let the server close the socket
        if operation % 2:
            backend.put(SIGNAL, ("S", "s", "x"), Record(f'{{"v":{operation}}}'))
        else:
            assert backend.get(SIGNAL, ("S", "s", "x")) is not None
        assert _server_pid(backend, kind) != pid
    assert backend.get(SIGNAL, ("S", "s", "x")) == Record('{"v":3}')


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_connections_idle_too_long_are_not_reused(kind: str) -> None:
    url = servers.session_url(servers.POSTGRES if kind == "postgresql" else servers.MYSQL)
    with SqlBackend(url, idle_seconds=0.2) as backend:
        first = _server_pid(backend, kind)
        assert _server_pid(backend, kind) == first  # reused while fresh
        time.sleep(0.3)
        assert _server_pid(backend, kind) != first


# -------------------------------------------------------------------------------------- too large

_MIB = 1024 * 1024


@pytest.mark.parametrize("driver", ["mariadb", "mysqlclient"])
@pytest.mark.parametrize(
    "value",
    [
        {"blob": "x" * (17 * _MIB)},  # just over 16 MiB: the server answers 1153
        {"blob": "x" * (40 * _MIB)},  # far over: the server drops the connection mid-send (2006)
        {"blob": '"' * (5 * _MIB)},  # 5 MiB of quotes: 10 MiB of JSON, 20 MiB once escaped for the wire
    ],
    ids=["17MiB", "40MiB", "escaped-20MiB"],
)
def test_a_value_over_max_allowed_packet_is_an_invalid_value(driver: str, value: dict[str, str]) -> None:
    url = servers.driver_url(driver)
    servers.reset(url)
    with SqlBackend(url, pool_size=1) as backend:
        assert backend._started().max_packet == 16 * _MIB  # the shared MariaDB's default
        store = make_store(backend, DOMAINS["state"], {"signal_id": "s", "bucket_name": "b"}, max_value_bytes=64 * _MIB)
        with pytest.raises(InvalidValueError, match="max_allowed_packet"):
            store.write(value)
        assert backend.get(DOMAINS["state"], ("s", "b")) is None
        storage = make_store(backend, DOMAINS["storage"], {"backtest": True}, max_value_bytes=64 * _MIB)
        with pytest.raises(InvalidValueError, match="max_allowed_packet"):
            storage.write([{"id": "a"}, {"id": "b", **value}])
        assert backend.scan(DOMAINS["storage"], (True,)) == []
        store.write({"small": 1})  # the connection is still usable
        assert store.read() == {"small": 1}


@pytest.mark.parametrize("mib", [17, 64])
@pytest.mark.parametrize("driver", ["mariadb", "mysqlclient"])
def test_the_servers_packet_too_large_error_is_an_invalid_value_without_a_retry(
    driver: str, mib: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past the backend's own check (disabled here) a statement over the server's max_allowed_packet (16 MiB)
    # must still come out as an InvalidValueError, sent once. The server answers 1153 and closes the
    # connection; when the close reaches the client mid-send (nearly always at 64 MiB, under load at 17), the
    # client sees only a lost connection (2006, 2013 or 2055), which must not read as an outage to retry.
    monkeypatch.setattr("persist_sql._backend._check_packet", lambda *args: None)
    url = servers.driver_url(driver)
    servers.reset(url)
    sent: list[object] = []  # per send: the server's error number, or None when it answered
    row_count = backend_module._row_count

    def counting_row_count(*args: Any) -> Any:
        try:
            result = row_count(*args)
        except Exception as exc:
            orig = getattr(exc, "orig", exc)
            sent.append(orig.args[0] if getattr(orig, "args", None) else type(exc).__name__)
            raise
        sent.append(None)
        return result

    monkeypatch.setattr(backend_module, "_row_count", counting_row_count)
    with SqlBackend(url, pool_size=1) as backend:
        with pytest.raises(InvalidValueError, match="max_allowed_packet") as info:
            backend.put(DOMAINS["state"], ("s", "b"), Record('{"blob":"' + "x" * (mib * _MIB) + '"}'))
        assert len(sent) == 1 and sent[0] in (1153, 2006, 2013, 2055), sent
        assert getattr(info.value.__cause__, "code", None) == sent[0]  # the masked stand-in keeps the number
        assert backend.get(DOMAINS["state"], ("s", "b")) is None
        backend.put(DOMAINS["state"], ("s", "b"), Record('{"small":1}'))  # a new connection serves the next call
        assert backend.get(DOMAINS["state"], ("s", "b")) == Record('{"small":1}')


def test_a_sqlite_file_under_an_unwritable_folder_is_a_typed_error() -> None:
    with read_only_mount() as folder:
        for path in (folder / "sub" / "state.db", folder / "state.db"):  # folder to create; file to create
            with pytest.raises(BackendUnavailableError):
                SqlBackend(f"sqlite:///{path}").open()
