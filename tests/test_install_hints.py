"""Install hints and driver spellings (issue 12.3): every ``scheme+driver`` gets a correct hint or a clear refusal."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from persist_core import ConfigurationError, setup
from persist_core.cli import EXIT_USAGE, main
from persist_core.registry import SQL_DRIVERS, check_driver

SECRET = "s3cret-Pw"
ROOT = Path(__file__).resolve().parents[1]

#: Spellings that SQLAlchemy knows but the SQL backend does not serve: refused before anything is imported.
UNSUPPORTED = [
    "postgresql+asyncpg",
    "postgres+asyncpg",
    "postgresql+psycopg_async",
    "postgresql+psycopg2",
    "postgresql+pg8000",
    "sqlite+aiosqlite",
    "mysql+asyncmy",
    "mysql+aiomysql",
    "mysql+mysqlconnector",
    "mariadb+mariadbconnector",
    "MySQL+AsyncMy",
]

#: (scheme+driver, the module made unimportable, the install command the message must name).
MISSING = [
    ("postgresql", "psycopg", 'pip install "backtest-persist[postgres]"'),
    ("postgresql+psycopg", "psycopg", 'pip install "backtest-persist[postgres]"'),
    ("postgres", "psycopg", 'pip install "backtest-persist[postgres]"'),
    ("mysql+pymysql", "pymysql", 'pip install "backtest-persist[mysql]"'),
    ("mariadb+pymysql", "pymysql", 'pip install "backtest-persist[mysql]"'),
    ("mysql+mysqldb", "MySQLdb", "pip install mysqlclient"),
    ("sqlite", "persist_sql", 'pip install "backtest-persist[sql]"'),
    ("sqlite+pysqlite", "persist_sql", 'pip install "backtest-persist[sql]"'),
    ("postgresql+psycopg", "persist_sql", 'pip install "backtest-persist[postgres]"'),
]


def url_of(spelling: str, port: int) -> str:
    if spelling.lower().startswith("sqlite"):
        return f"{spelling}:////tmp/never-created-{port}/state.db"
    return f"{spelling}://u:{SECRET}@127.0.0.1:{port}/db"


@pytest.mark.parametrize("spelling", UNSUPPORTED)
def test_an_unsupported_driver_is_refused_naming_the_served_ones(spelling: str) -> None:
    url = url_of(spelling, 1)
    scheme = spelling.split("+")[0].lower()
    with pytest.raises(ConfigurationError, match="is not supported by the SQL backend") as caught:
        setup(url, env={})
    message = str(caught.value)
    assert SECRET not in message
    assert f"{scheme}://" in message
    assert all(f"{scheme}+{driver}://" in message for driver in SQL_DRIVERS[scheme] if driver)
    assert "[mysql]" not in message or scheme in ("mysql", "mariadb")


@pytest.mark.parametrize("spelling", UNSUPPORTED)
@pytest.mark.parametrize("command", ["check", "migrate"])
def test_the_cli_refuses_an_unsupported_driver_in_one_line(spelling: str, command: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main([command, "--url", url_of(spelling, 1)], out=out, err=err)
    assert code == EXIT_USAGE
    assert err.getvalue().count("\n") == 1
    assert "is not supported by the SQL backend" in err.getvalue()
    assert SECRET not in err.getvalue() + out.getvalue()


@pytest.mark.parametrize(("spelling", "module", "command"), MISSING)
def test_a_missing_driver_names_the_command_that_installs_it(
    spelling: str, module: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == module or m.startswith(f"{module}.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # what an install without it looks like
    if spelling in ("postgresql", "postgres") or spelling.startswith("mysql"):
        monkeypatch.setitem(sys.modules, "MySQLdb", None)
    url = url_of(spelling, 2 + MISSING.index((spelling, module, command)))
    with pytest.raises(ConfigurationError, match="not installed") as caught:
        setup(url, env={})
    assert command in str(caught.value)
    assert SECRET not in str(caught.value)
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", "--url", url], out=out, err=err) == EXIT_USAGE
    assert command in err.getvalue()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@127.0.0.1/db",
        "postgresql+psycopg://u:p@127.0.0.1/db",
        "POSTGRES+PSYCOPG://u:p@127.0.0.1/db",
        "mysql://u:p@127.0.0.1/db",
        "mariadb+pymysql://u:p@127.0.0.1/db",
        "mysql+mysqldb://u:p@127.0.0.1/db",
        "sqlite:///state.db",
        "sqlite+pysqlite:///state.db",
        "mongodb+srv://u:p@cluster.example/db",  # "+srv" is pymongo's DNS seed list, not a driver
        "file:./dump",
        "memory://",
    ],
)
def test_served_spellings_pass_the_driver_check(url: str) -> None:
    check_driver(url)


def test_check_of_an_asyncpg_url_prints_no_traceback() -> None:
    program = "import sys; from persist_core.cli import main; sys.exit(main())"
    url = f"postgresql+asyncpg://u:{SECRET}@127.0.0.1:1/db"
    result = subprocess.run(
        [sys.executable, "-c", program, "check", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == EXIT_USAGE
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("backtest-persist: the driver 'asyncpg'")
    assert result.stderr.count("\n") == 1
    assert SECRET not in result.stdout + result.stderr
