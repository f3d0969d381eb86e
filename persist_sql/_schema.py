"""The 16 tables, generated from :data:`persist_core.domains.DOMAINS`.

One table ``<domain>_items`` per domain: one column per key field (context fields, then the item key,
snake_case as in the specs), ``payload`` (the canonical JSON text), ``when_ms``, ``removed`` for the
soft-delete domains, and ``created_at``/``updated_at`` kept by the database. The domain's unique key is the
primary key. Text key columns compare byte-wise (:func:`persist_sql._dialects.key_collation`).

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

__all__ = ["NAMING", "column_type", "metadata_for", "table_for"]

#: Constraint names, so that every database names them alike.
NAMING = {"pk": "pk_%(table_name)s"}


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


@functools.cache
def metadata_for(kind: Kind) -> sa.MetaData:
    """All 16 tables as the given database family spells them (built once per family)."""
    metadata = sa.MetaData(naming_convention=NAMING)
    for spec in DOMAINS.values():
        _table(metadata, kind, spec)
    return metadata


def table_for(kind: Kind, spec: DomainSpec) -> sa.Table:
    """The table of ``spec``."""
    return metadata_for(kind).tables[spec.table_name]
