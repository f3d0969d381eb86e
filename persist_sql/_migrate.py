"""Alembic, run in code: where the revisions are, the schema check on open, and upgrades under a lock.

The revision files live in the repository's top-level ``migrations/`` folder and are shipped inside the
wheel as ``persist_sql/migrations`` (pyproject.toml, ``force-include``); :func:`script_location` finds
either. Alembic's version table is private to this package: ``persist_alembic_version``.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection

from persist_core.errors import ConfigurationError, PersistError, SchemaAheadError, SchemaBehindError, SchemaError
from persist_core.urls import masks_driver_errors
from persist_sql import _dialects, _errors, _schema
from persist_sql._dialects import ParsedUrl

__all__ = [
    "VERSION_TABLE",
    "SchemaStatus",
    "alembic_config",
    "ensure_schema",
    "head",
    "migration_engine",
    "offline_sql",
    "schema_status",
    "script_location",
    "target_metadata",
    "upgrade",
]

VERSION_TABLE = "persist_alembic_version"

#: The version table as the fast path of :meth:`SqlBackend.open` reads it.
version_table = sa.Table(VERSION_TABLE, sa.MetaData(), sa.Column("version_num", sa.String(32), primary_key=True))


def script_location() -> Path:
    """The Alembic folder: ``persist_sql/migrations`` in a wheel, ``<repo>/migrations`` in a source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "migrations", package.parent / "migrations"):
        env = candidate / "env.py"
        # The repository folder next to the package may be any project's "migrations" in a site-packages
        # layout; only ours names this module.
        if env.is_file() and "persist_sql._migrate" in env.read_text(encoding="utf-8"):
            return candidate
    raise ConfigurationError(f"the persist_sql migrations are missing (looked in {package} and {package.parent})")


@functools.cache
def _scripts(location: str) -> ScriptDirectory:
    return ScriptDirectory(location)


def scripts() -> ScriptDirectory:
    """The revision files (loaded once per process)."""
    return _scripts(str(script_location()))


def head() -> str:
    """The newest revision this code knows."""
    heads = scripts().get_heads()
    if len(heads) != 1:  # pragma: no cover - guarded by a test of the revision files
        raise SchemaError(f"the persist_sql migrations have {len(heads)} heads: {heads}")
    return heads[0]


def alembic_config(*, connection: Connection | None = None, url: sa.URL | None = None, output: Any = None) -> Config:
    """An Alembic ``Config`` built in code: no ``alembic.ini``.

    ``connection`` is used by ``migrations/env.py`` online; ``url`` only tells the dialect in offline
    (``--sql``) mode. Both travel in ``Config.attributes``, not in the ini options, so that a password with
    a ``%`` never meets configparser's interpolation.
    """
    config = Config(output_buffer=output) if output is not None else Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["connection"] = connection
    config.attributes["url"] = url
    return config


def target_metadata(dialect: sa.Dialect) -> sa.MetaData:
    """The tables the code expects on ``dialect``'s database family (for Alembic's autogenerate)."""
    return _schema.metadata_for(_dialects.kind_of(dialect))


# -------------------------------------------------------------------------------------------- status

State = Literal["empty", "current", "behind", "ahead"]


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands relative to the code."""

    state: State
    current: tuple[str, ...]
    head: str

    def describe(self) -> str:
        """One line for messages and ``check``."""
        at = ", ".join(self.current) or "no revision"
        return {
            "empty": f"no persist_sql schema yet (head is {self.head})",
            "current": f"at head {self.head}",
            "behind": f"at {at}, behind head {self.head}",
            "ahead": f"at {at}, which this code does not know (its head is {self.head})",
        }[self.state]


def schema_status(connection: Connection) -> SchemaStatus:
    """Read the revision stored in the database and compare it with the revision files."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    current = tuple(context.get_current_heads())
    newest = head()
    if not current:
        return SchemaStatus("empty", current, newest)
    if current == (newest,):
        return SchemaStatus("current", current, newest)
    known = scripts()
    for revision in current:
        try:
            if known.get_revision(revision) is None:
                return SchemaStatus("ahead", current, newest)
        except CommandError:  # alembic.util.CommandError: "Can't locate revision"
            return SchemaStatus("ahead", current, newest)
    return SchemaStatus("behind", current, newest)


def behind_error(display: str, status: SchemaStatus) -> SchemaBehindError:
    """The error for a schema older than the code, naming the command that upgrades it."""
    return SchemaBehindError(
        f"the schema of {display} is {status.describe()}: run `backtest-persist migrate --url {display}` "
        "(or open the backend with auto_migrate=True)"
    )


def ahead_error(display: str, status: SchemaStatus) -> SchemaAheadError:
    """The error for a schema newer than the code."""
    return SchemaAheadError(
        f"the schema of {display} is {status.describe()}: it was migrated by a newer backtest-persist; "
        "upgrade this installation rather than run old code against it"
    )


# ------------------------------------------------------------------------------------------ upgrading


def migration_engine(parsed: ParsedUrl) -> sa.Engine:
    """An engine for schema work: transactional (not autocommit), one connection, no pool.

    On SQLite every transaction begins with ``BEGIN EXCLUSIVE``: the check and the DDL then run while no
    other connection, in this process or another, can read or write the file, which is what makes two
    processes migrating at once safe there (SQLite's DDL is transactional).
    """
    _dialects.prepare_sqlite_file(parsed.sa_url)
    engine = sa.create_engine(parsed.sa_url, **_dialects.engine_options(parsed.sa_url, autocommit=False))
    _dialects.configure_engine(engine)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _no_implicit_transactions(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None  # the begin event below starts every transaction

        @sa.event.listens_for(engine, "begin")
        def _begin_exclusive(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN EXCLUSIVE")

    return engine


@contextlib.contextmanager
def _migrating(parsed: ParsedUrl) -> Iterator[Connection]:
    """A connection in a transaction, under the migration lock; commits on success, then unlocks."""
    engine = migration_engine(parsed)
    try:
        with (
            engine.connect() as connection,
            _dialects.migration_lock(_dialects.kind_of(connection.dialect), connection),
            connection.begin(),
        ):
            yield connection
    finally:
        engine.dispose()


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection=connection), revision)


@masks_driver_errors
def ensure_schema(parsed: ParsedUrl, *, auto_migrate: bool) -> None:
    """The schema check of :meth:`SqlBackend.open` when the fast path did not find the head revision.

    Empty database: created at head. Behind: :class:`SchemaBehindError`, or upgraded when ``auto_migrate``.
    Ahead: :class:`SchemaAheadError`. The decision is taken again under the migration lock, so of two
    processes opening an empty database at once one creates the tables and the other finds them.
    """
    try:
        with _migrating(parsed) as connection:
            status = schema_status(connection)
            if status.state == "current":
                return
            if status.state == "ahead":
                raise ahead_error(parsed.display, status)
            if status.state == "behind" and not auto_migrate:
                raise behind_error(parsed.display, status)
            try:
                _upgrade(connection, "head")
            except sa.exc.DBAPIError as exc:
                error = _errors.translate(exc, parsed.display)
                if isinstance(error, ConfigurationError) and status.state == "empty":
                    raise SchemaBehindError(
                        f"{parsed.display} has no persist_sql schema and this role may not create it "
                        f"({error}): run `backtest-persist migrate --url {parsed.display}` as the schema owner"
                    ) from exc
                raise error from exc
    except PersistError:
        raise
    except (sa.exc.SQLAlchemyError, CommandError, OSError) as exc:
        raise _errors.translate(exc, parsed.display) from exc


def is_downgrade(current: tuple[str, ...], revision: str) -> bool:
    """Whether going from ``current`` to ``revision`` goes back: ``revision`` is an ancestor of ``current``.

    ``revision`` is ``head``, ``base``, a revision id (or a unique prefix of one) or Alembic's relative
    ``-N``/``+N``.

    Raises:
        CommandError: ``revision`` names no known revision.
    """
    if not current or revision in ("head", "heads") or revision.startswith("+"):
        return False
    if revision == "base" or revision.startswith("-"):
        return True
    target = scripts().get_revision(revision)
    if target is None or target.revision in current:
        return False
    older = {r.revision for r in scripts().iterate_revisions(current, "base")}
    return target.revision in older


@masks_driver_errors
def upgrade(parsed: ParsedUrl, revision: str = "head", *, downgrade: bool = False) -> tuple[SchemaStatus, SchemaStatus]:
    """Bring the schema to ``revision`` under the migration lock; return the status before and after.

    A ``revision`` older than the database's (``base``, ``0001``, ``-1``) is a downgrade: it drops what the
    later revisions created, records included, so it runs only with ``downgrade=True`` and is refused
    otherwise.

    Raises:
        ConfigurationError: a downgrade without ``downgrade=True``.
        SchemaError: an unknown revision. SchemaAheadError: the database is newer than this code.
    """
    try:
        with _migrating(parsed) as connection:
            before = schema_status(connection)
            if before.state == "ahead":
                raise ahead_error(parsed.display, before)
            try:
                backwards = is_downgrade(before.current, revision)
                if backwards and not downgrade:
                    raise ConfigurationError(
                        f"revision {revision!r} is older than the schema of {parsed.display} ({before.describe()}): "
                        "a downgrade drops the tables the later revisions created, with their records; "
                        "confirm with --downgrade (downgrade=True)"
                    )
                if backwards:
                    command.downgrade(alembic_config(connection=connection), revision)
                else:
                    _upgrade(connection, revision)
            except CommandError as exc:
                raise SchemaError(f"cannot migrate {parsed.display} to {revision!r}: {exc}") from exc
            after = schema_status(connection)
    except PersistError:
        raise
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise _errors.translate(exc, parsed.display) from exc
    return before, after


def offline_sql(parsed: ParsedUrl, revision: str = "head") -> str:
    """The SQL script that upgrades an empty database to ``revision`` (Alembic's offline mode).

    ``revision`` may also be ``FROM:TO``. Nothing connects to the database: the URL only names the dialect
    (on MariaDB, write ``mariadb://`` so that the script uses MariaDB's collation).
    """
    buffer = io.StringIO()
    try:
        command.upgrade(alembic_config(url=parsed.sa_url, output=buffer), revision, sql=True)
    except CommandError as exc:
        raise SchemaError(f"cannot write the SQL for {revision!r}: {exc}") from exc
    return buffer.getvalue()
