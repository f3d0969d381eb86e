"""The one error hierarchy of backtest-persist.

Every error the library raises on purpose is a :class:`PersistError`. Where a builtin fits, the error
also subclasses it, so ``except ValueError`` keeps working for code that does not know this library.
Backends translate driver errors into these classes in exactly one function each, chaining the
original with ``raise ... from``.
"""

from __future__ import annotations

__all__ = [
    "BackendTimeoutError",
    "BackendUnavailableError",
    "ClosedError",
    "ConfigurationError",
    "CorruptRecordError",
    "DumpFormatError",
    "InvalidKeyError",
    "InvalidValueError",
    "OwnershipError",
    "PersistError",
    "SchemaAheadError",
    "SchemaBehindError",
    "SchemaError",
    "UnitIncompleteError",
    "UnitOfWorkError",
]


class PersistError(Exception):
    """Root of every error raised by backtest-persist."""


class InvalidKeyError(PersistError, ValueError):
    """A context field or item key is not valid (type, length, control character, unknown interval).

    Attributes:
        field: the name of the offending key field, e.g. ``"symbol"``.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid key field {field!r}: {reason}")


class InvalidValueError(PersistError, ValueError):
    """A value is not a storable JSON document.

    Attributes:
        path: where inside the value the problem is, JSONPath-like (``$.orders[3].price``).
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"invalid value at {path}: {reason}")


class BackendUnavailableError(PersistError, ConnectionError):
    """The backend cannot be reached (server down, timeout, refused connection).

    The message names the URL with its password masked.
    """


class BackendTimeoutError(BackendUnavailableError, TimeoutError):
    """An operation did not complete within the backend's deadline (its ``timeout`` option).

    Raised for a frozen or unreachable server, a lost connection that does not answer, or a lock held by
    someone else. The message names the operation and the URL (password masked). Whether a write that
    timed out took effect is unknown: see docs/asyncio.md ("What to retry").
    """


class SchemaError(PersistError):
    """The storage schema does not match what this version of the code expects."""


class SchemaBehindError(SchemaError):
    """The database schema is older than this code; the message names the upgrade command."""


class SchemaAheadError(SchemaError):
    """The database schema is newer than this code; refuse to run rather than corrupt it."""


class ConfigurationError(PersistError):
    """Bad configuration: unknown domain, mode or URL scheme, missing extra, bad option."""


class CorruptRecordError(PersistError):
    """A stored record cannot be decoded. The record is kept (quarantined where the backend can)."""


class DumpFormatError(PersistError, ValueError):
    """A line of an export file (docs/export-format.md) is not valid; nothing of the file was imported.

    Attributes:
        line: the 1-based number of the offending line (0 when the file as a whole is at fault).
    """

    def __init__(self, where: str, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"{where}, line {line}: {reason}" if line else f"{where}: {reason}")


class OwnershipError(PersistError):
    """Another live process owns the state, or this process lost ownership (CONTRACTS.md 3.7).

    Raised before anything is written. The message names the holder (host, pid, since).
    """


class ClosedError(PersistError, RuntimeError):
    """The :class:`~persist_core.persist.Persist` facade was closed: by ``close()``, the end of its ``with``
    block, or a later ``setup()`` that replaced it. Its stores refuse every call rather than reopen the
    storage behind the back of the facade that replaced it; the message says which of these happened.
    """


class UnitOfWorkError(PersistError, RuntimeError):
    """A unit of work was misused: a read through its stores, or a write after it was committed or discarded.

    Raised before anything is written.
    """


class UnitIncompleteError(PersistError):
    """A unit of work whose domains route to several backends was applied on some of them only.

    Each backend's part is applied atomically, one backend after another; this is raised when a part after the
    first failed. ``__cause__`` is the failure.

    Attributes:
        applied: the storages (URLs, password masked) whose part is stored whole.
        not_applied: the storages whose part is not stored at all: the one that failed first, then the rest.
    """

    def __init__(self, applied: list[str], not_applied: list[str], error: Exception) -> None:
        self.applied = applied
        self.not_applied = not_applied
        super().__init__(
            f"unit of work applied in part: stored on {', '.join(applied)}; not stored on {', '.join(not_applied)} "
            f"({type(error).__name__}: {error})"
        )
