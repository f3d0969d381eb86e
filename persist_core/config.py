"""Which URL serves each (mode, domain): ``setup()`` arguments, then environment variables, then defaults.

Precedence, most specific first (CONTRACTS.md 7):

1. ``setup(live={...}, backtest={...})`` (per mode and domain), ``setup(domains={...})`` (per domain),
   ``setup(url=...)`` (everything);
2. ``PERSIST_<MODE>_<DOMAIN>_URL``, ``PERSIST_<DOMAIN>_URL``, ``PERSIST_URL``;
3. upstream's ``CC_POSTGRES_CONNECTION_STRING``, then ``CC_MONGO_CONNECTION_STRING`` (everything);
4. the default ``file:./dump``.

The Redis URL for the Mongo backend: ``setup(redis_url=...)``, ``PERSIST_REDIS_URL``, upstream's
``CC_REDIS_HOST``/``CC_REDIS_PORT``/``CC_REDIS_USER``/``CC_REDIS_PASSWORD``.

Any other ``PERSIST_*_URL`` variable is a :class:`ConfigurationError`, except ``PERSIST_TEST_*``, which
names the servers of the test suite and the bench (``scripts/services.sh env``).

Modes are kept apart (CONTRACTS.md 3.7): the domains whose key carries no mode (``DomainSpec.isolate_modes``:
signal, schedule, strategy, risk, partial, breakeven) are routed in backtest mode only by a per-mode setting
(``setup(backtest={...})``, ``PERSIST_BACKTEST_<DOMAIN>_URL``) and otherwise to a memory backend of their own,
as upstream never persists them in backtests. A configuration that would still put a backtest's and a live
process's records of such a domain in one storage is refused unless ``share_modes=True`` (or
``PERSIST_SHARE_MODES=1``) says that this is meant.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

from persist_core.domains import DOMAINS, domain
from persist_core.errors import ConfigurationError
from persist_core.urls import UrlLike, mask_url, url_text

__all__ = [
    "BACKTEST_ISOLATED_URL",
    "DEFAULT_URL",
    "MODES",
    "SHARE_MODES_ENV",
    "TEST_SERVER_PREFIX",
    "resolve_redis_url",
    "resolve_routes",
    "same_storage",
    "share_modes_from",
    "storage_identity",
]

MODES = ("backtest", "live")
DEFAULT_URL = "file:./dump"
#: Where a backtest keeps the domains of ``DomainSpec.isolate_modes`` unless configured per mode.
BACKTEST_ISOLATED_URL = "memory://backtest-isolated"
#: The environment variable of the ``share_modes`` opt-in.
SHARE_MODES_ENV = "PERSIST_SHARE_MODES"
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("", "0", "false", "no", "off")
_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306, "mongodb": 27017}


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigurationError(f"unknown mode {mode!r}; the modes are: {', '.join(MODES)}")
    return mode


def _check_urls(mapping: Mapping[str, UrlLike] | None, what: str) -> dict[str, str]:
    texts: dict[str, str] = {}
    for name, url in (mapping or {}).items():
        domain(name)
        texts[name] = url_text(url, f"{what}[{name!r}]")
        if not texts[name]:
            raise ConfigurationError(f"{what}[{name!r}] must be a non-empty URL string")
    return texts


def _upstream_url(env: Mapping[str, str]) -> str | None:
    postgres = env.get("CC_POSTGRES_CONNECTION_STRING")
    if postgres:
        scheme, sep, rest = postgres.partition("://")
        if sep and scheme in ("postgres", "postgresql"):
            return f"postgresql+psycopg://{rest}"
        return postgres
    return env.get("CC_MONGO_CONNECTION_STRING") or None


#: Variables under this prefix name the test servers of the test suite and the bench, never a route.
TEST_SERVER_PREFIX = "PERSIST_TEST_"


def _names_a_route(key: str) -> bool:
    """Whether ``key`` is meant as a ``PERSIST_[<MODE>_]<DOMAIN>_URL`` route (and so must name a real one).

    Every other ``PERSIST_*_URL`` is checked rather than ignored: a typo (``PERSIST_CANDLES_URL``) would
    otherwise send live state to the default backend without a word.
    """
    return (
        key.startswith("PERSIST_")
        and key.endswith("_URL")
        and key not in ("PERSIST_URL", "PERSIST_REDIS_URL")
        and not key.startswith(TEST_SERVER_PREFIX)
    )


def share_modes_from(share_modes: bool | None, env: Mapping[str, str]) -> bool:
    """The ``share_modes`` opt-in: the ``setup()`` argument, else ``PERSIST_SHARE_MODES``, else off."""
    if share_modes is not None:
        if type(share_modes) is not bool:
            raise ConfigurationError(f"share_modes must be True or False, not {share_modes!r}")
        return share_modes
    word = env.get(SHARE_MODES_ENV, "").strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ConfigurationError(f"{SHARE_MODES_ENV}={word!r} is not a boolean: use 1/0, true/false, yes/no, on/off")


def storage_identity(url: str) -> tuple[str, ...]:
    """What storage a URL names, so that two spellings of one folder or database compare equal.

    Approximate on purpose, in the safe direction: two URLs are taken as one storage unless they differ in
    something that surely tells storages apart (scheme family, path, host, port, database).
    """
    scheme, _, rest = url.partition(":")
    family = scheme.split("+", 1)[0].lower()
    if family in ("file", "jsonl"):
        from persist_core.urls import path_of

        return ("path", os.path.realpath(path_of(url, "./dump")))
    if family == "sqlite":
        path = rest.split("?", 1)[0]
        path = path[3:] if path.startswith("///") else path
        if path in ("", "/", ":memory:", "/:memory:"):
            return ("url", url)  # an in-memory SQLite database is private to its engine
        return ("path", os.path.realpath(path))
    if family == "memory":
        return ("url", url.split("?", 1)[0])
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(family, 0)
    except ValueError:
        port = 0
    return (family, host, str(port), parts.path.rstrip("/"))


def same_storage(first: str, second: str) -> bool:
    """Whether two backend URLs name the same storage (see :func:`storage_identity`).

    ``null://`` stores nothing, so it is no storage that two modes could share.
    """
    if first.partition(":")[0].lower() == "null" or second.partition(":")[0].lower() == "null":
        return False
    return first == second or storage_identity(first) == storage_identity(second)


def resolve_routes(
    url: UrlLike | None = None,
    domains: Mapping[str, UrlLike] | None = None,
    modes: Mapping[str, Mapping[str, UrlLike]] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    share_modes: bool = False,
) -> dict[tuple[str, str], str]:
    """Return the URL for every (mode, domain) pair.

    Raises:
        ConfigurationError: a bad name or URL, or (without ``share_modes``) a configuration that puts a
            backtest's and live records of a mode-free domain in one storage.
    """
    env = env if env is not None else {}
    url = None if url is None else url_text(url, "url")
    domains = _check_urls(domains, "domains")
    per_mode = {_check_mode(m): _check_urls(mapping, m) for m, mapping in (modes or {}).items()}
    for key in env:
        if _names_a_route(key):
            parts = key[len("PERSIST_") : -len("_URL")].lower().split("_")
            name = parts[-1]
            if name not in DOMAINS or (len(parts) == 2 and parts[0] not in MODES) or len(parts) > 2:
                raise ConfigurationError(
                    f"environment variable {key} names no mode/domain; use PERSIST_<DOMAIN>_URL or "
                    f"PERSIST_<MODE>_<DOMAIN>_URL with a mode of {MODES} and a domain of {', '.join(DOMAINS)}"
                )
    fallback = url or env.get("PERSIST_URL") or _upstream_url(env) or DEFAULT_URL
    routes: dict[tuple[str, str], str] = {}
    for mode in MODES:
        for name, spec in DOMAINS.items():
            argument = per_mode.get(mode, {}).get(name)
            env_mode = None if url else env.get(f"PERSIST_{mode.upper()}_{name.upper()}_URL")
            if mode == "backtest" and spec.isolate_modes and not share_modes:
                # Only a setting that names the backtest mode routes these; a shared one would reach live state.
                routes[(mode, name)] = argument or env_mode or BACKTEST_ISOLATED_URL
                continue
            routes[(mode, name)] = (
                argument
                or domains.get(name)
                or env_mode
                or (None if url else env.get(f"PERSIST_{name.upper()}_URL"))
                or fallback
            )
    if not share_modes:
        for name, spec in DOMAINS.items():
            live_url, backtest_url = routes[("live", name)], routes[("backtest", name)]
            if spec.isolate_modes and same_storage(live_url, backtest_url):
                raise ConfigurationError(
                    f"the {name!r} domain would keep backtest and live records in one storage "
                    f"({mask_url(live_url)}), so a backtest could overwrite a live position: route backtest "
                    f"{name} elsewhere, or opt in with setup(share_modes=True) / {SHARE_MODES_ENV}=1"
                )
    return routes


def resolve_redis_url(redis_url: str | None, env: Mapping[str, str]) -> str:
    """The Redis URL for the Mongo backend's id cache."""
    if redis_url:
        return redis_url
    if env.get("PERSIST_REDIS_URL"):
        return env["PERSIST_REDIS_URL"]
    host = env.get("CC_REDIS_HOST") or "127.0.0.1"
    port = env.get("CC_REDIS_PORT") or "6379"
    user = env.get("CC_REDIS_USER") or ""
    password = env.get("CC_REDIS_PASSWORD") or ""
    auth = ""
    if user or password:
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    return f"redis://{auth}{host}:{port}/0"
