"""The one place where pymongo's errors become :mod:`persist_core.errors` classes."""

from __future__ import annotations

from bson.errors import InvalidDocument
from pymongo import errors as mongo_errors

from persist_core.errors import (
    BackendUnavailableError,
    ConfigurationError,
    InvalidValueError,
    PersistError,
)
from persist_core.urls import mask_url

__all__ = ["DRIVER_ERRORS", "translate"]

#: What the backend catches around a driver call. ``DocumentTooLarge`` (a command or document over the
#: server's BSON limit, raised by pymongo before sending) is a ``bson.errors.InvalidDocument``, not a
#: ``PyMongoError``: catching ``PyMongoError`` alone let it escape untranslated.
DRIVER_ERRORS = (mongo_errors.PyMongoError, InvalidDocument)

# OperationFailure codes that mean "this configuration cannot work": bad credentials, missing rights.
_AUTH_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed
# Codes of a server that is there but cannot serve now (shutting down, not primary, interrupted).
_UNAVAILABLE_CODES = frozenset({6, 7, 89, 91, 189, 10107, 11600, 11602, 13435, 13436})


def translate(exc: Exception, url: str, action: str) -> PersistError:
    """The :class:`PersistError` for a driver error ``exc`` raised while doing ``action`` on ``url``.

    The caller raises the result ``from exc``. Messages name the URL with its password masked, and the
    driver's own text is masked too (a URI may appear in it).
    """
    where = mask_url(url)
    detail = mask_url(f"{type(exc).__name__}: {exc}")
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
