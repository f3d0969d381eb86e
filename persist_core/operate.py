"""Looking at stored state without running a strategy (CONTRACTS.md 3.8): what the ``ls`` and ``show``
commands print, as a Python API.

Both resolve their backends as ``setup()`` does (an explicit URL, else ``PERSIST_URL`` and the other
``PERSIST_*`` variables, else the file backend under ``./dump``), open them without claiming ownership (they
only read), and use the listing operations of :class:`~persist_core.backend.Backend`. A backend that keeps
nothing between processes (``memory://``, ``null://``) has nothing to show and is left out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from persist_core.backend import Backend, Key
from persist_core.config import resolve_redis_url, resolve_routes
from persist_core.domains import DOMAINS, DomainSpec, FieldType
from persist_core.errors import ConfigurationError
from persist_core.registry import create_backend
from persist_core.urls import mask_url, scheme_of
from persist_core.validation import check_field, decode_stored

__all__ = ["StoredContext", "StoredRecord", "context_records", "inventory", "parse_context"]


@dataclass(frozen=True)
class StoredContext:
    """One context of one domain in one storage, and how many records it holds (removed ones included)."""

    domain: str
    url: str  #: password masked
    context: dict[str, Any]
    records: int


@dataclass(frozen=True)
class StoredRecord:
    """One stored record, decoded."""

    key: dict[str, Any]
    value: Any
    when: int | None
    removed: bool


@contextmanager
def _storages(url: str | None, env: Mapping[str, str] | None, mode: str | None) -> Iterator[dict[str, Any]]:
    """``{url: (opened backend, [domain names])}`` of the routes of ``mode`` (both when ``None``)."""
    environ = os.environ if env is None else env
    routes = resolve_routes(url, None, None, environ, share_modes=True)  # reading only: no mode is at risk
    by_url: dict[str, list[str]] = {}
    for (route_mode, name), route_url in sorted(routes.items()):
        if mode is None or route_mode == mode:
            names = by_url.setdefault(route_url, [])
            if name not in names:
                names.append(name)
    with ExitStack() as stack:
        opened: dict[str, Any] = {}
        for route_url, names in by_url.items():
            options: dict[str, Any] = {}
            if scheme_of(route_url) == "mongodb":
                options["redis_url"] = resolve_redis_url(None, environ)
            backend = create_backend(route_url, **options)
            if not backend.capabilities.shared_between_processes:
                continue  # process-local: nothing stored outside this process
            backend.open()
            stack.callback(backend.close)
            opened[route_url] = (backend, names)
        yield opened


def _fields(spec: DomainSpec, key: Key) -> dict[str, Any]:
    names = [field.name for field in (*spec.context, *([spec.item] if spec.item else []))]
    return dict(zip(names, key, strict=False))


def inventory(
    url: str | None = None, *, env: Mapping[str, str] | None = None, domains: Sequence[str] | None = None
) -> Iterator[StoredContext]:
    """Every stored context of every domain (or of ``domains``), in domain and key order, with its count.

    Raises:
        ConfigurationError: an unknown domain, or a backend that cannot list (``Capabilities.listing``).
    """
    for name in domains or ():
        if name not in DOMAINS:
            raise ConfigurationError(f"unknown domain {name!r}; known: {', '.join(DOMAINS)}")
    with _storages(url, env, None) as storages:
        for route_url, (backend, names) in storages.items():
            _require_listing(backend)
            for name in names:
                if domains and name not in domains:
                    continue
                spec = DOMAINS[name]
                after: Key | None = None
                while True:
                    page = backend.list_contexts(spec, after=after)
                    for context, count in page:
                        yield StoredContext(name, mask_url(route_url), _fields(spec, context), count)
                    if not page:
                        break
                    after = page[-1][0]


def parse_context(spec: DomainSpec, pairs: Sequence[str]) -> Key:
    """The context of ``spec`` from ``field=value`` words (``true``/``false`` for flags), validated.

    Raises:
        ConfigurationError: a word that is not ``field=value``, an unknown or missing field, a bad value.
    """
    given: dict[str, str] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ConfigurationError(f"expected field=value, got {pair!r}")
        given[name] = text
    known = [field.name for field in spec.context]
    unknown = sorted(set(given) - set(known))
    missing = [name for name in known if name not in given]
    if unknown or missing:
        raise ConfigurationError(
            f"the {spec.name} domain's context is {' '.join(f'{n}=...' for n in known) or '(none)'}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
    values: list[Any] = []
    for field in spec.context:
        text = given[field.name]
        value: Any = text
        if field.type is FieldType.BOOL:
            if text.lower() not in ("true", "false"):
                raise ConfigurationError(f"{field.name} must be true or false, not {text!r}")
            value = text.lower() == "true"
        elif field.type is FieldType.INT:
            try:
                value = int(text)
            except ValueError:
                raise ConfigurationError(f"{field.name} must be an integer, not {text!r}") from None
        try:
            values.append(check_field(field, value))
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
    return tuple(values)


def context_records(
    domain: str,
    context: Sequence[str],
    url: str | None = None,
    *,
    mode: str = "live",
    env: Mapping[str, str] | None = None,
) -> list[StoredRecord]:
    """The records of one context (``field=value`` words) of ``domain`` in ``mode``'s storage, in key order,
    removed ones included.

    Raises:
        ConfigurationError: an unknown domain or mode, a bad context, or a backend that cannot list.
    """
    spec = DOMAINS.get(domain)
    if spec is None:
        raise ConfigurationError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    if mode not in ("live", "backtest"):
        raise ConfigurationError(f"unknown mode {mode!r}; known: live, backtest")
    key = parse_context(spec, context)
    with _storages(url, env, mode) as storages:
        for backend, names in storages.values():
            if domain not in names:
                continue
            if spec.item is None:
                record = backend.get(spec, key)
                pairs = [] if record is None else [(key, record)]
            else:
                pairs = [((*key, item), record) for item, record in backend.scan(spec, key)]
            return [StoredRecord(_fields(spec, k), decode_stored(spec, r.payload), r.when, r.removed) for k, r in pairs]
    return []


def _require_listing(backend: Backend) -> None:
    if not backend.capabilities.listing:
        raise ConfigurationError(f"the backend {backend.url} cannot list what it stores (Capabilities.listing)")
