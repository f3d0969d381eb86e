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
from persist_sql import _dialects, _errors, _migrate

__all__ = ["check", "migrate"]


def migrate(url: str, revision: str = "head", *, sql: bool = False) -> str:
    """Upgrade the database at ``url`` to ``revision`` and say what was done.

    Runs under the migration lock, so it is safe while backends open the same database. With ``sql=True``
    nothing connects: the SQL script that upgrades an empty database to ``revision`` is returned instead
    (Alembic's offline mode; ``revision`` may be ``FROM:TO``), for a DBA to review and run.

    Raises:
        SchemaAheadError: the database was migrated by a newer version of this library.
        BackendUnavailableError, ConfigurationError, SchemaError: as the message says.
    """
    parsed = _dialects.parse_url(url)
    if sql:
        return _migrate.offline_sql(parsed, revision)
    before, after = _migrate.upgrade(parsed, revision)
    if before.current == after.current:
        return f"{parsed.display}: nothing to do, the schema is {after.describe()}"
    was = ", ".join(before.current) or "empty"
    return f"{parsed.display}: migrated from {was} to {', '.join(after.current)} ({after.describe()})"


def check(url: str) -> list[tuple[str, bool, str]]:
    """Check the database at ``url``: ``(name, ok, detail)`` for connectivity, the schema revision against
    this code's head, the presence of the 16 tables, and the tables against the domain specs.

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
    status = _migrate.schema_status(connection)
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

    context = MigrationContext.configure(connection, opts={"version_table": _migrate.VERSION_TABLE})
    differences = compare_metadata(context, _migrate.target_metadata(connection.dialect))
    if differences:
        shown = "; ".join(_describe(diff) for diff in differences[:10])
        results.append(("schema matches the code", False, f"{len(differences)} difference(s): {shown}"))
    else:
        results.append(("schema matches the code", True, "the tables match the domain specs"))
    return results


def _describe(diff: Any) -> str:
    """One autogenerate difference in a few words (``add_column measure_items.note``)."""
    if isinstance(diff, list):  # column modifications come as a list of tuples
        return ", ".join(_describe(item) for item in diff)
    op, *rest = diff
    names = [getattr(part, "name", part) for part in rest if isinstance(part, (str, sa.Table, sa.Column, sa.Index))]
    return " ".join([str(op), *(str(name) for name in names if name)])[:200]
