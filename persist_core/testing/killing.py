"""Running a writer process and killing it with SIGKILL: what the kit's two kill tests share.

The writer reports each write that returned as one message on a pipe; the parent reads them until a random
moment, then kills the writer and reads what is left in the pipe, so that every acknowledgement sent before
the kill is counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["kill_writer"]


def kill_writer(
    ctx: Any,
    target: Callable[..., None],
    args: tuple[Any, ...],
    *,
    delay: float,
    start_timeout: float,
    on_message: Callable[[bytes], None],
) -> None:
    """Start ``target(*args, sender)`` in a process of ``ctx`` (a multiprocessing context), wait for its first
    message, then hand every message to ``on_message`` for ``delay`` seconds, kill it with SIGKILL and hand over
    the messages still in the pipe.

    Raises:
        AssertionError: the writer sent nothing within ``start_timeout``, or died before the kill.
    """
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, sender), daemon=True)
    proc.start()
    sender.close()
    try:
        if not receiver.poll(start_timeout):
            raise AssertionError(f"the writer process acknowledged nothing within {start_timeout}s")
        deadline = time.monotonic() + delay
        try:
            while time.monotonic() < deadline and proc.is_alive():
                if receiver.poll(0.001):
                    on_message(receiver.recv_bytes())
        except EOFError:
            pass
        if not proc.is_alive():
            raise AssertionError(f"the writer process died on its own (exit code {proc.exitcode})")
    finally:
        proc.kill()  # SIGKILL
        proc.join()
    try:
        while receiver.poll(0):
            on_message(receiver.recv_bytes())
    except EOFError:
        pass
    receiver.close()
