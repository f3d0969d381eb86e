"""A user's correct bot on both faces: ``tests/test_typing.py`` checks that ``mypy --strict`` passes it clean.

It also pins the read type of every domain with ``assert_type``. Not a test module and never run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, assert_type

from persist_core import AsyncPersist, CandleInterval, JsonObject, JsonValue, Persist, asetup, setup
from persist_mongo import MongoBackend
from persist_sql import SqlBackend

TRADE = {"symbol": "BTC/USDT", "strategy_name": "trend", "exchange_name": "binance"}
WHEN = datetime(2024, 1, 1, tzinfo=UTC)


def sync_face(persist: Persist) -> None:
    live = persist.live
    signal = live.signal(symbol="BTC/USDT", strategy_name="trend", exchange_name="binance")
    # A user's own precisely typed values are accepted (Mapping and lists are read covariantly).
    prices: dict[str, float] = {"priceOpen": 42000.0, "priceTakeProfit": 43000.0}
    signal.write(prices, when=WHEN)
    signal.write({"id": "sig-1", "position": "long", "priceOpen": 42000.0}, when=1_704_067_200_000)
    signal.write(None)
    row = signal.read(as_of=WHEN)
    assert_type(row, JsonObject | None)
    if row is not None and isinstance(row["priceOpen"], float):
        print(row["priceOpen"] * 2)
    loose: dict[str, Any] | None = signal.read()  # the escape hatch: annotate the variable
    print(loose)
    assert_type(live.schedule(**TRADE).read(), JsonObject | None)
    assert_type(live.strategy(**TRADE).read(), JsonObject | None)
    risk = live.risk(risk_name="main", exchange_name="binance")
    risk.write({"BTC/USDT": {"size": 1}})
    assert_type(risk.read(), JsonObject)
    levels: list[int] = [10, 20]
    live.partial(**TRADE).write("sig-1", {"profitLevels": levels}, when=WHEN)
    assert_type(live.partial(**TRADE).read("sig-1", as_of=0), JsonObject)
    assert_type(live.breakeven(**TRADE).read("sig-1"), JsonObject)
    interval: CandleInterval = "15m"
    candles = live.candle(symbol="BTC/USDT", interval=interval, exchange_name="binance")
    batch: list[dict[str, float]] = [{"timestamp": 0, "close": 1.5}]
    stored: int = candles.write(batch)
    print(stored)
    assert_type(candles.read(1, 0), list[JsonObject] | None)
    storage = live.storage(backtest=False)
    storage.write(({"id": "sig-1", "status": "opened"},))  # a batch may be any sequence
    assert_type(storage.read(), list[JsonObject])
    assert_type(live.notification(backtest=True).read(), list[JsonObject])
    assert_type(live.log().read(), list[JsonObject])
    measure = live.measure(bucket="llm")
    measure.write("k", [1, "two", None, {"three": 3.0}], when=WHEN)
    assert_type(measure.read("k"), JsonValue)
    assert_type(measure.has("k"), bool)
    assert_type(measure.keys(as_of=WHEN), list[str])
    assert_type(live.interval(bucket="w").read("k"), JsonValue)
    memory = live.memory(signal_id="sig-1", bucket_name="b")
    for key, value in memory.entries():
        assert_type(key, str)
        assert_type(value, JsonValue)
    context: Mapping[str, JsonValue] = {"step": 3}
    state = live.state(signal_id="sig-1", bucket_name="b")
    state.write(context)
    state.write("a string is a JSON value too")
    assert_type(state.read(), JsonValue)
    recent = persist.backtest.recent(
        symbol="BTC/USDT", strategy_name="trend", exchange_name="binance", frame_name="", backtest=True
    )
    assert_type(recent.read(), JsonObject | None)
    session = live.session(strategy_name="trend", exchange_name="binance", frame_name="", symbol="X", backtest=False)
    assert_type(session.read(), JsonValue)
    # The dynamic accessor is precise for a literal domain name.
    assert_type(live.store("signal", **TRADE).read(), JsonObject | None)
    assert_type(persist.mode("backtest").store("memory", signal_id="s", bucket_name="b").read("m"), JsonValue)


async def async_face(persist: AsyncPersist) -> None:
    live = persist.live
    signal = live.signal(symbol="BTC/USDT", strategy_name="trend", exchange_name="binance")
    await signal.write({"id": "sig-1"}, when=WHEN)
    assert_type(await signal.read(as_of=1), JsonObject | None)
    assert_type(await live.risk(risk_name="main", exchange_name="binance").read(), JsonObject)
    assert_type(await live.partial(**TRADE).read("sig-1"), JsonObject)
    assert_type(
        await live.candle(symbol="X", interval="1d", exchange_name="binance").read(2, 0), list[JsonObject] | None
    )
    assert_type(await live.storage(backtest=True).read(), list[JsonObject])
    assert_type(await live.measure(bucket="llm").read("k"), JsonValue)
    assert_type(await live.state(signal_id="s", bucket_name="b").read(), JsonValue)
    async for key, value in live.memory(signal_id="s", bucket_name="b").entries(as_of=WHEN):
        assert_type(key, str)
        assert_type(value, JsonValue)
    await persist.close()


async def main() -> None:
    with setup("memory://") as persist:
        sync_face(persist)
    async with await asetup("memory://") as apersist:
        await async_face(apersist)
    print(SqlBackend("sqlite:///bot.db", pool_size=5).url, MongoBackend("mongodb://127.0.0.1/bot", redis_url=None))
