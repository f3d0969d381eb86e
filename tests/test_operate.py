"""``backtest-persist ls`` and ``show`` (issue 11): what is stored, read through the listing interface."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from persist_core import setup
from persist_core.cli import EXIT_OK, EXIT_USAGE, main
from persist_core.operate import context_records, inventory
from tests.sql import servers

SIGNAL = {"symbol": "BTC/USDT", "strategy_name": "s", "exchange_name": "binance"}


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _fill(url: str) -> None:
    with setup(url, env={}) as persist:
        persist.live.signal(**SIGNAL).write({"side": "long"})
        candles = persist.live.candle(symbol="BTC/USDT", interval="1m", exchange_name="binance")
        bar = {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 3.0}
        candles.write([{"timestamp": ts * 60_000, **bar} for ts in (1, 2, 10)])
        bucket = persist.live.memory(signal_id="sig-1", bucket_name="llm")
        bucket.write("m1", {"v": 1})
        bucket.write("m2", {"v": 2})
        bucket.remove("m1")
        persist.backtest.storage(backtest=True).write([{"id": "t1", "pnl": 1.5}])


@pytest.fixture(params=["file", "sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file:{tmp_path}/dump"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    server = servers.driver_url("postgresql")
    servers.reset(server)
    return server


def test_ls_lists_every_stored_context_with_its_count(url: str) -> None:
    _fill(url)
    rows = {(row.domain, tuple(row.context.values())): row.records for row in inventory(url, env={})}
    assert rows == {
        ("candle", ("BTC/USDT", "1m", "binance")): 3,
        ("memory", ("sig-1", "llm")): 2,  # the removed entry counts: it is stored
        ("signal", tuple(SIGNAL.values())): 1,
        ("storage", (True,)): 1,
    }
    code, out, _ = run("ls", "--url", url, "--json")
    assert code == EXIT_OK
    listed = json.loads(out)
    assert {(r["domain"], r["records"]) for r in listed} == {
        ("candle", 3),
        ("memory", 2),
        ("signal", 1),
        ("storage", 1),
    }
    code, out, _ = run("ls", "--url", url, "--domain", "candle")
    assert code == EXIT_OK and "symbol=BTC/USDT interval=1m exchange_name=binance" in out
    assert "3 records in 1 contexts of 1 domains" in out


def test_show_prints_a_contexts_records_removed_ones_included(url: str) -> None:
    _fill(url)
    records = context_records("memory", ["signal_id=sig-1", "bucket_name=llm"], url, env={})
    assert [(r.key["memory_id"], r.value, r.removed) for r in records] == [
        ("m1", {"v": 1}, True),
        ("m2", {"v": 2}, False),
    ]
    code, out, _ = run("show", "candle", "symbol=BTC/USDT", "interval=1m", "exchange_name=binance", "--url", url)
    assert code == EXIT_OK
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["key"]["timestamp"] for line in lines] == [60_000, 120_000, 600_000]  # numeric order
    code, out, _ = run("show", "storage", "backtest=true", "--url", url, "--mode", "backtest", "--json")
    assert code == EXIT_OK and json.loads(out)[0]["value"] == {"id": "t1", "pnl": 1.5}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "signal", "symbol=BTC/USDT"], "missing: strategy_name, exchange_name"),
        (["show", "signal", "symbol"], "expected field=value"),
        (["show", "storage", "backtest=maybe"], "true or false"),
        (["show", "nosuch"], "unknown domain"),
        (["ls", "--domain", "nosuch"], "unknown domain"),
    ],
)
def test_bad_arguments_are_usage_errors(argv: list[str], message: str, tmp_path: Path) -> None:
    code, _, err = run(*argv, "--url", f"file:{tmp_path}/dump")
    assert code == EXIT_USAGE
    assert message in err


def test_the_url_may_come_from_the_environment_and_its_password_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    server = servers.driver_url("postgresql")
    servers.reset(server)
    _fill(server)
    password = sa.make_url(server).password
    assert password
    monkeypatch.setenv("PERSIST_URL", server)
    code, out, err = run("ls", "--json")
    assert code == EXIT_OK
    assert password not in out + err
    assert all("***" in row["url"] for row in json.loads(out))
