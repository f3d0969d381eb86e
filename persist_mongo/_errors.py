"""The one place where pymongo's errors become :mod:`persist_core.errors` classes."""

from __future__ import annotations

from bson.errors import InvalidDocument
from pymongo import errors as mongo_errors

from persist_core.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidValueError,
    PersistError,
)
from persist_core.urls import mask_url

__all__ = ["DRIVER_ERRORS", "timed_out", "translate"]

#: What the backend catches around a driver call. ``DocumentTooLarge`` (a command or document over the
#: server's BSON limit, raised by pymongo before sending) is a ``bson.errors.InvalidDocument``, not a
#: ``PyMongoError``: catching ``PyMongoError`` alone let it escape untranslated.
DRIVER_ERRORS = (mongo_errors.PyMongoError, InvalidDocument)

# OperationFailure codes that mean "this configuration cannot work": bad credentials, missing rights.
_AUTH_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed
# Codes of a server that is there but cannot serve now (shutting down, not primary, interrupted).
_UNAVAILABLE_CODES = frozenset({6, 7, 89, 91, 189, 10107, 11600, 11602, 13435, 13436})


def timed_out(url: str, action: str, seconds: float | None, why: str) -> BackendTimeoutError:
    """The error of an operation (``action`` on ``url``) that did not complete within its deadline."""
    within = f" within its {seconds:g} s deadline" if seconds is not None else " in time"
    return BackendTimeoutError(f"MongoDB at {mask_url(url)} did not complete {action}{within}: {mask_url(why)}")


def translate(exc: Exception, url: str, action: str, deadline: float | None = None) -> PersistError:
    """The :class:`PersistError` for a driver error ``exc`` raised while doing ``action`` on ``url``.

    The caller raises the result ``from exc``. Messages name the URL with its password masked, and the
    driver's own text is masked too (a URI may appear in it). ``deadline`` (seconds) is named in the
    message of a timeout.
    """
    where = mask_url(url)
    detail = mask_url(f"{type(exc).__name__}: {exc}")
    # pymongo marks every error that a deadline caused: server selection, connection checkout, a socket
    # read or write (NetworkTimeout), the server's maxTimeMS (ExecutionTimeout, or code 50 inside a
    # BulkWriteError), a write concern timeout, and the client-side check that the time left cannot
    # cover a round trip. A server that refuses connections ends in a server selection timeout too.
    if isinstance(exc, mongo_errors.PyMongoError) and exc.timeout:
        return timed_out(url, action, deadline, detail)
    if isinstance(exc, mongo_errors.ConfigurationError | mongo_errors.InvalidURI):
        return ConfigurationError(f"bad MongoDB configuration {where}: {detail}")
    if isinstance(exc, mongo_errors.ConnectionFailure | mongo_errors.ExecutionTimeout | mongo_errors.WTimeoutError):
        return BackendUnavailableError(f"MongoDB at {where} is unavailable ({action}): {detail}")
    if isinstance(exc, InvalidDocument):  # DocumentTooLarge is one; a payload is a string, so no other
        return InvalidValueError("$", f"too large for one MongoDB document at {where}: {detail}")
    if isinstance(exc, mongo_errors.OperationFailure):
        if exc.code in _AUTH_CODES:
            return ConfigurationError(f"MongoDB at {where} refused access ({action}): {detail}")
        if exc.code in _UNAVAILABLE_CODES:
            return BackendUnavailableError(f"MongoDB at {where} is unavailable ({action}): {detail}")
    return PersistError(f"MongoDB at {where} failed ({action}): {detail}")
