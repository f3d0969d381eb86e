"""Which backend serves a URL scheme, imported lazily so the core needs no database driver.

Built-in schemes are listed here; third-party adapters plug in through the ``backtest_persist.backends``
entry-point group (name = scheme, value = ``module:factory``) or :func:`register_backend` at run time.
A factory is called as ``factory(url, **options)`` and returns an unopened :class:`Backend`.

Some schemes also have a native asyncio backend (:data:`_ASYNC_BUILTIN`, :func:`register_async_backend`),
which ``asetup()`` uses instead of running the sync backend in the thread pool. An async factory is called as
``factory(url, sync=backend, **options)``, where ``backend`` is the opened sync backend of the same URL that
the facade keeps (for schema checks and ownership leases), and returns an unopened
:class:`~persist_core.async_backend.AsyncBackend`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from persist_core.async_backend import AsyncBackend
from persist_core.backend import Backend
from persist_core.errors import ConfigurationError
from persist_core.urls import check_credentials, mask_url, scheme_of

__all__ = [
    "AsyncBackendFactory",
    "BackendFactory",
    "create_async_backend",
    "create_backend",
    "register_async_backend",
    "register_backend",
]

BackendFactory = Callable[..., Backend]
AsyncBackendFactory = Callable[..., AsyncBackend]

_BUILTIN: dict[str, str] = {
    "file": "persist_core.backends.file:FileBackend.from_url",
    "memory": "persist_core.backends.memory:MemoryBackend.from_url",
    "jsonl": "persist_core.backends.jsonl:JsonlBackend.from_url",
    "sqlite": "persist_sql:SqlBackend.from_url",
    "postgresql": "persist_sql:SqlBackend.from_url",
    "postgres": "persist_sql:SqlBackend.from_url",
    "mysql": "persist_sql:SqlBackend.from_url",
    "mariadb": "persist_sql:SqlBackend.from_url",
    "mongodb": "persist_mongo:MongoBackend.from_url",
}
#: The extra that brings a scheme's drivers, for the error message when they are missing.
_EXTRA: dict[str, str] = {
    "sqlite": "sql",
    "postgresql": "postgres",
    "postgres": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "mongodb": "mongo",
}
#: Schemes with a native asyncio backend; every other scheme runs its sync backend in the thread pool.
_ASYNC_BUILTIN: dict[str, str] = {
    "postgresql": "persist_sql:AsyncSqlBackend.from_url",
    "postgres": "persist_sql:AsyncSqlBackend.from_url",
    "mongodb": "persist_mongo:AsyncMongoBackend.from_url",
}
#: The driver that the native asyncio backend of a scheme is built on (another ``+driver`` gets the pool).
_ASYNC_DRIVER: dict[str, str] = {"postgresql": "psycopg", "postgres": "psycopg"}
_registered: dict[str, BackendFactory] = {}
_registered_async: dict[str, AsyncBackendFactory] = {}
ENTRY_POINT_GROUP = "backtest_persist.backends"


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Make ``scheme://...`` URLs open backends built by ``factory(url, **options)``."""
    _registered[scheme.lower()] = factory


def register_async_backend(scheme: str, factory: AsyncBackendFactory) -> None:
    """Make ``asetup()`` serve ``scheme://...`` URLs with ``factory(url, sync=backend, **options)``."""
    _registered_async[scheme.lower()] = factory


def create_async_backend(url: str, *, sync: Backend, **options: Any) -> AsyncBackend | None:
    """The native asyncio backend for ``url`` (unopened), or ``None`` if its scheme has none.

    ``sync`` is the opened sync backend of ``url``, which the native one may use for schema checks and
    ownership leases. A SQLAlchemy URL naming another driver than the built-in one (``postgresql+pg8000``)
    has no native backend either.
    """
    scheme = scheme_of(url)
    factory = _registered_async.get(scheme)
    if factory is None:
        target = _ASYNC_BUILTIN.get(scheme)
        driver = url.partition(":")[0].partition("+")[2].lower()
        if target is None or driver not in ("", _ASYNC_DRIVER.get(scheme, "")):
            return None
        try:
            factory = _load(target)
        except ImportError:  # the sync backend opened, so this is a missing optional piece: use the pool
            return None
    try:
        return factory(url, sync=sync, **options)
    except TypeError as exc:
        raise ConfigurationError(f"bad options for the asyncio {scheme!r} backend ({mask_url(url)}): {exc}") from exc


def _load(target: str) -> Any:
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    return obj


def _factory(scheme: str, url: str) -> BackendFactory:
    if scheme in _registered:
        return _registered[scheme]
    target = _BUILTIN.get(scheme)
    if target is None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name.lower() == scheme:
                factory: BackendFactory = ep.load()
                return factory
        known = ", ".join(sorted({*_BUILTIN, *_registered}))
        raise ConfigurationError(f"unknown backend URL scheme {scheme!r} in {mask_url(url)!r}; known: {known}")
    try:
        loaded: BackendFactory = _load(target)
    except ImportError as exc:
        extra = _EXTRA.get(scheme, "all")
        raise ConfigurationError(
            f"the {scheme!r} backend needs drivers that are not installed ({exc.name or exc}): "
            f'pip install "backtest-persist[{extra}]"'
        ) from exc
    return loaded


def create_backend(url: str, **options: Any) -> Backend:
    """Build (but do not open) the backend for ``url``."""
    scheme = scheme_of(url)
    check_credentials(url)
    factory = _factory(scheme, url)
    try:
        return factory(url, **options)
    except TypeError as exc:
        raise ConfigurationError(
            f"bad options for the {scheme!r} backend ({mask_url(url)}): {exc}; known: {_known_options(factory)}"
        ) from exc


def _known_options(factory: BackendFactory) -> str:
    """The keyword options ``factory`` takes, read from its signature (and its class's, for ``from_url``)."""
    names: list[str] = []
    targets: list[Any] = [factory]
    owner = getattr(factory, "__self__", None)
    if isinstance(owner, type):
        targets.append(owner)  # a class's signature is its constructor's, without self
    for target in targets:
        try:
            parameters = list(inspect.signature(target).parameters.values())
        except (TypeError, ValueError):
            continue
        for parameter in parameters[1:]:  # the first one is the URL
            if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD) and parameter.name != "url":
                names.append(parameter.name)
    return ", ".join(dict.fromkeys(names)) or "none"
