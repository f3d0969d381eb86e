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
from persist_core.urls import check_credentials, driver_of, mask_url, scheme_of

__all__ = [
    "SQL_DRIVERS",
    "AsyncBackendFactory",
    "BackendFactory",
    "check_driver",
    "create_async_backend",
    "create_backend",
    "missing_driver",
    "register_async_backend",
    "register_backend",
]

BackendFactory = Callable[..., Backend]
AsyncBackendFactory = Callable[..., AsyncBackend]

_BUILTIN: dict[str, str] = {
    "file": "persist_core.backends.file:FileBackend.from_url",
    "memory": "persist_core.backends.memory:MemoryBackend.from_url",
    "null": "persist_core.backends.null:NullBackend.from_url",
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
#: The drivers that persist_sql serves for each SQL scheme ("": none named, persist_sql picks one) and the
#: command that installs each. Any other ``scheme+driver`` is refused: a driver SQLAlchemy knows but the
#: backend was never tested on (an asyncio one, psycopg2, pg8000) fails late and obscurely otherwise.
SQL_DRIVERS: dict[str, dict[str, str]] = {
    "sqlite": {"": "sql", "pysqlite": "sql"},
    "postgresql": {"": "postgres", "psycopg": "postgres"},
    "postgres": {"": "postgres", "psycopg": "postgres"},
    "mysql": {"": "mysql", "pymysql": "mysql", "mysqldb": "mysqlclient"},
    "mariadb": {"": "mysql", "pymysql": "mysql", "mysqldb": "mysqlclient"},
}
#: How to install what an entry of :data:`_EXTRA` / :data:`SQL_DRIVERS` names: an extra, or a package.
_INSTALL = {"mysqlclient": "pip install mysqlclient (it builds against libmariadb-dev: see docs/sql.md)"}
#: Schemes with a native asyncio backend; every other scheme runs its sync backend in the thread pool.
_ASYNC_BUILTIN: dict[str, str] = {
    "postgresql": "persist_sql:AsyncSqlBackend.from_url",
    "postgres": "persist_sql:AsyncSqlBackend.from_url",
    "mysql": "persist_sql:AsyncSqlBackend.from_url",
    "mariadb": "persist_sql:AsyncSqlBackend.from_url",
    "mongodb": "persist_mongo:AsyncMongoBackend.from_url",
}
#: The driver that the native asyncio backend of a scheme is built on (another ``+driver`` gets the pool).
#: MariaDB/MySQL: the sync URL's PyMySQL (the default driver of ``mysql://`` without mysqlclient); the asyncio
#: I/O runs on asyncmy (persist_sql._async_drivers).
_ASYNC_DRIVER: dict[str, str] = {
    "postgresql": "psycopg",
    "postgres": "psycopg",
    "mysql": "pymysql",
    "mariadb": "pymysql",
}
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


def _install_command(name: str) -> str:
    return _INSTALL.get(name) or f'pip install "backtest-persist[{name}]"'


def check_driver(url: str) -> None:
    """Refuse a SQL URL naming a driver the SQL backend does not serve (``postgresql+asyncpg://``).

    Raises:
        ConfigurationError: naming the driver and the spellings that are served (password masked).
    """
    scheme, driver = scheme_of(url), driver_of(url)
    drivers = SQL_DRIVERS.get(scheme)
    if drivers is None or driver in drivers:
        return
    served = ", ".join(f"{scheme}+{name}://" if name else f"{scheme}://" for name in drivers)
    asyncio_note = (
        "; the asyncio face (asetup) runs on psycopg's asyncio connection with the same postgresql+psycopg:// URL"
        if scheme in _ASYNC_DRIVER
        else ""
    )
    raise ConfigurationError(
        f"the driver {driver!r} of {mask_url(url)!r} is not supported by the SQL backend; use one of: "
        f"{served}{asyncio_note}"
    )


def missing_driver(url: str, missing: str) -> ConfigurationError:
    """The error for a backend of ``url`` whose driver (the module ``missing``) is not installed.

    It names the command that installs it: the scheme's extra, or the driver's package.
    """
    scheme = scheme_of(url)
    name = SQL_DRIVERS.get(scheme, {}).get(driver_of(url)) or _EXTRA.get(scheme, "all")
    return ConfigurationError(
        f"the {scheme!r} backend needs drivers that are not installed ({missing}) for {mask_url(url)!r}: "
        f"{_install_command(name)}"
    )


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
        raise missing_driver(url, exc.name or str(exc)) from exc
    return loaded


def create_backend(url: str, **options: Any) -> Backend:
    """Build (but do not open) the backend for ``url``."""
    scheme = scheme_of(url)
    check_credentials(url)
    check_driver(url)
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
