"""Schema administration for the command line: ``backtest-persist migrate`` and ``backtest-persist check``.

Both take the database URL and return text; passwords are masked in everything they return or raise.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from persist_core.domains import DOMAINS
from persist_core.errors import PersistError
from persist_sql import _dialects, _errors, _migrate, _schema

__all__ = ["check", "migrate"]


def migrate(url: str, revision: str = "head", *, sql: bool = False, downgrade: bool = False) -> str:
    """Upgrade (or, with ``downgrade=True``, downgrade) the database at ``url`` to ``revision``; say what was done.

    Runs under the migration lock, so it is safe while backends open the same database. A ``revision``
    older than the database's is a downgrade, which drops the tables of the later revisions with their
    records: it is refused unless ``downgrade=True``. With ``sql=True`` nothing connects: the SQL script that
    upgrades an empty database to ``revision`` is returned instead (Alembic's offline mode; ``revision`` may be
    ``FROM:TO``), for a DBA to review and run.

    Raises:
        SchemaAheadError: the database was migrated by a newer version of this library.
        BackendUnavailableError, ConfigurationError, SchemaError: as the message says.
    """
    parsed = _dialects.parse_url(url)
    if sql:
        return _migrate.offline_sql(parsed, revision)
    before, after = _migrate.upgrade(parsed, revision, downgrade=downgrade)
    if before.current == after.current:
        return f"{parsed.display}: nothing to do, the schema is {after.describe()}"
    was = ", ".join(before.current) or "empty"
    now = ", ".join(after.current) or "base (no persist_sql tables)"
    how = "downgraded" if _migrate.is_downgrade(before.current, revision) else "migrated"
    return f"{parsed.display}: {how} from {was} to {now} ({after.describe()})"


def check(url: str) -> list[tuple[str, bool, str]]:
    """Check the database at ``url``: ``(name, ok, detail)`` for connectivity, the schema revision against
    this code's head, the presence of the 16 tables, the tables against the domain specs, and whether the
    URL's role has the privileges the runtime needs (SELECT, INSERT, UPDATE).

    Database problems are reported, not raised; a URL that names no supported database raises
    :class:`~persist_core.errors.ConfigurationError`. Nothing is created or changed.
    """
    parsed = _dialects.parse_url(url)
    display = parsed.display
    database = parsed.sa_url.database or ""
    if parsed.sa_url.get_backend_name() == "sqlite" and not os.path.exists(database):
        return [("connectivity", False, f"{display}: the SQLite file {database} does not exist")]
    engine = sa.create_engine(parsed.sa_url, **_dialects.engine_options(parsed.sa_url, autocommit=True))
    results: list[tuple[str, bool, str]] = []
    try:
        with engine.connect() as connection:
            results.append(("connectivity", True, f"connected to {display} ({_server(connection.dialect)})"))
            results.extend(_check_schema(connection, display))
    except PersistError as exc:
        results.append(("connectivity" if not results else "schema", False, str(exc)))
    except Exception as exc:
        error = _errors.translate(exc, display)
        results.append(("connectivity" if not results else "schema", False, str(error)))
    finally:
        engine.dispose()
    return results


def _server(dialect: sa.Dialect) -> str:
    version = ".".join(str(part) for part in (dialect.server_version_info or ()))
    return f"{_dialects.kind_of(dialect)} {version}".strip()


def _check_schema(connection: sa.Connection, display: str) -> list[tuple[str, bool, str]]:
    try:
        status = _migrate.schema_status(connection)
    except sa.exc.DBAPIError as exc:
        if not _errors.is_privilege_error(exc.orig):
            raise
        # The role may not even read the revision: say so, and which privileges it lacks.
        unreadable = f"cannot read {_migrate.VERSION_TABLE}: {_errors.translate(exc, display)}"
        return [("schema revision", False, unreadable), _check_privileges(connection)]
    if status.state == "current":
        revision = (True, status.describe())
    elif status.state == "ahead":
        revision = (False, str(_migrate.ahead_error(display, status)))
    else:
        revision = (False, f"{status.describe()}: run `backtest-persist migrate --url {display}`")
    results = [("schema revision", *revision)]

    present = set(sa.inspect(connection).get_table_names())
    missing = [spec.table_name for spec in DOMAINS.values() if spec.table_name not in present]
    if missing:
        results.append(("tables", False, f"missing {len(missing)} of {len(DOMAINS)}: {', '.join(missing)}"))
        return results
    results.append(("tables", True, f"all {len(DOMAINS)} domain tables are present"))
    results.append(_check_privileges(connection))

    context = MigrationContext.configure(connection, opts={"version_table": _migrate.VERSION_TABLE})
    differences = compare_metadata(context, _migrate.target_metadata(connection.dialect))
    if differences:
        shown = "; ".join(_describe(diff) for diff in differences[:10])
        results.append(("schema matches the code", False, f"{len(differences)} difference(s): {shown}"))
    else:
        results.append(("schema matches the code", True, "the tables match the domain specs"))
    return results


_RUNTIME_PRIVILEGES = ("SELECT", "INSERT", "UPDATE")


def _check_privileges(connection: sa.Connection) -> tuple[str, bool, str]:
    """Whether the role may SELECT, INSERT and UPDATE every domain table and the leases (and read the version table).

    DELETE on the leases is not required (pruning old generations is skipped without it).

    PostgreSQL answers ``has_table_privilege``; MariaDB checks privileges when it explains a statement, so
    ``EXPLAIN`` of a harmless insert and update tells without writing. SQLite: the file and its folder (for
    the WAL files) must be writable.
    """
    kind = _dialects.kind_of(connection.dialect)
    missing: list[str] = []
    if kind == "sqlite":
        database = connection.engine.url.database or ""
        folder = os.path.dirname(os.path.abspath(database))
        for path in (database, folder):
            if not os.access(path, os.R_OK | os.W_OK):
                missing.append(f"write access to {path}")
    else:
        tables = _migrate.target_metadata(connection.dialect).tables
        for name in [*(spec.table_name for spec in DOMAINS.values()), _schema.LEASE_TABLE]:
            for privilege in _RUNTIME_PRIVILEGES:
                if not _may(connection, kind, tables[name], privilege):
                    missing.append(f"{privilege} on {name}")
        if not _may(connection, kind, _migrate.version_table, "SELECT"):
            missing.append(f"SELECT on {_migrate.VERSION_TABLE}")
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        return ("privileges", False, f"missing {shown} (docs/sql.md, least-privilege setup)")
    return ("privileges", True, "SELECT, INSERT and UPDATE on every domain table and on the ownership leases")


def _may(connection: sa.Connection, kind: str, table: sa.Table, privilege: str) -> bool:
    if kind == "postgresql":
        allowed = sa.func.has_table_privilege(table.name, privilege)
        return bool(connection.execute(sa.select(allowed)).scalar())
    if privilege == "SELECT":
        probe: sa.ClauseElement = sa.select(sa.literal(1)).select_from(table).where(sa.false())
    elif privilege == "INSERT":
        probe = sa.insert(table).values({column.name: _sample(column) for column in table.primary_key.columns})
    else:
        probe = sa.update(table).values({table.c.updated_at: table.c.updated_at}).where(sa.false())
    text = str(probe.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    try:
        connection.exec_driver_sql(f"EXPLAIN {text}")  # autocommit: a refusal ends no transaction
    except sa.exc.DBAPIError as exc:
        if _errors.is_privilege_error(exc.orig):
            return False
        raise
    return True


def _sample(column: sa.Column[Any]) -> Any:
    if isinstance(column.type, sa.Boolean):
        return False
    if isinstance(column.type, sa.Integer):
        return 0
    return "privilege-probe"


def _describe(diff: Any) -> str:
    """One autogenerate difference in a few words (``add_column measure_items.note``)."""
    if isinstance(diff, list):  # column modifications come as a list of tuples
        return ", ".join(_describe(item) for item in diff)
    op, *rest = diff
    names = [getattr(part, "name", part) for part in rest if isinstance(part, (str, sa.Table, sa.Column, sa.Index))]
    return " ".join([str(op), *(str(name) for name in names if name)])[:200]
