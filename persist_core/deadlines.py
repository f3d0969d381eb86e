"""Deadlines (CONTRACTS.md 3.6): the default, and the ``timeout`` option every backend accepts."""

from __future__ import annotations

import math

from persist_core.errors import ConfigurationError
from persist_core.urls import mask_url

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "check_timeout"]

#: How long one backend operation may take unless the backend's ``timeout`` option says otherwise.
DEFAULT_TIMEOUT_SECONDS = 5.0


def check_timeout(value: object, url: str) -> float:
    """``value`` (a URL query string or a number from ``setup(options=...)``) as positive, finite seconds.

    Raises:
        ConfigurationError: not a positive finite number, naming the URL (password masked).
    """
    try:
        seconds = float(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else math.nan
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigurationError(
            f"bad option timeout={value!r} for {mask_url(url)!r}: a positive number of seconds "
            f"(default {DEFAULT_TIMEOUT_SECONDS:g})"
        )
    return seconds
