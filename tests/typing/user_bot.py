"""A user's bot with planted mistakes: ``tests/test_typing.py`` runs ``mypy --strict`` on it.

Each planted mistake ends with ``# E: <error code>``: mypy must report exactly that code on exactly that line,
and nothing anywhere else. Not a test module (pytest does not collect it) and never run.
"""

from __future__ import annotations

from datetime import UTC, datetime

from persist_core import AsyncPersist, JsonObject, Persist
from persist_mongo import MongoBackend
from persist_sql import SqlBackend

TRADE = {"symbol": "BTC/USDT", "strategy_name": "trend", "exchange_name": "binance"}


def sync_face(persist: Persist) -> None:
    signal = persist.live.signal(symbol="BTC/USDT", strategy_name="trend", exchange_name="binance")
    # 1. A read's result used as the wrong type.
    row = signal.read()
    print(row["priceOpen"])  # E: index
    if row is not None:
        price: float = row["priceOpen"]  # E: assignment
        print(price)
    levels: list[str] = persist.live.partial(**TRADE).read("sig-1")  # E: assignment
    print(levels)
    # 2. when= and as_of= that are neither int milliseconds nor a datetime.
    signal.write({"id": "sig-1"}, when="2024-01-01")  # E: arg-type
    signal.read(as_of="2024-01-01")  # E: arg-type
    signal.write({"id": "sig-1"}, when=1.5)  # E: arg-type
    # 3. Values that are not JSON: a set, a tuple, a datetime, a non-str dict key.
    persist.live.measure(bucket="llm").write("k", {1, 2})  # E: arg-type
    persist.live.state(signal_id="sig-1", bucket_name="b").write({"range": (1, 2)})  # E: dict-item
    persist.live.measure(bucket="llm").write("k", datetime.now(UTC))  # E: arg-type
    persist.live.state(signal_id="sig-1", bucket_name="b").write({1: "one"})  # E: dict-item
    # 4. A candle interval that does not exist.
    persist.live.candle(symbol="BTC/USDT", interval="7m", exchange_name="binance")  # E: arg-type
    # 5. Wrong key field names and types.
    persist.live.signal(symbol="BTC/USDT", strategy="trend", exchange_name="binance")  # E: call-arg
    persist.live.storage(backtest="yes")  # E: arg-type
    persist.live.partial(**TRADE).read(42)  # E: arg-type
    # 6. A list where an object domain needs an object; an object where a batch needs a list.
    signal.write([1, 2])  # E: arg-type
    persist.live.storage(backtest=False).write({"id": "sig-1"})  # E: arg-type
    persist.live.breakeven(**TRADE).write("sig-1", "reached")  # E: arg-type
    # 7. Awaiting a sync store's result.


async def awaits_sync(persist: Persist) -> None:
    await persist.live.risk(risk_name="main", exchange_name="binance").read()  # E: misc


async def async_face(persist: AsyncPersist) -> None:
    signal = persist.live.signal(symbol="BTC/USDT", strategy_name="trend", exchange_name="binance")
    # 8. Not awaiting an async store: the coroutine is used as the value, or dropped.
    row: JsonObject | None = signal.read()  # E: assignment
    print(row)
    signal.write({"id": "sig-1"})  # E: unused-coroutine
    # The same mistakes as on the sync face.
    await signal.write({"id": "sig-1"}, when="2024-01-01")  # E: arg-type
    await signal.read(as_of="2024-01-01")  # E: arg-type
    await persist.live.memory(signal_id="sig-1", bucket_name="b").write("m", {1, 2})  # E: arg-type
    persist.live.candle(symbol="BTC/USDT", interval="7m", exchange_name="binance")  # E: arg-type
    await signal.write([1, 2])  # E: arg-type
    stored = await persist.live.storage(backtest=True).read()
    first: str = stored[0]["id"]  # E: assignment
    print(first)


def backends() -> None:
    # 9. The backend packages are typed (no import-untyped above), so their misuse is reported.
    SqlBackend("sqlite:///bot.db", pool_size="10")  # E: arg-type
    MongoBackend("mongodb://127.0.0.1/bot", redis_url=6379)  # E: arg-type
