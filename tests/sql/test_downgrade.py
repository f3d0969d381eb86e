"""``backtest-persist migrate --revision <older>``: a downgrade, refused unless confirmed (issue 12.3)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from persist_core.backend import Record
from persist_core.cli import EXIT_OK, EXIT_USAGE, main
from persist_core.domains import DOMAINS
from persist_sql import SqlBackend, _dialects, _migrate
from persist_sql._schema import LEASE_TABLE
from tests.sql import servers

TABLES = {spec.table_name for spec in DOMAINS.values()}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with servers.own_storage(request.param, tmp_path) as own:
        yield own


def migrate(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["migrate", *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def tables_and_revision(url: str) -> tuple[set[str], tuple[str, ...]]:
    engine = sa.create_engine(_dialects.parse_url(url).sa_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            names = set(sa.inspect(connection).get_table_names())
            return names - {_migrate.VERSION_TABLE}, _migrate.schema_status(connection).current
    finally:
        engine.dispose()


def test_downgrade_needs_confirming_then_goes_back_and_up_again(url: str) -> None:
    domain = DOMAINS["signal"]
    with SqlBackend(url) as backend:  # created at head, with a record in it
        backend.put(domain, ("BTC", "s", "e"), Record('{"id":"sig-1"}', when=1))
    head = _migrate.head()
    assert tables_and_revision(url) == (TABLES | {LEASE_TABLE}, (head,))

    code, out, err = migrate("--url", url, "--revision", "base")
    assert code == EXIT_USAGE
    assert "older than the schema" in err
    assert "--downgrade" in err
    assert out == ""
    assert tables_and_revision(url) == (TABLES | {LEASE_TABLE}, (head,))  # nothing changed

    code, out, _ = migrate("--url", url, "--revision", "0001", "--downgrade")
    assert code == EXIT_OK
    assert f"downgraded from {head} to 0001" in out
    assert tables_and_revision(url) == (TABLES, ("0001",))

    code, out, _ = migrate("--url", url, "--revision", "base", "--downgrade")
    assert code == EXIT_OK
    assert "downgraded from 0001 to base" in out
    assert tables_and_revision(url) == (set(), ())

    code, out, _ = migrate("--url", url, "--revision", "base", "--downgrade")
    assert (code, "nothing to do" in out) == (EXIT_OK, True)

    code, out, _ = migrate("--url", url)
    assert code == EXIT_OK
    assert f"migrated from empty to {head}" in out
    assert tables_and_revision(url) == (TABLES | {LEASE_TABLE}, (head,))
    with SqlBackend(url) as backend:
        assert backend.get(domain, ("BTC", "s", "e")) is None  # the downgrade dropped the records


def test_an_unknown_revision_is_a_schema_error(url: str) -> None:
    with SqlBackend(url):
        pass
    code, _, err = migrate("--url", url, "--revision", "9999", "--downgrade")
    assert code == 1
    assert "SchemaError" in err
    assert "9999" in err
