"""The 16 domain tables, generated from :data:`persist_core.domains.DOMAINS`, and the ownership leases.

One table ``<domain>_items`` per domain: one column per key field (context fields, then the item key,
snake_case as in the specs), ``payload`` (the canonical JSON text), ``when_ms``, ``removed`` for the
soft-delete domains, and ``created_at``/``updated_at`` kept by the database. The domain's unique key is the
primary key. Text key columns compare byte-wise (:func:`persist_sql._dialects.key_collation`).

``persist_leases`` keeps the ownership leases (:mod:`persist_core.ownership`): one row per lease
generation, the generation being the primary key, so that a claim is an insert of a new key.

This is the schema that the code expects at Alembic's head; the revisions under ``migrations/`` must build
the same thing, which a test checks with Alembic's autogenerate comparison on every database.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from persist_core.domains import DOMAINS, DomainSpec, FieldType, KeyField
from persist_core.validation import MAX_KEY_BYTES
from persist_sql import _dialects
from persist_sql._dialects import Kind

__all__ = ["LEASE_TABLE", "NAMING", "column_type", "lease_table_for", "metadata_for", "table_for"]

#: Constraint names, so that every database names them alike.
NAMING = {"pk": "pk_%(table_name)s"}
#: The table of ownership leases (revision 0002).
LEASE_TABLE = "persist_leases"


def column_type(kind: Kind, field: KeyField) -> sa.types.TypeEngine[Any]:
    """The column type of one key field.

    Strings are ``VARCHAR(80)``: a key is at most 80 bytes of UTF-8, hence at most 80 characters.
    """
    if field.type is FieldType.BOOL:
        return sa.Boolean()
    if field.type is FieldType.INT:
        return sa.BigInteger()
    return sa.String(MAX_KEY_BYTES, collation=_dialects.key_collation(kind))


def _table(metadata: sa.MetaData, kind: Kind, spec: DomainSpec) -> sa.Table:
    columns: list[sa.Column[Any]] = [
        sa.Column(field.name, column_type(kind, field), primary_key=True, autoincrement=False)
        for field in spec.key_fields
    ]
    columns.append(sa.Column("payload", _dialects.payload_type(kind), nullable=False))
    columns.append(sa.Column("when_ms", sa.BigInteger(), nullable=True))
    if spec.soft_delete:
        columns.append(sa.Column("removed", sa.Boolean(), nullable=False, server_default=sa.false()))
    now = sa.text("CURRENT_TIMESTAMP")
    columns.append(sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now))
    columns.append(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now))
    return sa.Table(spec.table_name, metadata, *columns, **_dialects.table_options(kind))


def _lease_table(metadata: sa.MetaData, kind: Kind) -> sa.Table:
    """``generation`` (the primary key: a claim inserts a new one), ``lease`` (``Lease.to_json()``), ``updated_at``."""
    now = sa.text("CURRENT_TIMESTAMP")
    return sa.Table(
        LEASE_TABLE,
        metadata,
        sa.Column("generation", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("lease", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        **_dialects.table_options(kind),
    )


@functools.cache
def metadata_for(kind: Kind) -> sa.MetaData:
    """All tables (the 16 domains', then the leases') as the given database family spells them (built once)."""
    metadata = sa.MetaData(naming_convention=NAMING)
    for spec in DOMAINS.values():
        _table(metadata, kind, spec)
    _lease_table(metadata, kind)
    return metadata


def table_for(kind: Kind, spec: DomainSpec) -> sa.Table:
    """The table of ``spec``."""
    return metadata_for(kind).tables[spec.table_name]


def lease_table_for(kind: Kind) -> sa.Table:
    """The table of ownership leases."""
    return metadata_for(kind).tables[LEASE_TABLE]
