"""Deadlines (CONTRACTS.md 3.6): the default, and the ``timeout`` option every backend accepts."""

from __future__ import annotations

import contextlib
import math

from persist_core.errors import ConfigurationError
from persist_core.urls import mask_url

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "MAX_TIMEOUT_SECONDS", "TIMEOUT_OPTION", "parse_timeout"]

#: How long one backend operation may take unless the backend's ``timeout`` option says otherwise.
DEFAULT_TIMEOUT_SECONDS = 5.0
#: The longest deadline accepted (a day): beyond it a "deadline" no longer bounds anything a bot would wait for.
MAX_TIMEOUT_SECONDS = 86_400.0
#: The name of the option, in a URL's query and in ``setup(options={scheme: {...}})``.
TIMEOUT_OPTION = "timeout"


def parse_timeout(value: object, where: str) -> float:
    """``value`` (a number, or its text from a URL) as a positive, finite number of seconds.

    ``where`` completes the message, e.g. ``"in 'file:./dump?timeout=0'"``.

    Raises:
        ConfigurationError: for 0, a negative number, more than a day, NaN, infinity, a bool or a non-number.
    """
    seconds = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            seconds = float(value.strip())
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_TIMEOUT_SECONDS:
        raise ConfigurationError(
            f"bad option {TIMEOUT_OPTION}={mask_url(str(value))!r} {where}: expected a positive number of seconds "
            f"up to {MAX_TIMEOUT_SECONDS:g}, e.g. {TIMEOUT_OPTION}=2 (default {DEFAULT_TIMEOUT_SECONDS:g})"
        )
    return seconds
