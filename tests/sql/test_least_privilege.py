"""The runtime needs only SELECT, INSERT and UPDATE: migrate as the owner, then work as ``persist_app``.

The owner migrates a database and grants the three privileges on its tables, and DELETE on the ownership
leases alone, to the least-privilege role of ``scripts/services.sh`` (PERSIST_TEST_*_APP_URL), which then runs
every operation of the backend on every domain, ownership (with and without that DELETE), and the contract
kit's state machine. PostgreSQL uses a scratch database per test. On MariaDB the
owner may grant only on the shared test database (the services script's wildcard grant for scratch
databases does not carry a usable GRANT OPTION), so the tests there write on contexts of their own and
empty nothing.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from persist_core.backend import Record
from persist_core.domains import DOMAINS, FieldType, Kind
from persist_core.errors import ConfigurationError, PersistError, SchemaBehindError
from persist_core.ownership import Owner, ProcessIdentity
from persist_core.testing import state_machine_for
from persist_core.testing.samples import context_for
from persist_core.units import Write, WriteOp
from persist_sql import SqlBackend, admin
from persist_sql._schema import LEASE_TABLE
from tests.services import service_url
from tests.sql import servers


def _on_database(url: str, database: str) -> str:
    return sa.make_url(url).set(database=database).render_as_string(hide_password=False)


def _grant(
    owner_url: str,
    app_url: str,
    database: str,
    *,
    revoke: bool = False,
    privileges: str = "SELECT, INSERT, UPDATE",
    table: str | None = None,
) -> None:
    """Grant (or revoke) ``privileges`` on every table of ``database``, or on ``table`` alone."""
    app_user = sa.make_url(app_url).username
    engine = servers.admin_engine(owner_url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if engine.dialect.name == "postgresql":
            verb = "REVOKE" if revoke else "GRANT"
            direction = "FROM" if revoke else "TO"
            # The owner's connection is to the shared database; the grant must run in the scratch one.
            scratch = sa.create_engine(_on_database(owner_url, database), poolclass=sa.pool.NullPool)
            with scratch.begin() as inside:
                on = table or "ALL TABLES IN SCHEMA public"
                inside.execute(sa.text(f"{verb} {privileges} ON {on} {direction} {app_user}"))
            scratch.dispose()
        else:
            verb, direction = ("REVOKE", "FROM") if revoke else ("GRANT", "TO")
            # Straight to the driver without parameters, so that the host '%' is not taken for a placeholder.
            cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            on = f"`{database}`.`{table}`" if table else f"`{database}`.*"
            cursor.execute(f"{verb} {privileges} ON {on} {direction} '{app_user}'@'%'")
            cursor.close()


@pytest.fixture(params=["postgresql", "mariadb"])
def app_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The least-privilege role's URL on a scratch database that the owner migrated and granted."""
    owner_name, app_name = (
        (servers.POSTGRES, servers.POSTGRES_APP)
        if request.param == "postgresql"
        else (servers.MYSQL, servers.MYSQL_APP)
    )
    owner = servers.server_url(owner_name)
    # MariaDB refuses the role a login into a database it holds no privilege on: probe it after the grant.
    app = service_url(app_name)
    if request.param == "mariadb":
        database = sa.make_url(owner).database or ""
        admin.migrate(owner)
        _grant(owner, app, database)
        _grant(owner, app, database, privileges="DELETE", table=LEASE_TABLE)
        try:
            servers.server_url(app_name)
            yield _on_database(app, database)
        finally:
            _grant(owner, app, database, revoke=True)
            _grant(owner, app, database, revoke=True, privileges="DELETE", table=LEASE_TABLE)
        return
    servers.server_url(app_name)
    with servers.scratch_database(owner) as scratch:
        database = sa.make_url(scratch).database or ""
        admin.migrate(scratch)
        _grant(owner, app, database)
        _grant(owner, app, database, privileges="DELETE", table=LEASE_TABLE)
        try:
            yield _on_database(app, database)
        finally:
            _grant(owner, app, database, revoke=True)
            _grant(owner, app, database, revoke=True, privileges="DELETE", table=LEASE_TABLE)


def test_the_role_has_no_ddl_rights(app_url: str) -> None:
    """Else the test below would prove nothing."""
    engine = sa.create_engine(SqlBackend(app_url)._parsed.sa_url, poolclass=sa.pool.NullPool)
    try:
        with pytest.raises(sa.exc.DBAPIError), engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE persist_probe (x INTEGER)"))
        with pytest.raises(sa.exc.DBAPIError), engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM signal_items"))
        with pytest.raises(sa.exc.DBAPIError), engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE persist_leases"))
    finally:
        engine.dispose()


def _write_every_domain(backend: SqlBackend, tag: str) -> None:
    """Every backend operation on every domain, on contexts and keys of this call alone (``tag``)."""
    for name, spec in DOMAINS.items():
        context = tuple(context_for(spec, 1, tag).values())
        if spec.item is None:
            backend.put(spec, context, Record(f'{{"domain":"{name}"}}', 1))
            backend.put(spec, context, Record(f'{{"domain":"{name}","again":true}}', 2))
            assert backend.get(spec, context) == Record(f'{{"domain":"{name}","again":true}}', 2)
            continue
        bounds: tuple[Any, Any, Any] = (1_700_000_000_000, 1_700_000_060_000, 1_700_000_120_000)
        if spec.item.type is not FieldType.INT:  # the log has no context: its keys carry the tag
            bounds = (f"{tag}a", f"{tag}b", f"{tag}c")
        first, second, stop = bounds
        items = [((*context, first), Record("1")), ((*context, second), Record("2"))]
        if spec.first_write_wins:
            assert backend.insert_many(spec, items) == 2
            assert backend.insert_many(spec, items) == 0
        else:
            backend.put_many(spec, items)
            backend.put(spec, (*context, first), Record("3"))
        assert [item for item, _ in backend.scan(spec, context, first, stop)] == [first, second]
        assert [item for item, _ in backend.scan(spec, context, second, stop)] == [second]
        if spec.kind is Kind.CANDLE:
            assert len(backend.read_window(spec, context, first, stop, 60_000)) == 2
        if spec.soft_delete:
            backend.mark_removed(spec, (*context, first))
            record = backend.get(spec, (*context, first))
            assert record is not None
            assert record.removed


def test_check_reports_the_privileges_of_the_role(app_url: str) -> None:
    assert all(ok for _, ok, _ in admin.check(app_url)), admin.check(app_url)
    owner = servers.server_url(servers.POSTGRES if app_url.startswith("postgresql") else servers.MYSQL)
    database = sa.make_url(app_url).database or ""
    _grant(owner, app_url, database, revoke=True, privileges="UPDATE")
    try:
        results = {name: (ok, detail) for name, ok, detail in admin.check(app_url)}
    finally:
        _grant(owner, app_url, database, privileges="UPDATE")
    assert results["privileges"][0] is False
    assert "UPDATE on signal_items" in results["privileges"][1]
    assert "SELECT on" not in results["privileges"][1]
    _grant(owner, app_url, database, revoke=True)
    try:
        results = {name: (ok, detail) for name, ok, detail in admin.check(app_url)}
    finally:
        _grant(owner, app_url, database)
    # PostgreSQL lets the role in and names what it lacks; MariaDB refuses the login to the database itself.
    failed = results.get("privileges") or results["connectivity"]
    assert failed[0] is False
    assert "SELECT on signal_items" in failed[1] or "denied" in failed[1].lower(), failed


def test_every_operation_on_every_domain_as_the_role(app_url: str) -> None:
    with SqlBackend(app_url) as backend:
        _write_every_domain(backend, f"lp-{uuid.uuid4().hex[:8]}-")


def test_a_unit_of_every_domain_as_the_role(app_url: str) -> None:
    """A unit needs no more than the single writes: SELECT, INSERT and UPDATE (no DDL, no DELETE)."""
    tag = f"lpu-{uuid.uuid4().hex[:8]}-"
    writes = []
    for spec in DOMAINS.values():
        key = tuple(context_for(spec, 1, tag).values())
        if spec.item is not None:
            key = (*key, 1_700_000_000_000 if spec.item.type is FieldType.INT else f"{tag}a")
        op = WriteOp.INSERT if spec.first_write_wins else WriteOp.PUT
        writes.append(Write(spec, op, key, Record(f'{{"domain":"{spec.name}"}}', 1)))
        if spec.soft_delete:
            writes.append(Write(spec, WriteOp.REMOVE, key))
    with SqlBackend(app_url) as backend:
        backend.apply_unit(writes)
        for write in writes:
            assert backend.get(write.domain, write.key) == Record(
                f'{{"domain":"{write.domain.name}"}}', 1, write.domain.soft_delete
            )


@pytest.mark.parametrize("may_delete", [True, False], ids=["delete-granted", "no-delete"])
def test_ownership_as_the_role(app_url: str, may_delete: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Claims, renewals and releases need SELECT, INSERT and UPDATE; pruning old generations needs DELETE on
    the leases, and without it the old generations are kept and nothing fails."""
    owner_url = servers.server_url(servers.POSTGRES if app_url.startswith("postgresql") else servers.MYSQL)
    database = sa.make_url(app_url).database or ""
    wall = [4_000_000_000_000]  # far ahead of any lease another test left in a shared database
    generations: list[int] = []
    if not may_delete:
        _grant(owner_url, app_url, database, revoke=True, privileges="DELETE", table=LEASE_TABLE)
    try:
        with SqlBackend(app_url) as backend, caplog.at_level("INFO", logger="persist.sql"):
            leases = backend.lease_log()
            for n in range(3):  # three successive owners: the third claim prunes below the second
                identity = ProcessIdentity(f"lp-host-{n}", 100 + n, "lp")
                owner = Owner(leases, "lp", identity=identity, wall_ms=lambda: wall[0], monotonic=lambda: 0.0)
                try:
                    owner.ensure()
                    assert owner.generation is not None
                    generations.append(owner.generation)
                finally:
                    owner.release()
            engine = servers.admin_engine(_on_database(owner_url, database))
            with engine.connect() as connection:
                table = sa.table(LEASE_TABLE, sa.column("generation"))
                kept = connection.execute(
                    sa.select(table.c.generation).where(table.c.generation >= generations[0]).order_by("generation")
                ).scalars()
                assert list(kept) == (generations[1:] if may_delete else generations)
    finally:
        if not may_delete:
            _grant(owner_url, app_url, database, privileges="DELETE", table=LEASE_TABLE)
    refused = [r for r in caplog.records if "old ownership leases are kept" in r.getMessage()]
    assert len(refused) == (0 if may_delete else 1)


def test_the_state_machine_as_the_role(app_url: str) -> None:
    run_state_machine_as_test(
        state_machine_for(functools.partial(SqlBackend.from_url, app_url)),
        settings=settings(
            deadline=None,
            max_examples=5,
            stateful_step_count=25,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def test_the_role_cannot_create_the_schema_and_is_told_who_can() -> None:
    """PostgreSQL only: on MariaDB the owner cannot grant the role access to an empty scratch database."""
    owner = servers.server_url(servers.POSTGRES)
    app = servers.server_url(servers.POSTGRES_APP)
    with servers.scratch_database(owner) as empty:
        url = _on_database(app, sa.make_url(empty).database or "")
        with pytest.raises(SchemaBehindError) as info:
            SqlBackend(url).open()
    masked = SqlBackend(url).url
    assert f"backtest-persist migrate --url {masked}" in str(info.value)
    assert "owner" in str(info.value)


def test_a_missing_grant_is_a_configuration_error(app_url: str) -> None:
    owner = servers.server_url(servers.POSTGRES if app_url.startswith("postgresql") else servers.MYSQL)
    database = sa.make_url(app_url).database or ""
    with SqlBackend(app_url) as backend:
        backend.put(DOMAINS["state"], ("s", "b"), Record("1"))
        _grant(owner, app_url, database, revoke=True)
        try:
            with pytest.raises(PersistError) as info:
                fresh = SqlBackend(app_url)
                fresh.open()
                fresh.put(DOMAINS["state"], ("s", "b"), Record("2"))
        finally:
            _grant(owner, app_url, database)
    assert isinstance(info.value, ConfigurationError | SchemaBehindError), repr(info.value)
