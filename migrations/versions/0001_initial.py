"""The 16 domain tables of backtest-persist.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

One table per domain: the key fields (the primary key), payload, when_ms, removed (soft-delete domains),
created_at and updated_at. Text keys compare byte-wise: COLLATE "C" on PostgreSQL, a NO PAD binary
collation on MariaDB/MySQL, SQLite's default BINARY. The payload is json on PostgreSQL (not jsonb, which
rewrites floats such as 1e16 as integers), JSON on MariaDB/MySQL and TEXT on SQLite. This file is frozen: later changes to the
schema are new revisions, never edits here. ``if_not_exists`` lets a run that MariaDB cut off half-way
(its DDL is not transactional) be completed by running it again.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _kind() -> str:
    dialect = op.get_context().dialect
    if dialect.name in ("mysql", "mariadb"):
        return "mariadb" if getattr(dialect, "is_mariadb", False) else "mysql"
    return str(dialect.name)


def _key() -> sa.String:
    collation = {"postgresql": "C", "mariadb": "utf8mb4_nopad_bin", "mysql": "utf8mb4_0900_bin"}.get(_kind())
    return sa.String(80, collation=collation)


def _payload() -> Any:
    kind = _kind()
    if kind == "postgresql":
        return postgresql.JSON()
    if kind in ("mariadb", "mysql"):
        return mysql.JSON()
    return sa.Text()  # a column declared JSON would have NUMERIC affinity in SQLite: "3" would become 3


def _record_columns(*, soft_delete: bool) -> list[sa.Column[Any]]:
    now = sa.text("CURRENT_TIMESTAMP")
    columns: list[sa.Column[Any]] = [
        sa.Column("payload", _payload(), nullable=False),
        sa.Column("when_ms", sa.BigInteger(), nullable=True),
    ]
    if soft_delete:
        columns.append(sa.Column("removed", sa.Boolean(), nullable=False, server_default=sa.false()))
    columns.append(sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now))
    columns.append(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now))
    return columns


def _table_options() -> dict[str, Any]:
    kind = _kind()
    if kind in ("mariadb", "mysql"):
        collation = "utf8mb4_nopad_bin" if kind == "mariadb" else "utf8mb4_0900_bin"
        options = {"engine": "InnoDB", "charset": "utf8mb4", "collate": collation}
        # SQLAlchemy's "mariadb" dialect (mariadb:// URLs) reads only mariadb_* options, "mysql" only mysql_*.
        return {f"{prefix}_{name}": value for prefix in ("mysql", "mariadb") for name, value in options.items()}
    if kind == "sqlite":
        return {"sqlite_with_rowid": False}
    return {}


def upgrade() -> None:
    op.create_table(
        "signal_items",
        sa.Column("symbol", _key(), nullable=False),
        sa.Column("strategy_name", _key(), nullable=False),
        sa.Column("exchange_name", _key(), nullable=False),
        *_record_columns(soft_delete=False),
        sa.PrimaryKeyConstraint("symbol", "strategy_name", "exchange_name", name="pk_signal_items"),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "schedule_items",
        sa.Column("symbol", _key(), nullable=False),
        sa.Column("strategy_name", _key(), nullable=False),
        sa.Column("exchange_name", _key(), nullable=False),
        *_record_columns(soft_delete=False),
        sa.PrimaryKeyConstraint("symbol", "strategy_name", "exchange_name", name="pk_schedule_items"),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "strategy_items",
        sa.Column("symbol", _key(), nullable=False),
        sa.Column("strategy_name", _key(), nullable=False),
        sa.Column("exchange_name", _key(), nullable=False),
        *_record_columns(soft_delete=False),
        sa.PrimaryKeyConstraint("symbol", "strategy_name", "exchange_name", name="pk_strategy_items"),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "risk_items",
        sa.Column("risk_name", _key(), nullable=False),
        sa.Column("exchange_name", _key(), nullable=False),
        *_record_columns(soft_delete=False),
        sa.PrimaryKeyConstraint("risk_name", "exchange_name", name="pk_risk_items"),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "partial_items",
        sa.Column("symbol", _key(), nullable=False),
        sa.Column("strategy_name", _key(), nullable=False),
        sa.Column("exchange_name", _key(), nullable=False),
        sa.Column("signal_id", _key(), nullable=False),
        *_record_columns(soft_delete=False),
        sa.PrimaryKeyConstraint("symbol", "strategy_name", "exchange_name", "signal_id", name="pk_partial_items"),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "breakeven_items",
        sa.Column("symbol", _key(), nullable=False),
        sa.Column("strategy_name", _key(), nullable=False),
        sa.Column("exchange_name", _key(), nullable=False),
        sa.Column("signal_id", _key(), nullable=False),
        *_record_columns(soft_delete=False),
        sa.PrimaryKeyConstraint("symbol", "strategy_name", "exchange_name", "signal_id", name="pk_breakeven_items"),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "candle_items",
        sa.Column("symbol", _key(), nullable=False),
        sa.Column("interval", _key(), nullable=False),
        sa.Column("exchange_name", _key(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        *_record_columns(soft_delete=False),
        sa.PrimaryKeyConstraint("symbol", "interval", "exchange_name", "timestamp", name="pk_candle_items"),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "storage_items",
        sa.Column("backtest", sa.Boolean(), nullable=False),
        sa.Column("signal_id", _key(), nullable=False),
        *_record_columns(soft_delete=False),
        sa.PrimaryKeyConstraint("backtest", "signal_id", name="pk_storage_items"),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "notification_items",
        sa.Column("backtest", sa.Boolean(), nullable=False),
        sa.Column("notification_id", _key(), nullable=False),
        *_record_columns(soft_delete=False),
        sa.PrimaryKeyConstraint("backtest", "notification_id", name="pk_notification_items"),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "log_items",
        sa.Column("entry_id", _key(), nullable=False),
        *_record_columns(soft_delete=False),
        sa.PrimaryKeyConstraint("entry_id", name="pk_log_items"),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "measure_items",
        sa.Column("bucket", _key(), nullable=False),
        sa.Column("entry_key", _key(), nullable=False),
        *_record_columns(soft_delete=True),
        sa.PrimaryKeyConstraint("bucket", "entry_key", name="pk_measure_items"),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "interval_items",
        sa.Column("bucket", _key(), nullable=False),
        sa.Column("entry_key", _key(), nullable=False),
        *_record_columns(soft_delete=True),
        sa.PrimaryKeyConstraint("bucket", "entry_key", name="pk_interval_items"),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "memory_items",
        sa.Column("signal_id", _key(), nullable=False),
        sa.Column("bucket_name", _key(), nullable=False),
        sa.Column("memory_id", _key(), nullable=False),
        *_record_columns(soft_delete=True),
        sa.PrimaryKeyConstraint("signal_id", "bucket_name", "memory_id", name="pk_memory_items"),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "recent_items",
        sa.Column("symbol", _key(), nullable=False),
        sa.Column("strategy_name", _key(), nullable=False),
        sa.Column("exchange_name", _key(), nullable=False),
        sa.Column("frame_name", _key(), nullable=False),
        sa.Column("backtest", sa.Boolean(), nullable=False),
        *_record_columns(soft_delete=False),
        sa.PrimaryKeyConstraint(
            "symbol", "strategy_name", "exchange_name", "frame_name", "backtest", name="pk_recent_items"
        ),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "state_items",
        sa.Column("signal_id", _key(), nullable=False),
        sa.Column("bucket_name", _key(), nullable=False),
        *_record_columns(soft_delete=False),
        sa.PrimaryKeyConstraint("signal_id", "bucket_name", name="pk_state_items"),
        if_not_exists=True,
        **_table_options(),
    )
    op.create_table(
        "session_items",
        sa.Column("strategy_name", _key(), nullable=False),
        sa.Column("exchange_name", _key(), nullable=False),
        sa.Column("frame_name", _key(), nullable=False),
        sa.Column("symbol", _key(), nullable=False),
        sa.Column("backtest", sa.Boolean(), nullable=False),
        *_record_columns(soft_delete=False),
        sa.PrimaryKeyConstraint(
            "strategy_name", "exchange_name", "frame_name", "symbol", "backtest", name="pk_session_items"
        ),
        if_not_exists=True,
        **_table_options(),
    )


def downgrade() -> None:
    op.drop_table("session_items", if_exists=True)
    op.drop_table("state_items", if_exists=True)
    op.drop_table("recent_items", if_exists=True)
    op.drop_table("memory_items", if_exists=True)
    op.drop_table("interval_items", if_exists=True)
    op.drop_table("measure_items", if_exists=True)
    op.drop_table("log_items", if_exists=True)
    op.drop_table("notification_items", if_exists=True)
    op.drop_table("storage_items", if_exists=True)
    op.drop_table("candle_items", if_exists=True)
    op.drop_table("breakeven_items", if_exists=True)
    op.drop_table("partial_items", if_exists=True)
    op.drop_table("risk_items", if_exists=True)
    op.drop_table("strategy_items", if_exists=True)
    op.drop_table("schedule_items", if_exists=True)
    op.drop_table("signal_items", if_exists=True)
