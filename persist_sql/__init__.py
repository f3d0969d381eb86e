"""The SQL backend of backtest-persist: PostgreSQL (psycopg 3), MariaDB/MySQL and SQLite on SQLAlchemy 2 Core.

Install with ``pip install "backtest-persist[postgres]"`` (or ``[mysql]``, or ``[sql]`` for SQLite alone) and
name a database by URL; docs/sql.md describes the schema, the migrations and the operations.
"""

from persist_sql._async_backend import AsyncSqlBackend
from persist_sql._backend import SqlBackend

__all__ = ["AsyncSqlBackend", "SqlBackend"]
