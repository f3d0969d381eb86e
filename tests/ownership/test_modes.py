"""A backtest never touches live state (CONTRACTS.md 3.7, issue 9.1), on every backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from persist_core import ConfigurationError, setup
from persist_core.domains import DOMAINS

ISOLATED = [name for name, spec in DOMAINS.items() if spec.isolate_modes]
TRIPLE = {"symbol": "BTC/USDT", "strategy_name": "s", "exchange_name": "e"}


def _store(modes: Any, name: str) -> Any:
    if name == "risk":
        return modes.risk(risk_name="r", exchange_name="e")
    return getattr(modes, name)(**TRIPLE)


def _write(store: Any, name: str, value: dict[str, Any] | None) -> None:
    if DOMAINS[name].item is None:
        store.write(value)
    else:
        store.write("sig-1", value)


def _read(store: Any, name: str) -> Any:
    return store.read() if DOMAINS[name].item is None else store.read("sig-1")


@pytest.mark.parametrize("name", ISOLATED)
def test_a_backtest_cannot_wipe_the_live_position(target: tuple[str, dict[str, str]], name: str) -> None:
    url, extra_env = target
    with setup(url, env={**os.environ, **extra_env}) as persist:
        _write(_store(persist.live, name), name, {"id": "live-pos"})
        _write(_store(persist.backtest, name), name, {"id": "backtest-pos"})
        assert _read(_store(persist.backtest, name), name) == {"id": "backtest-pos"}
        _write(_store(persist.backtest, name), name, None)
        assert _read(_store(persist.live, name), name) == {"id": "live-pos"}
    with setup(url, env={**os.environ, **extra_env}) as persist:  # and after a restart
        assert _read(_store(persist.live, name), name) == {"id": "live-pos"}


def test_routes_that_would_share_live_records_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for kwargs, env in [
        ({"url": "file:./dump", "backtest": {"signal": "file:./dump"}}, {}),
        ({"url": "file:./dump", "backtest": {"risk": f"file:{tmp_path}/dump/"}}, {}),  # one folder, two spellings
        ({"live": {"partial": "memory://"}, "backtest": {"partial": "memory://"}}, {}),
        ({}, {"PERSIST_URL": "file:./dump", "PERSIST_BACKTEST_BREAKEVEN_URL": "file:dump"}),
        (
            {
                "url": "postgresql+psycopg://u:pw@127.0.0.1/db",
                "backtest": {"schedule": "postgresql://u:pw@127.0.0.1:5432/db"},
            },
            {},
        ),
    ]:
        with pytest.raises(ConfigurationError, match=r"share_modes=True.*PERSIST_SHARE_MODES=1") as caught:
            setup(env=env, **kwargs)
        assert "pw" not in str(caught.value)
    assert not (tmp_path / "dump").exists()  # refused before anything was opened


def test_share_modes_opts_in_to_one_record(tmp_path: Path) -> None:
    url = f"file:{tmp_path}/dump"
    for kwargs, env in [({"share_modes": True}, {}), ({}, {"PERSIST_SHARE_MODES": "1"})]:
        with setup(url, env=env, **kwargs) as persist:
            persist.live.signal(**TRIPLE).write({"id": "live-pos"})
            persist.backtest.signal(**TRIPLE).write(None)
            assert persist.live.signal(**TRIPLE).read() is None
    with pytest.raises(ConfigurationError, match="PERSIST_SHARE_MODES='maybe' is not a boolean"):
        setup(url, env={"PERSIST_SHARE_MODES": "maybe"})


def test_a_backtest_routed_elsewhere_persists_there(tmp_path: Path) -> None:
    with setup(f"file:{tmp_path}/live", backtest={"signal": f"file:{tmp_path}/backtest"}, env={}) as persist:
        persist.backtest.signal(**TRIPLE).write({"id": "bt"})
        assert persist.live.signal(**TRIPLE).read() is None
    with setup(f"file:{tmp_path}/backtest", env={}) as persist:
        assert persist.live.signal(**TRIPLE).read() == {"id": "bt"}
