"""A live bot in miniature for the ownership tests: claims the live state, then writes its signal slot.

Usage: ``python -m tests.ownership.child URL LEASE_SECONDS [HOST]``. Prints ``owned`` once it owns the state,
``ack N`` after each acknowledged write and ``lost MESSAGE`` (exit 3) when a write is refused. ``HOST``
pretends the process runs on another host, so that only the lease's expiry can free it. Runs 60 s at most.
"""

from __future__ import annotations

import os
import sys
import time

from persist_core import OwnershipError, setup
from persist_core import ownership as ownership_module
from persist_core.ownership import ProcessIdentity

CONTEXT = {"symbol": "BTC/USDT", "strategy_name": "owner-test", "exchange_name": "x"}


def main() -> int:
    url, lease = sys.argv[1], float(sys.argv[2])
    if len(sys.argv) > 3:
        real = ownership_module.this_process()
        fake = ProcessIdentity(sys.argv[3], real.pid, real.started)
        ownership_module.this_process = lambda: fake
    with setup(url, lease_seconds=lease) as persist:
        persist.claim_ownership()
        print("owned", flush=True)
        signal = persist.live.signal(**CONTEXT)
        deadline = time.monotonic() + 60
        n = 0
        while time.monotonic() < deadline:
            n += 1
            try:
                signal.write({"writer": os.getpid(), "n": n})
            except OwnershipError as exc:
                print(f"lost {exc}", flush=True)
                return 3
            print(f"ack {n}", flush=True)
            time.sleep(0.02)
    return 0


if __name__ == "__main__":
    sys.exit(main())
