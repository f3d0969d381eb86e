"""A remover racing a writer on one bucket key: how often is an older payload stored? (issue 9)

    python3 scripts/race_remove_write.py --seconds 20 --backend file:/tmp/race-dump
    python3 scripts/race_remove_write.py --seconds 20 --backend "$PERSIST_TEST_POSTGRES_URL"

Two threads share one opened backend: one writes increasing counters to one key of a soft-delete domain
(``BucketStore.write``), the other removes it (``BucketStore.remove``) after each acknowledged write and
then reads the stored record through the backend (removed records included). It prints the operations and
the number of times the stored counter was below the last acknowledged write: 0 on a correct backend.
This is the kit clause ``test_remove_racing_write_never_restores_an_older_payload`` without its bound
on time and operations (:func:`persist_core.testing.races.race_remove_write`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from persist_core.registry import create_backend
from persist_core.testing.races import race_remove_write
from persist_core.urls import mask_url


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", required=True, help="backend URL (file:PATH, memory://, sqlite:///..., ...)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--domain", default="measure", choices=["measure", "interval", "memory"])
    args = parser.parse_args()
    backend = create_backend(args.backend)
    backend.open()
    try:
        started = time.monotonic()
        # A namespace of its own per run, so that runs on shared storage never meet each other's records.
        race = race_remove_write(
            backend, args.domain, f"r{os.getpid()}-{time.time_ns()}-", seconds=args.seconds, max_ops=None
        )
        elapsed = time.monotonic() - started
    finally:
        backend.close()
    final_ok = race.final == race.writes
    print(
        f"{mask_url(args.backend)}: {elapsed:.1f} s, {race.writes:,} writes, {race.removes:,} removes, "
        f"older payload stored {race.older:,}, final = last write: {final_ok}"
    )
    return 0 if race.older == 0 and final_ok else 1


if __name__ == "__main__":
    sys.exit(main())
