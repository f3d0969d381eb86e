"""The ownership leases of live processes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

``persist_leases``: one row per lease generation (persist_core.ownership). ``generation`` is the primary key,
so that claiming a generation is an insert that exactly one process wins; ``lease`` holds the lease as JSON
text (holder host, pid and start time, since and expiry in epoch ms); ``updated_at`` is kept by the database.
Same table options as the domain tables of 0001 (InnoDB, utf8mb4 and the NO PAD binary collation on
MariaDB/MySQL, WITHOUT ROWID on SQLite). This file is frozen: later changes to the schema are new revisions.
``if_not_exists`` lets a run that MariaDB cut off half-way (its DDL is not transactional) be completed by
running it again.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _kind() -> str:
    dialect = op.get_context().dialect
    if dialect.name in ("mysql", "mariadb"):
        return "mariadb" if getattr(dialect, "is_mariadb", False) else "mysql"
    return str(dialect.name)


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
        "persist_leases",
        sa.Column("generation", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("lease", sa.Text(), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("CURRENT_TIMESTAMP")
        ),
        sa.PrimaryKeyConstraint("generation", name="pk_persist_leases"),
        if_not_exists=True,
        **_table_options(),
    )


def downgrade() -> None:
    op.drop_table("persist_leases", if_exists=True)
