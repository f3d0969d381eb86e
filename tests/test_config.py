"""setup() and the environment (CONTRACTS.md 7): precedence, per-mode routes, clear configuration errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from persist_core import ConfigurationError, InvalidKeyError, get_persist, setup
from persist_core.backends.file import FileBackend
from persist_core.backends.memory import MemoryBackend
from persist_core.config import BACKTEST_ISOLATED_URL, resolve_redis_url, resolve_routes
from persist_core.domains import DOMAINS
from persist_core.urls import check_credentials, mask_url

ISOLATED = {name for name, spec in DOMAINS.items() if spec.isolate_modes}


def test_default_is_the_file_backend_under_dump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with setup(env={}) as persist:
        backend = persist.backend("live", "signal")
        assert isinstance(backend, FileBackend)
        assert backend.root == tmp_path / "dump"
        routes = {(mode, name): url for mode, name, url in persist.routes()}
        assert {url for (mode, name), url in routes.items() if mode == "live"} == {"file:./dump"}
        # A backtest keeps the six mode-free position domains to itself (CONTRACTS.md 3.7).
        assert routes[("backtest", "signal")] == BACKTEST_ISOLATED_URL
        assert routes[("backtest", "candle")] == "file:./dump"
        persist.live.signal(symbol="BTC/USDT", strategy_name="s", exchange_name="x").write({"id": "a"})
    assert (tmp_path / "dump" / "signal").is_dir()


def test_precedence_setup_then_specific_env_then_default() -> None:
    env = {
        "PERSIST_URL": "memory://env-all",
        "PERSIST_CANDLE_URL": "memory://env-candle",
        "PERSIST_LIVE_CANDLE_URL": "memory://env-live-candle",
    }
    routes = resolve_routes(env=env)
    assert routes[("live", "candle")] == "memory://env-live-candle"
    assert routes[("backtest", "candle")] == "memory://env-candle"
    assert routes[("live", "signal")] == "memory://env-all"
    routes = resolve_routes(domains={"candle": "memory://arg-candle"}, env=env)
    assert routes[("live", "candle")] == "memory://arg-candle"
    assert routes[("live", "signal")] == "memory://env-all"
    routes = resolve_routes(url="memory://arg", env=env)
    assert {url for (mode, name), url in routes.items() if not (mode == "backtest" and name in ISOLATED)} == {
        "memory://arg"
    }
    routes = resolve_routes(url="memory://arg", modes={"backtest": {"storage": "memory://bt"}}, env=env)
    assert routes[("backtest", "storage")] == "memory://bt"
    assert routes[("live", "storage")] == "memory://arg"
    assert set(resolve_routes(env={}).values()) == {"file:./dump", BACKTEST_ISOLATED_URL}
    assert set(resolve_routes(env={}, share_modes=True).values()) == {"file:./dump"}


def test_upstream_environment_names() -> None:
    routes = resolve_routes(env={"CC_POSTGRES_CONNECTION_STRING": "postgres://u:p@h/db"})
    assert routes[("live", "signal")] == "postgresql+psycopg://u:p@h/db"
    routes = resolve_routes(env={"CC_MONGO_CONNECTION_STRING": "mongodb://h:27017/bk"})
    assert routes[("backtest", "log")] == "mongodb://h:27017/bk"
    env = {"CC_REDIS_HOST": "127.0.0.1", "CC_REDIS_PORT": "6380", "CC_REDIS_USER": "u", "CC_REDIS_PASSWORD": "p@ss"}
    assert resolve_redis_url(None, env) == "redis://u:p%40ss@127.0.0.1:6380/0"
    assert resolve_redis_url(None, {"PERSIST_REDIS_URL": "redis://x:1/2", **env}) == "redis://x:1/2"
    assert resolve_redis_url("redis://arg:1/0", env) == "redis://arg:1/0"


def test_per_mode_and_domain_routes_reach_different_backends(tmp_path: Path) -> None:
    with setup(
        f"file:{tmp_path}/all",
        live={"state": "memory://live-state"},
        backtest={"storage": "memory://bt-storage"},
        domains={"candle": f"file:{tmp_path}/candles"},
        env={},
    ) as persist:
        assert isinstance(persist.backend("live", "state"), MemoryBackend)
        assert isinstance(persist.backend("backtest", "state"), FileBackend)
        assert isinstance(persist.backend("backtest", "storage"), MemoryBackend)
        assert persist.backend("live", "state") is not persist.backend("backtest", "storage")
        assert persist.backend("live", "candle") is persist.backend("backtest", "candle")
        persist.backtest.storage(backtest=True).write([{"id": "s1"}])
        assert persist.live.storage(backtest=True).read() == []  # live storage is the file backend


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"domains": {"signals": "memory://"}}, "unknown domain 'signals'"),
        ({"live": {"candle": ""}}, "non-empty URL"),
        ({"url": "ftp://host/x"}, "unknown backend URL scheme 'ftp'"),
        ({"url": "not a url"}, "no scheme"),
        ({"env": {"PERSIST_CANDLES_URL": "memory://"}}, "PERSIST_CANDLES_URL names no mode/domain"),
        ({"env": {"PERSIST_PAPER_CANDLE_URL": "memory://"}}, "PERSIST_PAPER_CANDLE_URL names no mode/domain"),
        ({"url": "memory://", "max_value_bytes": 0}, "max_value_bytes"),
        ({"url": "file:./x?durability=sometimes"}, "durability"),
    ],
)
def test_configuration_errors_are_clear(kwargs: dict[str, object], message: str) -> None:
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigurationError, match=message):
        setup(**kwargs)  # type: ignore[arg-type]


def test_test_server_variables_are_not_routes() -> None:
    """``scripts/services.sh env`` exports PERSIST_TEST_*_URL for the suite; setup() must not trip on them."""
    env = {"PERSIST_TEST_POSTGRES_URL": "postgresql+psycopg://u:pw@127.0.0.1/x", "PERSIST_URL": "memory://"}
    with setup(env=env) as persist:
        assert {url for _, _, url in persist.routes()} == {"memory://", BACKTEST_ISOLATED_URL}
    with pytest.raises(ConfigurationError, match="PERSIST_TESTS_URL names no mode/domain"):
        setup(env={"PERSIST_TESTS_URL": "memory://"})


def test_unknown_mode_and_bad_context() -> None:
    with setup("memory://", env={}) as persist:
        with pytest.raises(ConfigurationError, match="unknown mode 'paper'"):
            persist.mode("paper")
        with pytest.raises(InvalidKeyError, match="missing exchange_name"):
            persist.live.store("signal", symbol="a", strategy_name="b")
        with pytest.raises(InvalidKeyError, match="unexpected colour"):
            persist.live.store("risk", risk_name="a", exchange_name="b", colour="red")


def test_password_is_masked() -> None:
    assert mask_url("postgresql+psycopg://user:s3cret@host:5432/db") == "postgresql+psycopg://user:***@host:5432/db"
    assert mask_url("mongodb://u:p%40ss@h/db?authSource=admin") == "mongodb://u:***@h/db?authSource=admin"
    assert mask_url("redis://:only-password@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url("mysql://h/db?password=s3cret&x=1") == "mysql://h/db?password=***&x=1"
    # Raw (not percent-encoded) special characters in a password must not end the masking early.
    assert (
        mask_url("postgresql+psycopg://bot:p@ss/w0rd#1?@127.0.0.1/bot") == "postgresql+psycopg://bot:***@127.0.0.1/bot"
    )
    assert mask_url("mongodb://u:a#b?c@h/db") == "mongodb://u:***@h/db"
    assert mask_url("mysql://h/db?password=s3#cret") == "mysql://h/db?password=***"
    text = "cannot reach 'redis://:pw/1@h:6379/0' (refused); also mongodb://u:x@y@h/db tried"
    assert mask_url(text) == "cannot reach 'redis://:***@h:6379/0' (refused); also mongodb://u:***@h/db tried"
    with pytest.raises(ConfigurationError) as info:
        setup("nosuch://user:s3cret@host/db", env={})
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://bot:wr/ng@pw@127.0.0.1:5432/bot",
        "mysql+pymysql://bot:p@ss@127.0.0.1/bot",
        "mongodb://bot:a/b@127.0.0.1:27017/bot",
    ],
)
def test_credentials_with_raw_at_or_slash_are_refused_without_showing_them(url: str) -> None:
    """Else the URL splits at the wrong '@' and a driver's "cannot resolve host" error quotes the password."""
    with pytest.raises(ConfigurationError, match="percent-encode") as info:
        setup(url, env={})
    message = str(info.value)
    for fragment in ("wr/ng", "ng@pw", "p@ss", "a/b"):
        assert fragment not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://bot:p%40ss%2Fw@127.0.0.1:5432/bot",  # percent-encoded: fine
        "sqlite:////tmp/bot@2/state.db",  # no authority: a path may hold '@'
        "mongodb://127.0.0.1:27017/bot?appName=a@b",  # after the '?': not credentials
        "redis://:p?w@127.0.0.1:6379/0",
    ],
)
def test_well_formed_urls_pass_the_credentials_check(url: str) -> None:
    check_credentials(url)


def test_get_persist_returns_the_last_setup(tmp_path: Path) -> None:
    first = setup("memory://one", env={})
    assert get_persist() is first
    second = setup("memory://two", env={})
    assert get_persist() is second
    second.close()


def test_setup_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(os.environ, "PERSIST_URL", "memory://from-environ")
    with setup() as persist:
        assert isinstance(persist.backend("live", "log"), MemoryBackend)


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "persist_sql", None)  # what an install without the extra looks like
    monkeypatch.setitem(sys.modules, "persist_mongo", None)
    with pytest.raises(ConfigurationError, match=r'pip install "backtest-persist\[postgres\]"'):
        setup("postgresql+psycopg://u:pw@127.0.0.1/db", env={})
    with pytest.raises(ConfigurationError, match=r'pip install "backtest-persist\[mongo\]"'):
        setup(domains={"candle": "mongodb://127.0.0.1/db"}, env={})


def test_core_imports_no_driver() -> None:
    import subprocess
    import sys

    code = (
        "import sys, persist_core, persist_core.backends.file, persist_core.backends.memory;"
        "bad = [m for m in ('sqlalchemy', 'psycopg', 'pymysql', 'pymongo', 'redis', 'alembic', 'hypothesis', 'pytest')"
        " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
