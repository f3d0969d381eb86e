"""Progress of long operator work (export, import, copy): records done of a total, rate and ETA.

On a terminal one line is redrawn in place (at most ten times a second); into a file or a pipe a plain line
is written every ``every_records`` records or ``every_seconds`` seconds, so that a log shows the work moving
without a line per record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO

__all__ = ["Progress"]


class Progress:
    """A progress reporter; call it with ``(done, total)`` as work advances, then :meth:`finish`.

    ``total`` may grow between calls (a later phase adds its records); ``done`` never goes back.
    """

    def __init__(
        self,
        stream: IO[str],
        what: str,
        *,
        tty: bool | None = None,
        every_records: int = 10_000,
        every_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._what = what
        isatty = getattr(stream, "isatty", None)
        self._tty = bool(isatty()) if tty is None and callable(isatty) else bool(tty)
        self._every_records = every_records
        self._every_seconds = 0.1 if self._tty else every_seconds
        self._clock = clock
        self._started = clock()
        self._shown_at = self._started
        self._shown_done = 0
        self._done = 0
        self._total = 0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        self._done, self._total = done, total
        now = self._clock()
        due = now - self._shown_at >= self._every_seconds
        if (self._tty and due) or (not self._tty and (due or done - self._shown_done >= self._every_records)):
            self._show(now)

    def line(self, now: float | None = None) -> str:
        """The progress line: ``what: done/total records (pct), rate rec/s, ETA m:ss``."""
        elapsed = (self._clock() if now is None else now) - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        text = f"{self._what}: {self._done:,}/{self._total:,} records"
        if self._total:
            text += f" ({100 * self._done / self._total:.0f}%)"
        text += f", {rate:,.0f} rec/s"
        if rate > 0 and self._total > self._done:
            left = int((self._total - self._done) / rate)
            text += f", ETA {left // 60}:{left % 60:02d}"
        return text

    def _show(self, now: float) -> None:
        self._shown_at, self._shown_done = now, self._done
        if self._tty:
            # \r and "erase to end of line": the new line may be shorter than the old one.
            self._stream.write(f"\r{self.line(now)}\x1b[K")
            self._drawn = True
        else:
            self._stream.write(self.line(now) + "\n")
        self._stream.flush()

    def finish(self) -> None:
        """Show the final count (ending the redrawn line on a terminal)."""
        self._show(self._clock())
        if self._tty and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
