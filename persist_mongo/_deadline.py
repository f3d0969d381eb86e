"""Deadlines of the Mongo backend (issue 10; docs/mongo.md, "Deadlines").

Every public operation runs inside :func:`deadline`: pymongo's client-side operation timeout
(``pymongo.timeout``, pymongo >= 4.2) bounds server selection, connection checkout, every socket read and
write and the ``maxTimeMS`` sent with each command by the time left, retries included. The same end time is
kept here too, for the waits that are ours (a key lock held by another writer). Nested deadlines only
shorten: ``put_many`` has one deadline for the whole batch, and the ``put`` of each item runs inside it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from contextvars import ContextVar
from urllib.parse import unquote_plus

import pymongo

from persist_core.deadlines import DEFAULT_TIMEOUT_SECONDS, TIMEOUT_OPTION, parse_timeout

__all__ = ["DEFAULT_TIMEOUT", "TIMEOUT_OPTION", "deadline", "parse_timeout", "remaining", "split_timeout"]

#: Seconds within which every operation completes or raises BackendTimeoutError, unless ``timeout`` is given.
DEFAULT_TIMEOUT = DEFAULT_TIMEOUT_SECONDS

_END: ContextVar[float] = ContextVar("persist_mongo_deadline", default=math.inf)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Run the block within ``seconds`` (or less, inside an outer deadline); yields the end (monotonic)."""
    end = min(_END.get(), time.monotonic() + seconds)
    token = _END.set(end)
    try:
        with pymongo.timeout(seconds):  # capped by an enclosing pymongo.timeout, like ours
            yield end
    finally:
        _END.reset(token)


def remaining() -> float:
    """Seconds left before the current deadline (``inf`` outside any)."""
    return _END.get() - time.monotonic()


def split_timeout(url: str) -> tuple[str, str | None]:
    """``url`` without its ``timeout`` query option (any case), and that option's value (``None`` if absent).

    The other options are kept exactly as written (their order and percent-encoding), for pymongo. If the
    option is given twice, the last one wins, as for every other option (``parse_options``).
    """
    if "?" not in url:
        return url, None
    base, query = url.split("?", 1)
    kept: list[str] = []
    value: str | None = None
    for part in query.split("&"):
        name, _, raw = part.partition("=")
        if unquote_plus(name).lower() == TIMEOUT_OPTION:
            value = unquote_plus(raw)
        else:
            kept.append(part)
    if value is None:
        return url, None
    rest = "&".join(part for part in kept if part)
    return (f"{base}?{rest}" if rest else base), value
