"""The demo's live process: ``python -m persist_core.demo.child``, started (and killed) by the parent.

It reads its configuration as one JSON line on stdin (so that a database password never shows in the
process list), recovers from whatever the backend holds, runs the strategy to the end and reports its
progress as lines on stdout, which the parent reads to pick the moment of the kill.
"""

from __future__ import annotations

import json
import os
import sys

from persist_core.demo.market import Market, SimClock
from persist_core.demo.strategy import LiveStrategy, Names, setup_env
from persist_core.errors import PersistError
from persist_core.persist import setup
from persist_core.urls import mask_url

__all__ = ["FAULT_ENV", "main"]

#: Set to ``no-units`` to make the live processes write each step's writes one by one instead of as a unit of
#: work (deliberately wrong, used by the tests to show that the demo's own check fails when a kill cuts a
#: step in half).
FAULT_ENV = "PERSIST_DEMO_FAULT"


def _report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    """Run one live process; exit status 0 when it reached the last candle."""
    config = json.loads(sys.stdin.readline())
    clock = SimClock()
    try:
        persist = setup(config["url"], clock=clock, env=setup_env())
        try:
            strategy = LiveStrategy(
                persist,
                Market(config["seed"], config["candles"]),
                clock,
                Names(config["tag"]),
                report=_report,
                pace_s=config["pace_ms"] / 1000,
                units=os.environ.get(FAULT_ENV) != "no-units",
            )
            _report(f"ready {os.getpid()}")
            found = strategy.recover()
            _report("found " + json.dumps(found.as_dict()))
            strategy.run(found.start)
            _report(f"done {strategy.last_step}")
        finally:
            persist.close()
    except PersistError as exc:
        print(f"demo child: {mask_url(str(exc))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
