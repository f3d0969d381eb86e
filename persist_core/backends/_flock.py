"""A bounded ``flock(2)``, shared by the backends that lock files (file, jsonl): no lock wait without end
(CONTRACTS.md 3.6)."""

from __future__ import annotations

import fcntl
import time

from persist_core.errors import BackendTimeoutError

__all__ = ["flock_within"]


def flock_within(fd: int, timeout: float, message: str, *, shared: bool = False) -> None:
    """Take an exclusive (or ``shared``) flock on ``fd`` within ``timeout`` seconds.

    A free lock costs one system call; a held one is polled with a growing pause (at most 20 ms), because
    a blocking ``flock`` cannot be given a deadline.

    Raises:
        BackendTimeoutError: ``message`` (which says who waited for what, and how long) when the lock stayed
            held for ``timeout`` seconds.
    """
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    deadline = None
    delay = 0.0005
    while True:
        try:
            fcntl.flock(fd, mode)
            return
        except BlockingIOError:
            now = time.monotonic()
            deadline = deadline or now + timeout
            if now >= deadline:
                raise BackendTimeoutError(message) from None
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.02)
