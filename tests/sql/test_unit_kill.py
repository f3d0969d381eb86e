"""Units of work on SQL are all or none (issue 13): under SIGKILL, and when their transaction fails midway.

The kill rounds are the issue's counts (1,000 on SQLite, 200 on PostgreSQL and MariaDB): a writer forked from
this process builds its own backend from the factory (nothing opened here crosses the fork), commits
five-domain units until it is killed, and each round checks on a freshly opened backend that the last unit
is whole or absent. The midway failures hold a row of the unit's last statement locked in another
transaction until the deadline (PostgreSQL, MariaDB; both faces), or take SQLite's last table away.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from persist_core.backend import Backend, Record
from persist_core.domains import DOMAINS
from persist_core.errors import BackendTimeoutError, SchemaError
from persist_core.testing.async_face import run
from persist_core.testing.units import run_unit_kill_test
from persist_core.units import Write, WriteOp
from persist_sql import AsyncSqlBackend, SqlBackend
from tests.sql import servers

#: The deadline of the midway failures, and what the tests allow past it (issue 10: deadline + 1 s).
TIMEOUT = 1.0
LIMIT = TIMEOUT + 1.0


def _kill_rounds(
    factory: Callable[[], Backend], rounds: int, max_delay: float = 0.03, *, require_in_flight: bool = True
) -> None:
    namespace = f"{uuid.uuid4().hex[:8]}-"
    reports = run_unit_kill_test(factory, rounds=rounds, namespace=namespace, seed=rounds, max_delay=max_delay)
    assert all(r.acked >= 0 for r in reports)
    assert [p for r in reports for p in r.problems] == []
    # Kills land inside units too, which shows as the unit after the acknowledged one found whole (killed
    # between the commit and the acknowledgement). How often depends on the machine: SQLite's commit is so
    # short on a quiet one that a CI run saw none in 1,000 rounds, so it is reported, not required; the
    # servers' rounds (a commit round trip) are required to show some.
    caught = sum(r.found > r.acked for r in reports)
    print(f"{caught} of {rounds} kills landed between a unit's commit and its acknowledgement")
    if require_in_flight:
        assert caught, "no kill landed after a commit and before its acknowledgement"


@pytest.fixture
def memory_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder in RAM (``/dev/shm``) where there is one, else ``tmp_path``.

    A SIGKILL of the writer leaves the kernel's page cache intact, so whether a commit was flushed to disk
    plays no part in what the check reads after it; in RAM a commit costs no disk flush, and each round needs
    at least one commit before its kill (30 ms a round instead of 58 ms, measured once on the loaded machine).
    """
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="persist-unit-kill-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_sqlite_units_survive_1000_kills(sqlite_template: Path, memory_folder: Path) -> None:
    path = memory_folder / "state.db"
    shutil.copyfile(sqlite_template, path)
    # A SQLite unit takes about a millisecond: 15 ms reach a dozen units in, and keep 1,000 rounds short.
    _kill_rounds(
        functools.partial(SqlBackend.from_url, f"sqlite:///{path}"), 1000, max_delay=0.015, require_in_flight=False
    )


@pytest.mark.parametrize("name", [servers.POSTGRES, servers.MYSQL], ids=["postgresql", "mariadb"])
def test_server_units_survive_200_kills(name: str) -> None:
    _kill_rounds(functools.partial(SqlBackend.from_url, servers.session_url(name)), 200)


# --------------------------------------------------------------------------------------- midway failures

_LOG, _SIGNAL, _STRATEGY = DOMAINS["log"], DOMAINS["signal"], DOMAINS["strategy"]


def _unit(ns: str, value: int) -> list[Write]:
    """A unit whose statements run log, signal, strategy (domains in name order): strategy's is the last."""
    ctx = (f"{ns}/USDT", "midway", "x")
    return [
        Write(_STRATEGY, WriteOp.PUT, ctx, Record(f'{{"v":{value}}}')),
        Write(_LOG, WriteOp.INSERT, (f"{ns}-log-{value}",), Record('{"v":1}')),
        Write(_SIGNAL, WriteOp.PUT, ctx, Record(f'{{"v":{value}}}')),
    ]


def _state(backend: Backend, ns: str) -> tuple[Any, ...]:
    ctx = (f"{ns}/USDT", "midway", "x")
    return (
        backend.get(_STRATEGY, ctx),
        backend.get(_SIGNAL, ctx),
        [value for value in (1, 2) if backend.get(_LOG, (f"{ns}-log-{value}",)) is not None],
    )


@pytest.fixture(params=[servers.POSTGRES, servers.MYSQL], ids=["postgresql", "mariadb"])
def server_url(request: pytest.FixtureRequest) -> str:
    url = sa.make_url(servers.session_url(request.param)).update_query_dict({"timeout": str(TIMEOUT)})
    return url.render_as_string(hide_password=False)


@pytest.fixture
def ns() -> str:
    return f"mid-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def _strategy_row_locked(url: str, ns: str) -> Iterator[None]:
    """The unit's strategy row locked by another transaction (``SELECT ... FOR UPDATE``) for the block."""
    table = sa.table(_STRATEGY.table_name, sa.column("symbol"))
    with servers.admin_engine(url).connect() as holder:
        transaction = holder.begin()
        holder.execute(sa.select(table.c.symbol).where(table.c.symbol == f"{ns}/USDT").with_for_update()).all()
        try:
            yield
        finally:
            transaction.rollback()


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_unit_stopped_by_a_row_lock_midway_stores_nothing(server_url: str, ns: str, face: str) -> None:
    with SqlBackend(server_url) as backend:
        backend.apply_unit(_unit(ns, 1))
        before = _state(backend, ns)
        assert before[2] == [1]
        native = AsyncSqlBackend(server_url, sync=backend)

        def apply(writes: list[Write]) -> None:
            if face == "async":
                run(native.apply_unit(writes))
            else:
                backend.apply_unit(writes)

        try:
            with _strategy_row_locked(server_url, ns):
                start = time.monotonic()
                with pytest.raises(BackendTimeoutError, match="a unit of 3 writes"):
                    apply(_unit(ns, 2))
                assert time.monotonic() - start < LIMIT
                assert _state(backend, ns) == before  # neither the log insert nor the signal before the lock
            apply(_unit(f"{ns}-other", 1))  # on the pooled connection: a transaction left open would commit here
            assert _state(backend, ns) == before  # nothing is committed once the lock is gone
            apply(_unit(ns, 2))  # the same backend works again, and the unit is whole
            assert _state(backend, ns) == (Record('{"v":2}'), Record('{"v":2}'), [1, 2])
        finally:
            run(native.close())


def test_a_sqlite_unit_failing_at_its_last_table_stores_nothing(sqlite_template: Path, tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    shutil.copyfile(sqlite_template, path)
    ns = "mid"
    with SqlBackend(f"sqlite:///{path}") as backend:
        backend.apply_unit(_unit(ns, 1))
        before = _state(backend, ns)
        engine = sa.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool)
        rename = "ALTER TABLE {} RENAME TO {}"
        with engine.begin() as connection:
            connection.exec_driver_sql(rename.format(_STRATEGY.table_name, "strategy_away"))
        try:
            with pytest.raises(SchemaError):
                backend.apply_unit(_unit(ns, 2))
        finally:
            with engine.begin() as connection:
                connection.exec_driver_sql(rename.format("strategy_away", _STRATEGY.table_name))
            engine.dispose()
        assert _state(backend, ns) == before
        backend.apply_unit(_unit(ns, 2))
        assert _state(backend, ns) == (Record('{"v":2}'), Record('{"v":2}'), [1, 2])
