"""Alembic environment of persist_sql (run in code by persist_sql._migrate; no alembic.ini needed).

Online, the connection comes in ``config.attributes["connection"]`` already inside the transaction that holds
the migration lock. Offline (``backtest-persist migrate --sql``), ``config.attributes["url"]`` names the dialect.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from persist_sql._migrate import VERSION_TABLE, target_metadata

config = context.config


def run_offline() -> None:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    dialect = sa.create_mock_engine(url, executor=None).dialect
    context.configure(
        url=url,
        target_metadata=target_metadata(dialect),
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # run by the alembic command line with an ini file of its own
        engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=sa.pool.NullPool)
        with engine.connect() as own, own.begin():
            _run(own)
        return
    _run(connection)


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata(connection.dialect),
        version_table=VERSION_TABLE,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
