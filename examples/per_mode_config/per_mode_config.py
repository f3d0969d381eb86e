"""Upstream's production example as a backtest-persist configuration: a backend per domain and per mode.

| domain       | live                | backtest   |
|--------------|---------------------|------------|
| session      | MongoDB (durable)   | local file |
| storage      | MongoDB             | in-memory  |
| recent       | MongoDB             | in-memory  |
| notification | MongoDB             | in-memory  |
| memory       | MongoDB             | local file |
| state        | MongoDB             | local file |
| candle       | MongoDB             | MongoDB    |
| log          | JSONL               | JSONL      |

The eight domains the table does not name go to the default URL, MongoDB, as upstream's ``setup()`` sends
every adapter there, with one exception: in backtest mode the trading state (signal, schedule, strategy, risk,
partial, breakeven) goes to memory. Those keys carry no mode, so a backtest sharing live's MongoDB would
overwrite the live bot's open position of the same symbol, strategy and exchange. measure and interval (caches
of LLM/API answers and time-window markers) stay shared in MongoDB on purpose.

Run it (MongoDB or FerretDB on 27017 and Redis on 6379; see docs/configuration-per-mode.md)::

    python examples/per_mode_config/per_mode_config.py                 # the setup(...) form
    python examples/per_mode_config/per_mode_config.py --form env      # the environment-variable form
    python examples/per_mode_config/per_mode_config.py --mongo-standin # no MongoDB: a file root stands in

It writes one record to every domain in both modes and prints which backend each one went to.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from persist_core import JsonObject, Persist, setup


@dataclass(frozen=True)
class Urls:
    """Where the four kinds of storage of the table live."""

    mongo: str = "mongodb://127.0.0.1:27017/bot"
    redis: str = "redis://127.0.0.1:6379/0"
    file: str = "file:./dump"
    memory: str = "memory://"
    jsonl: str = "jsonl:./dump/log/log.jsonl"


def configure(urls: Urls = Urls()) -> Persist:
    """The table as one ``setup()`` call."""
    return setup(
        urls.mongo,  # every domain the table does not name, in both modes
        redis_url=urls.redis,  # the id cache in front of MongoDB
        domains={  # same backend in both modes
            "candle": urls.mongo,
            "log": urls.jsonl,
        },
        live={
            "session": urls.mongo,
            "storage": urls.mongo,
            "recent": urls.mongo,
            "notification": urls.mongo,
            "memory": urls.mongo,
            "state": urls.mongo,
        },
        backtest={
            "session": urls.file,
            "storage": urls.memory,
            "recent": urls.memory,
            "notification": urls.memory,
            "memory": urls.file,
            "state": urls.file,
            # not in the table: keep backtests away from live's trading state
            "signal": urls.memory,
            "schedule": urls.memory,
            "strategy": urls.memory,
            "risk": urls.memory,
            "partial": urls.memory,
            "breakeven": urls.memory,
        },
    )


def environment(urls: Urls = Urls()) -> dict[str, str]:
    """The same table as environment variables, for a bare ``setup()``."""
    return {
        "PERSIST_URL": urls.mongo,
        "PERSIST_REDIS_URL": urls.redis,
        "PERSIST_CANDLE_URL": urls.mongo,
        "PERSIST_LOG_URL": urls.jsonl,
        "PERSIST_LIVE_SESSION_URL": urls.mongo,
        "PERSIST_LIVE_STORAGE_URL": urls.mongo,
        "PERSIST_LIVE_RECENT_URL": urls.mongo,
        "PERSIST_LIVE_NOTIFICATION_URL": urls.mongo,
        "PERSIST_LIVE_MEMORY_URL": urls.mongo,
        "PERSIST_LIVE_STATE_URL": urls.mongo,
        "PERSIST_BACKTEST_SESSION_URL": urls.file,
        "PERSIST_BACKTEST_STORAGE_URL": urls.memory,
        "PERSIST_BACKTEST_RECENT_URL": urls.memory,
        "PERSIST_BACKTEST_NOTIFICATION_URL": urls.memory,
        "PERSIST_BACKTEST_MEMORY_URL": urls.file,
        "PERSIST_BACKTEST_STATE_URL": urls.file,
        "PERSIST_BACKTEST_SIGNAL_URL": urls.memory,
        "PERSIST_BACKTEST_SCHEDULE_URL": urls.memory,
        "PERSIST_BACKTEST_STRATEGY_URL": urls.memory,
        "PERSIST_BACKTEST_RISK_URL": urls.memory,
        "PERSIST_BACKTEST_PARTIAL_URL": urls.memory,
        "PERSIST_BACKTEST_BREAKEVEN_URL": urls.memory,
    }


def configure_from_environment(env: Mapping[str, str]) -> Persist:
    """``setup()`` with no arguments reads the variables (``env`` stands for ``os.environ`` here)."""
    return setup(env=env)


# ------------------------------------------------------------------------------------------------ demo

CANDLE_OPEN_MS = 1_700_000_000_000


def write_one_record_everywhere(persist: Persist) -> None:
    """Write one small record to each of the 16 domains in each mode (the ids say where they came from)."""
    for mode in ("live", "backtest"):
        stores = persist.mode(mode)
        backtest = mode == "backtest"
        where = {"from": mode}
        trade = {"symbol": "BTC/USDT", "strategy_name": "trend", "exchange_name": "binance"}
        stores.signal(**trade).write({"position": "long", **where})
        stores.schedule(**trade).write({"priceOpen": 64000.0, **where})
        stores.strategy(**trade).write({"paused": False, **where})
        stores.risk(risk_name="main", exchange_name="binance").write({"BTC/USDT": where})
        stores.partial(**trade).write("signal-1", {"profitLevels": [10], **where})
        stores.breakeven(**trade).write("signal-1", {"reached": True, **where})
        candle: JsonObject = {"timestamp": CANDLE_OPEN_MS + (60_000 if backtest else 0), "close": 64000.0, **where}
        stores.candle(symbol="BTC/USDT", interval="1m", exchange_name="binance").write([candle])
        stores.storage(backtest=backtest).write([{"id": "signal-1", "status": "opened", **where}])
        stores.notification(backtest=backtest).write([{"id": "note-1", "text": "opened", **where}])
        stores.log().write([{"id": f"log-{mode}-1", "topic": "tick", **where}])
        stores.measure(bucket="llm").write("prompt-1", {"answer": 42, **where})
        stores.interval(bucket="daily").write("2024-05-01", {"done": True, **where})
        stores.memory(signal_id="signal-1", bucket_name="notes").write("m-1", {"text": "why", **where})
        stores.recent(frame_name="", backtest=backtest, **trade).write({"signalId": "signal-1", **where})
        stores.state(signal_id="signal-1", bucket_name="trail").write({"peak": 65000.0, **where})
        stores.session(frame_name="", backtest=backtest, **trade).write({"ema": [1.0, 2.0], **where})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--form", choices=("setup", "env"), default="setup", help="setup(...) call or variables")
    parser.add_argument("--mongo", default=Urls.mongo, help="MongoDB URL with the database name")
    parser.add_argument("--redis", default=Urls.redis, help="Redis URL of the id cache")
    parser.add_argument("--dir", default="./dump", help="folder of the file backend and the JSONL log")
    parser.add_argument(
        "--mongo-standin", action="store_true", help="no MongoDB at hand: a file root under --dir stands in for it"
    )
    args = parser.parse_args(argv)
    urls = Urls(mongo=args.mongo, redis=args.redis, file=f"file:{args.dir}", jsonl=f"jsonl:{args.dir}/log/log.jsonl")
    if args.mongo_standin:
        urls = replace(urls, mongo=f"file:{args.dir.rstrip('/')}-mongo-standin")
    persist = configure(urls) if args.form == "setup" else configure_from_environment(environment(urls))
    with persist:
        write_one_record_everywhere(persist)
        rows: dict[str, dict[str, Any]] = {}
        for mode, name, url in persist.routes():
            rows.setdefault(name, {})[mode] = url
        width = max(len(name) for name in rows)
        live_width = max(len(per_mode["live"]) for per_mode in rows.values())
        print(f"{'domain':<{width}}  {'live':<{live_width}}  backtest")
        for name, per_mode in rows.items():
            print(f"{name:<{width}}  {per_mode['live']:<{live_width}}  {per_mode['backtest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
