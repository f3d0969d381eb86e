"""The demo's simulated live strategy and its crash-safe step protocol.

Each step handles one closed 1-minute candle: fetch candles from the synthetic exchange, cache them
(first write wins), read the window back from the cache, and decide. A decision that changes state
(open a trade, reach partial levels, close it) becomes a list of writes to several domains, written as
one *unit of work* (``persist.live.unit()``) together with the strategy slot's cursor
``{"cursor": step, "phase": "committed", ...}``: after a kill, either every write of the step and its
cursor are stored, or none of them is.

A process killed anywhere restarts with :meth:`LiveStrategy.recover`: it goes on after the cursor, and a
step whose unit the kill cut short is simply decided again (what it reads is what it read before). Steps
without a decision write only candles (a first-write-wins cache), which re-running them rewrites to no
effect. Upstream (and this demo before units) kept a write-ahead queue in the strategy slot and re-applied
it after a crash; the unit makes that queue the library's job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from persist_core.demo.market import STEP_MS, Market, SimClock
from persist_core.domains import CandleInterval
from persist_core.persist import ModeStores, Persist, Unit

__all__ = [
    "FAST",
    "INTERVAL",
    "SLOW",
    "SYMBOL",
    "Event",
    "LiveStrategy",
    "Names",
    "Recovery",
    "run_items",
    "setup_env",
]

SYMBOL = "BTC/USDT:USDT"
INTERVAL: CandleInterval = "1m"
FAST = 5
SLOW = 20
TAKE_PROFIT = 0.012
STOP_LOSS = 0.006
MAX_MINUTES = 60
LEVELS = (25, 50, 75)
#: At this profit level a third of the position is closed (recorded in the signal row's ``_partial``).
PARTIAL_CLOSE_LEVEL = 50
PARTIAL_CLOSE_PERCENT = 30

Reporter = Callable[[str], None]


@dataclass(frozen=True)
class Names:
    """The keys of one demo run. ``tag`` keeps runs apart when they share a database."""

    tag: str
    strategy_name: str = "sma-cross"
    risk_name: str = "demo-risk"

    @property
    def exchange_name(self) -> str:
        """The synthetic exchange, named per run so that its candles never mix with another run's."""
        return f"synthex-{self.tag}"

    @property
    def signal_prefix(self) -> str:
        """Prefix of this run's signal ids (storage rows and partial keys)."""
        return f"sig-{self.tag}-"

    @property
    def log_prefix(self) -> str:
        """Prefix of this run's log entry ids."""
        return f"log-{self.tag}-"

    @property
    def position_key(self) -> str:
        """The risk book's key of this strategy's position (upstream: ``{strategy}_{exchange}_{symbol}``)."""
        return f"{self.strategy_name}_{self.exchange_name}_{SYMBOL}"


@dataclass(frozen=True)
class Event:
    """A step that changed state: its index, kind, the trade it concerns and the number of writes."""

    step: int
    kind: str
    signal_id: str
    writes: int


@dataclass
class Recovery:
    """What :meth:`LiveStrategy.recover` found in storage and did about it."""

    start: int
    cursor: int | None = None
    event: str | None = None
    open_trade: dict[str, Any] | None = None
    levels: dict[str, Any] = field(default_factory=dict)
    trades: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON form, sent by the child process to the parent."""
        return {
            "start": self.start,
            "cursor": self.cursor,
            "event": self.event,
            "open_trade": self.open_trade,
            "levels": self.levels,
            "trades": self.trades,
        }


def run_items(items: list[Any], prefix: str) -> dict[str, dict[str, Any]]:
    """The items of one demo run (ids starting with ``prefix``) by id.

    A shared database holds other runs' and other programs' rows too, which may have any shape.
    """
    return {
        item["id"]: item
        for item in items
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"].startswith(prefix)
    }


def setup_env() -> dict[str, str]:
    """The environment the demo hands to ``setup()``: only the Redis settings of a MongoDB target.

    The demo always names its backend by URL, so no ``PERSIST_*_URL`` variable may route a domain elsewhere
    (nor can an unrelated ``PERSIST_TEST_*`` variable of a test machine stop it).
    """
    return {k: v for k, v in os.environ.items() if k == "PERSIST_REDIS_URL" or k.startswith("CC_REDIS_")}


def iso(ms: int) -> str:
    """``ms`` as an ISO-8601 UTC timestamp (deterministic, unlike the wall clock)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _pnl(signal: dict[str, Any], exit_price: float) -> float:
    """Percent PnL of a trade closed at ``exit_price``, counting the parts closed earlier at their price."""
    direction = 1.0 if signal["position"] == "long" else -1.0
    entry = float(signal["priceOpen"])
    closed = 0.0
    total = 0.0
    for part in signal["_partial"]:
        share = part["percent"] / 100
        closed += share
        total += share * (part["currentPrice"] / entry - 1.0) * direction
    total += (1.0 - closed) * (exit_price / entry - 1.0) * direction
    return round(total * 100, 4)


class LiveStrategy:
    """A fast/slow moving-average cross strategy persisting every piece of its state through ``persist``.

    Args:
        persist: the configured layer (``persist_core.setup(url, clock=clock)``).
        market: the synthetic exchange.
        clock: the clock given to ``setup``; each step sets it to the close of its candle.
        names: the run's keys.
        report: receives one progress line per event (the child process writes them to its pipe).
        pace_s: sleep per step (waiting for the next candle) and half of it before each write of a step
            (standing in for the order round trip to the exchange), so that a kill lands mid-step.
        units: write each step as one unit of work (``False`` only to show that the check catches a step
            written piecemeal: a kill between its writes leaves half a trade).
    """

    def __init__(
        self,
        persist: Persist,
        market: Market,
        clock: SimClock,
        names: Names,
        *,
        report: Reporter | None = None,
        pace_s: float = 0.0,
        units: bool = True,
    ) -> None:
        self.persist = persist
        self.market = market
        self.clock = clock
        self.names = names
        self.report = report or (lambda line: None)
        self.pace_s = pace_s
        self.units = units
        self.events: list[Event] = []
        live = persist.live
        self.triple = {"symbol": SYMBOL, "strategy_name": names.strategy_name, "exchange_name": names.exchange_name}
        self.signal = live.signal(**self.triple)
        self.strategy = live.strategy(**self.triple)
        self.partial = live.partial(**self.triple)
        self.risk = live.risk(risk_name=names.risk_name, exchange_name=names.exchange_name)
        self.candles = live.candle(symbol=SYMBOL, interval=INTERVAL, exchange_name=names.exchange_name)
        self.storage = live.storage(backtest=False)
        self.log = live.log()

    # ------------------------------------------------------------------------------------ loop

    @property
    def first_step(self) -> int:
        """The first candle index with a full window behind it."""
        return SLOW

    @property
    def last_step(self) -> int:
        """The last candle index the run handles (the exchange has one more, still forming)."""
        return len(self.market.candles) - 2

    def run(self, start: int) -> None:
        """Handle every step from ``start`` to the last one."""
        for step in range(start, self.last_step + 1):
            if self.pace_s:
                time.sleep(self.pace_s)
            self.step(step)

    def step(self, index: int) -> None:
        """Handle the close of candle ``index``."""
        now = self.market.timestamp(index) + STEP_MS
        self.clock.now_ms = now
        self.candles.write(self.market.fetch(index, SLOW + 1))
        window = self.candles.read(SLOW + 1, self.market.timestamp(index - SLOW))
        if window is None:
            raise RuntimeError(f"candle cache miss at step {index}: the cache lost candles it had accepted")
        decision = self.decide(index, window, now)
        if decision is not None:
            kind, signal_id, queue = decision
            self.commit(index, kind, signal_id, queue, now)

    # ------------------------------------------------------------------------------- decisions

    def decide(
        self, index: int, window: list[dict[str, Any]], now: int
    ) -> tuple[str, str, list[dict[str, Any]]] | None:
        """The writes that candle ``index`` calls for, as ``(kind, signal id, writes)``, or ``None``."""
        candle = window[-1]
        signal = self.signal.read()
        if signal is not None:
            return self._manage(index, signal, candle, now)
        closes = [c["close"] for c in window]
        fast, slow = sum(closes[-FAST:]) / FAST, sum(closes[1:]) / SLOW
        fast_before, slow_before = sum(closes[-FAST - 1 : -1]) / FAST, sum(closes[:-1]) / SLOW
        if fast_before <= slow_before and fast > slow:
            return self._open(index, "long", candle["close"], now)
        if fast_before >= slow_before and fast < slow:
            return self._open(index, "short", candle["close"], now)
        return None

    def _open(self, index: int, position: str, price: float, now: int) -> tuple[str, str, list[dict[str, Any]]]:
        names = self.names
        direction = 1 if position == "long" else -1
        signal_id = f"{names.signal_prefix}{index:04d}"
        signal = {
            "id": signal_id,
            "symbol": SYMBOL,
            "position": position,
            "priceOpen": price,
            "priceTakeProfit": round(price * (1 + direction * TAKE_PROFIT), 2),
            "priceStopLoss": round(price * (1 - direction * STOP_LOSS), 2),
            "minuteEstimatedTime": MAX_MINUTES,
            "exchangeName": names.exchange_name,
            "strategyName": names.strategy_name,
            "pendingAt": now,
            "openStep": index,
            "_partial": [],
        }
        position_row = {
            "strategyName": names.strategy_name,
            "exchangeName": names.exchange_name,
            "symbol": SYMBOL,
            "position": position,
            "priceOpen": price,
            "priceStopLoss": signal["priceStopLoss"],
            "priceTakeProfit": signal["priceTakeProfit"],
            "minuteEstimatedTime": MAX_MINUTES,
            "openTimestamp": now,
        }
        queue: list[dict[str, Any]] = [
            {"domain": "signal", "value": signal},
            {"domain": "risk", "value": {names.position_key: position_row}},
            {"domain": "partial", "signal_id": signal_id, "value": {"profitLevels": [], "lossLevels": []}},
            {"domain": "storage", "items": [self._row(signal, "opened", now)]},
            {"domain": "log", "items": [self._entry(index, 0, "signal.opened", signal_id, now, price=price)]},
        ]
        return "open", signal_id, queue

    def _manage(
        self, index: int, signal: dict[str, Any], candle: dict[str, Any], now: int
    ) -> tuple[str, str, list[dict[str, Any]]] | None:
        signal_id = signal["id"]
        long = signal["position"] == "long"
        take, stop = signal["priceTakeProfit"], signal["priceStopLoss"]
        exit_price, reason = None, ""
        if (candle["low"] <= stop) if long else (candle["high"] >= stop):
            exit_price, reason = stop, "stop_loss"
        elif (candle["high"] >= take) if long else (candle["low"] <= take):
            exit_price, reason = take, "take_profit"
        elif index - signal["openStep"] >= MAX_MINUTES:
            exit_price, reason = candle["close"], "time_expired"
        if exit_price is not None:
            pnl = _pnl(signal, exit_price)
            row = self._row(signal, "closed", now)
            row.update(closeReason=reason, closeTimestamp=now, priceClose=exit_price, pnl=pnl)
            queue: list[dict[str, Any]] = [
                {"domain": "storage", "items": [row]},
                {"domain": "signal", "value": None},
                {"domain": "risk", "value": {}},
                {
                    "domain": "log",
                    "items": [self._entry(index, 0, "signal.closed", signal_id, now, reason=reason, pnl=pnl)],
                },
            ]
            return "close", signal_id, queue
        return self._levels(index, signal, candle["close"], now)

    def _levels(
        self, index: int, signal: dict[str, Any], price: float, now: int
    ) -> tuple[str, str, list[dict[str, Any]]] | None:
        signal_id = signal["id"]
        entry = signal["priceOpen"]
        levels: dict[str, Any] = self.partial.read(signal_id)
        profit_levels, loss_levels = list(levels.get("profitLevels", [])), list(levels.get("lossLevels", []))
        profit = (price - entry) / (signal["priceTakeProfit"] - entry) * 100
        loss = (price - entry) / (signal["priceStopLoss"] - entry) * 100
        new_profit = [lv for lv in LEVELS if profit >= lv and lv not in profit_levels]
        new_loss = [lv for lv in LEVELS if loss >= lv and lv not in loss_levels]
        if not new_profit and not new_loss:
            return None
        entries = [
            self._entry(index, k, f"partial.{kind}", signal_id, now, level=level, price=price)
            for k, (kind, level) in enumerate([("profit", lv) for lv in new_profit] + [("loss", lv) for lv in new_loss])
        ]
        queue: list[dict[str, Any]] = [
            {
                "domain": "partial",
                "signal_id": signal_id,
                "value": {"profitLevels": profit_levels + new_profit, "lossLevels": loss_levels + new_loss},
            }
        ]
        if PARTIAL_CLOSE_LEVEL in new_profit:
            updated = dict(signal)
            updated["_partial"] = [
                *signal["_partial"],
                {"type": "profit", "percent": PARTIAL_CLOSE_PERCENT, "currentPrice": price, "timestamp": now},
            ]
            queue.append({"domain": "signal", "value": updated})
            queue.append({"domain": "storage", "items": [self._row(updated, "opened", now)]})
        queue.append({"domain": "log", "items": entries})
        return "partial", signal_id, queue

    def _row(self, signal: dict[str, Any], status: str, now: int) -> dict[str, Any]:
        """The public trade row kept in the storage domain."""
        keys = ("id", "symbol", "position", "priceOpen", "priceTakeProfit", "priceStopLoss", "pendingAt")
        row = {k: signal[k] for k in keys}
        row.update(status=status, partials=list(signal["_partial"]), updatedAt=now)
        return row

    def _entry(self, index: int, k: int, topic: str, signal_id: str, now: int, **args: Any) -> dict[str, Any]:
        return {
            "id": f"{self.names.log_prefix}{index:04d}-{k}",
            "type": "info",
            "topic": topic,
            "signalId": signal_id,
            "timestamp": now,
            "createdAt": iso(now),
            "args": args,
        }

    # --------------------------------------------------------------------------- the commit

    def commit(self, index: int, kind: str, signal_id: str, queue: list[dict[str, Any]], now: int) -> None:
        """Write the step's writes and the strategy cursor as one unit of work: all stored, or none."""
        self.report(f"plan {index} {len(queue)} {kind} {signal_id}")
        cursor = {"cursor": index, "phase": "committed", "event": kind, "signalId": signal_id, "timestamp": now}
        if not self.units:  # the deliberately wrong way: each write on its own
            self._write_all(self.persist.live, index, queue, cursor, now)
        else:
            with self.persist.live.unit() as unit:
                self._write_all(unit, index, queue, cursor, now)
        self.report(f"commit {index}")
        self.events.append(Event(index, kind, signal_id, len(queue)))

    def _write_all(
        self, target: ModeStores | Unit, index: int, queue: list[dict[str, Any]], cursor: dict[str, Any], now: int
    ) -> None:
        for k, write in enumerate(queue):
            self.report(f"op {index} {k} {write['domain']}")
            if self.pace_s:
                time.sleep(self.pace_s / 2)
            self.apply(target, write, now)
        target.strategy(**self.triple).write(cursor, when=now)

    def apply(self, target: ModeStores | Unit, write: dict[str, Any], when: int) -> None:
        """Write one write of a step through ``target`` (the live stores, or a unit of work)."""
        domain = write["domain"]
        names = self.names
        if domain == "signal":
            target.signal(**self.triple).write(write["value"], when=when)
        elif domain == "risk":
            target.risk(risk_name=names.risk_name, exchange_name=names.exchange_name).write(write["value"], when=when)
        elif domain == "partial":
            target.partial(**self.triple).write(write["signal_id"], write["value"], when=when)
        elif domain == "storage":
            target.storage(backtest=False).write(write["items"])
        elif domain == "log":
            target.log().write(write["items"])
        else:
            raise ValueError(f"unknown write of a step: {domain!r}")

    def recover(self) -> Recovery:
        """Find the last step whose unit was stored; go on after it."""
        record: dict[str, Any] | None = self.strategy.read()
        found = Recovery(start=self.first_step, open_trade=self.signal.read())
        if record is not None:
            found.start, found.cursor, found.event = record["cursor"] + 1, record["cursor"], record.get("event")
        if found.open_trade is not None:
            found.levels = self.partial.read(found.open_trade["id"])
        found.trades = len(run_items(self.storage.read(), self.names.signal_prefix))
        return found
