"""URLs of the SQL backend: driver choice, the backend's own options, refused forms, masked passwords."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa

from persist_core.errors import BackendUnavailableError, ConfigurationError
from persist_core.registry import create_backend
from persist_sql import SqlBackend, _dialects


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgres://u:p@h/db", "postgresql+psycopg"),
        ("postgresql://u:p@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u:p@h/db", "postgresql+psycopg"),
        ("sqlite:///state.db", "sqlite+pysqlite"),
        ("mysql+pymysql://u:p@h/db", "mysql+pymysql"),
        ("mariadb+pymysql://u:p@h/db", "mariadb+pymysql"),
    ],
)
def test_driver_of_a_url(url: str, driver: str) -> None:
    assert _dialects.parse_url(url).sa_url.drivername == driver


@pytest.mark.parametrize("scheme", ["mysql", "mariadb"])
@pytest.mark.parametrize("installed", [True, False])
def test_bare_mysql_urls_prefer_mysqlclient_when_installed(
    monkeypatch: pytest.MonkeyPatch, scheme: str, installed: bool
) -> None:
    monkeypatch.setattr(_dialects, "_have", lambda module: installed or module != "MySQLdb")
    expected = "mysqldb" if installed else "pymysql"
    assert _dialects.parse_url(f"{scheme}://u:p@h/db").sa_url.drivername == f"{scheme}+{expected}"


def test_backend_options_are_taken_out_of_the_url() -> None:
    parsed = _dialects.parse_url("postgresql://u:secret@h/db?auto_migrate=1&application_name=bot")
    assert parsed.options == {"auto_migrate": "1"}
    assert dict(parsed.sa_url.query) == {"application_name": "bot"}
    assert parsed.display == "postgresql://u:***@h/db?auto_migrate=1&application_name=bot"
    assert SqlBackend("postgresql://u:secret@h/db?auto_migrate=1")._auto_migrate is True
    assert SqlBackend("postgresql://u:secret@h/db?auto_migrate=0")._auto_migrate is False
    assert SqlBackend("postgresql://u:secret@h/db?auto_migrate=1", auto_migrate=False)._auto_migrate is False


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:mem?mode=memory&uri=true", "sqlite+pysqlite://"]
)
def test_in_memory_sqlite_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="in-memory"):
        SqlBackend(url)


@pytest.mark.parametrize("url", ["oracle://u:p@h/db", "mssql+pyodbc://u:p@h/db", "not a url"])
def test_other_databases_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        SqlBackend(url)


def test_a_driver_the_backend_does_not_serve_is_refused() -> None:
    # The postgres extra does not bring pg8000, so its hint would not help (tests/test_install_hints.py).
    with pytest.raises(ConfigurationError, match=r"'pg8000' .* not supported .* postgresql\+psycopg://"):
        SqlBackend("postgresql+pg8000://u:secret@127.0.0.1/db").open()


def test_registry_builds_the_sql_backend_for_every_scheme(tmp_path: object) -> None:
    for url in ("postgres://u:p@h/db", "postgresql://u:p@h/db", "mysql://u:p@h/db", "mariadb://u:p@h/db"):
        assert isinstance(create_backend(url), SqlBackend)
    assert isinstance(create_backend("sqlite:///x.db"), SqlBackend)


def test_unreachable_server_message_masks_the_password() -> None:
    backend = SqlBackend("postgresql://someone:top-secret@127.0.0.1:1/db")
    with pytest.raises(BackendUnavailableError) as info:
        backend.open()
    assert "someone:***@127.0.0.1:1/db" in str(info.value)
    assert "top-secret" not in str(info.value)
    assert "top-secret" not in repr(backend)


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(ConfigurationError):
        SqlBackend("sqlite:///x.db", pool_size=0)


def test_sqlite_creates_the_folder_of_its_file(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path)) / "deep" / "er"
    with SqlBackend(f"sqlite:///{folder / 'state.db'}"):
        pass
    assert (folder / "state.db").is_file()
    engine = sa.create_engine(f"sqlite:///{folder / 'state.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_importing_the_core_does_not_import_sqlalchemy() -> None:
    code = (
        "import sys, persist_core, persist_core.registry, persist_core.persist\n"
        "assert 'sqlalchemy' not in sys.modules and 'persist_sql' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
