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
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from persist_core.domains import DOMAINS, domain
from persist_core.errors import ConfigurationError

__all__ = ["DEFAULT_URL", "MODES", "TEST_SERVER_PREFIX", "resolve_redis_url", "resolve_routes"]

MODES = ("backtest", "live")
DEFAULT_URL = "file:./dump"


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigurationError(f"unknown mode {mode!r}; the modes are: {', '.join(MODES)}")
    return mode


def _check_urls(mapping: Mapping[str, str] | None, what: str) -> Mapping[str, str]:
    mapping = mapping or {}
    for name, url in mapping.items():
        domain(name)
        if not isinstance(url, str) or not url:
            raise ConfigurationError(f"{what}[{name!r}] must be a non-empty URL string")
    return mapping


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


def resolve_routes(
    url: str | None = None,
    domains: Mapping[str, str] | None = None,
    modes: Mapping[str, Mapping[str, str]] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[tuple[str, str], str]:
    """Return the URL for every (mode, domain) pair."""
    env = env if env is not None else {}
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
        for name in DOMAINS:
            routes[(mode, name)] = (
                per_mode.get(mode, {}).get(name)
                or domains.get(name)
                or (None if url else env.get(f"PERSIST_{mode.upper()}_{name.upper()}_URL"))
                or (None if url else env.get(f"PERSIST_{name.upper()}_URL"))
                or fallback
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
