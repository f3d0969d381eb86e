"""A synthetic exchange for the demo: seeded, deterministic 1-minute candles and a settable clock."""

from __future__ import annotations

import random
from typing import Any

__all__ = ["BASE_MS", "STEP_MS", "Market", "SimClock"]

#: Open time of the first synthetic candle (aligned to the minute: 2023-11-14 22:13 UTC).
BASE_MS = 1_699_999_980_000
STEP_MS = 60_000


class SimClock:
    """The simulated wall clock handed to ``setup(clock=...)``: epoch ms, set by the strategy loop."""

    def __init__(self, now_ms: int = BASE_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


class Market:
    """``count`` candles of a seeded random walk with drifting regimes, so that trends and trades happen."""

    def __init__(self, seed: int, count: int) -> None:
        rnd = random.Random(seed)
        price = 100.0
        drift = 0.0
        self.candles: list[dict[str, Any]] = []
        for index in range(count):
            if index % 30 == 0:
                drift = rnd.choice((-1, 1)) * rnd.uniform(0.0004, 0.0015)
            change = drift + rnd.gauss(0.0, 0.0025)
            open_ = price
            close = open_ * (1.0 + change)
            high = max(open_, close) * (1.0 + abs(rnd.gauss(0.0, 0.0008)))
            low = min(open_, close) * (1.0 - abs(rnd.gauss(0.0, 0.0008)))
            self.candles.append(
                {
                    "timestamp": self.timestamp(index),
                    "open": round(open_, 2),
                    "high": round(high, 2),
                    "low": round(low, 2),
                    "close": round(close, 2),
                    "volume": round(rnd.uniform(5.0, 50.0), 3),
                }
            )
            price = round(close, 2)

    @staticmethod
    def timestamp(index: int) -> int:
        """Open time of candle ``index`` in epoch ms."""
        return BASE_MS + index * STEP_MS

    def fetch(self, last: int, limit: int) -> list[dict[str, Any]]:
        """What an exchange answers at the close of candle ``last``: the ``limit`` candles up to it and the
        candle that has just opened (still forming; the candle cache must refuse it)."""
        first = max(0, last - limit + 1)
        return [dict(c) for c in self.candles[first : last + 2]]
