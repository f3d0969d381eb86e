"""``setup()`` and the :class:`Persist` facade that hands out typed stores per mode and domain."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TypeVar

from persist_core.backend import Backend
from persist_core.config import MODES, resolve_redis_url, resolve_routes, share_modes_from
from persist_core.domains import DOMAINS, DomainSpec, domain
from persist_core.errors import ConfigurationError
from persist_core.guarded import OwnedBackend, acquire_owner, release_owner
from persist_core.ownership import DEFAULT_LEASE_SECONDS
from persist_core.registry import create_backend
from persist_core.stores import (
    BucketStore,
    CandleStore,
    Clock,
    CollectionStore,
    KeyedStore,
    SlotStore,
    Store,
    make_store,
    wall_clock_ms,
)
from persist_core.urls import mask_url, scheme_of
from persist_core.validation import DEFAULT_MAX_VALUE_BYTES

__all__ = ["ModeStores", "Persist", "get_persist", "setup"]

log = logging.getLogger("persist")
_S = TypeVar("_S", bound=Store)


class ModeStores:
    """The 16 typed stores of one mode (``persist.live`` / ``persist.backtest``).

    Each accessor takes the domain's context fields as keywords and returns a store bound to them.
    """

    def __init__(self, persist: Persist, mode: str) -> None:
        self._persist = persist
        self.mode = mode

    def store(self, domain_name: str, **context: Any) -> Store:
        """The store of ``domain_name`` for ``context``, e.g. ``store("signal", symbol=..., ...)``."""
        spec = domain(domain_name)
        return self._persist._make_store(self.mode, spec, context)

    def signal(self, *, symbol: str, strategy_name: str, exchange_name: str) -> SlotStore:
        """The open position of a strategy on a symbol (slot; missing reads ``None``)."""
        return self._slot("signal", symbol=symbol, strategy_name=strategy_name, exchange_name=exchange_name)

    def schedule(self, *, symbol: str, strategy_name: str, exchange_name: str) -> SlotStore:
        """The scheduled (limit-order) signal (slot; missing reads ``None``)."""
        return self._slot("schedule", symbol=symbol, strategy_name=strategy_name, exchange_name=exchange_name)

    def strategy(self, *, symbol: str, strategy_name: str, exchange_name: str) -> SlotStore:
        """Deferred strategy state: commit queue, retry counters, pause flag (slot)."""
        return self._slot("strategy", symbol=symbol, strategy_name=strategy_name, exchange_name=exchange_name)

    def risk(self, *, risk_name: str, exchange_name: str) -> SlotStore:
        """Open positions of a risk profile, position key -> position (slot; missing reads ``{}``)."""
        return self._slot("risk", risk_name=risk_name, exchange_name=exchange_name)

    def partial(self, *, symbol: str, strategy_name: str, exchange_name: str) -> KeyedStore:
        """Profit/loss levels reached, per signal id (missing reads ``{}``)."""
        return self._typed(
            KeyedStore, "partial", symbol=symbol, strategy_name=strategy_name, exchange_name=exchange_name
        )

    def breakeven(self, *, symbol: str, strategy_name: str, exchange_name: str) -> KeyedStore:
        """Breakeven reached, per signal id (missing reads ``{}``)."""
        return self._typed(
            KeyedStore, "breakeven", symbol=symbol, strategy_name=strategy_name, exchange_name=exchange_name
        )

    def candle(self, *, symbol: str, interval: str, exchange_name: str) -> CandleStore:
        """The immutable candle cache of a symbol and interval (first write wins)."""
        return self._typed(CandleStore, "candle", symbol=symbol, interval=interval, exchange_name=exchange_name)

    def storage(self, *, backtest: bool) -> CollectionStore:
        """Public signal rows, upserted by ``id``."""
        return self._typed(CollectionStore, "storage", backtest=backtest)

    def notification(self, *, backtest: bool) -> CollectionStore:
        """Notifications, upserted by ``id``."""
        return self._typed(CollectionStore, "notification", backtest=backtest)

    def log(self) -> CollectionStore:
        """Structured log entries, append-only by ``id``."""
        return self._typed(CollectionStore, "log")

    def measure(self, *, bucket: str) -> BucketStore:
        """Cached LLM/API responses of a bucket (soft delete)."""
        return self._typed(BucketStore, "measure", bucket=bucket)

    def interval(self, *, bucket: str) -> BucketStore:
        """Time-window markers of a bucket (soft delete)."""
        return self._typed(BucketStore, "interval", bucket=bucket)

    def memory(self, *, signal_id: str, bucket_name: str) -> BucketStore:
        """Persistent LLM context entries of a signal (soft delete)."""
        return self._typed(BucketStore, "memory", signal_id=signal_id, bucket_name=bucket_name)

    def recent(
        self, *, symbol: str, strategy_name: str, exchange_name: str, frame_name: str, backtest: bool
    ) -> SlotStore:
        """The last-seen signal of a context (slot)."""
        return self._slot(
            "recent",
            symbol=symbol,
            strategy_name=strategy_name,
            exchange_name=exchange_name,
            frame_name=frame_name,
            backtest=backtest,
        )

    def state(self, *, signal_id: str, bucket_name: str) -> SlotStore:
        """Arbitrary strategy state of a signal (slot)."""
        return self._slot("state", signal_id=signal_id, bucket_name=bucket_name)

    def session(
        self, *, strategy_name: str, exchange_name: str, frame_name: str, symbol: str, backtest: bool
    ) -> SlotStore:
        """Cached indicator calculations (slot)."""
        return self._slot(
            "session",
            strategy_name=strategy_name,
            exchange_name=exchange_name,
            frame_name=frame_name,
            symbol=symbol,
            backtest=backtest,
        )

    def _slot(self, name: str, **context: Any) -> SlotStore:
        return self._typed(SlotStore, name, **context)

    def _typed(self, cls: type[_S], name: str, **context: Any) -> _S:
        store = self._persist._make_store(self.mode, DOMAINS[name], context)
        if not isinstance(store, cls):  # pragma: no cover - guarded by test_accessors_match_specs
            raise TypeError(f"{name} is served by {type(store).__name__}, not {cls.__name__}")
        return store


class Persist:
    """The configured persistence layer: a backend per (mode, domain) and typed stores on top.

    Obtain one with :func:`setup`. Stores are cheap to create and safe to share between threads.

    Live stores write through an ownership guard (CONTRACTS.md 3.7): the first live write to a backend's
    storage claims it for this process, and a second live process is refused with an
    :class:`~persist_core.errors.OwnershipError`. Backtest stores take no ownership.
    """

    def __init__(
        self,
        routes: Mapping[tuple[str, str], str],
        *,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        clock: Clock = wall_clock_ms,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        if type(max_value_bytes) is not int or max_value_bytes < 1:
            raise ConfigurationError("max_value_bytes must be a positive int")
        if not isinstance(lease_seconds, int | float) or isinstance(lease_seconds, bool) or not lease_seconds > 0:
            raise ConfigurationError(f"lease_seconds must be a positive number of seconds, not {lease_seconds!r}")
        self._routes = dict(routes)
        self._clock = clock
        self._max_bytes = max_value_bytes
        self._backends: dict[str, Backend] = {}
        self._owned: dict[str, OwnedBackend] = {}
        options = options or {}
        try:
            for url in dict.fromkeys(self._routes.values()):
                backend = create_backend(url, **options.get(scheme_of(url), {}))
                self._backends[url] = backend
            for (mode, name), url in self._routes.items():
                if not self._backends[url].capabilities.supports(name):
                    raise ConfigurationError(
                        f"the backend {mask_url(url)} does not store the {name!r} domain ({mode} mode); "
                        f"it stores only: {', '.join(sorted(self._backends[url].capabilities.domains or ()))}"
                    )
            for backend in self._backends.values():
                backend.open()
            self._guard_live_backends(lease_seconds)
        except BaseException:
            self.close()
            raise
        self.live = ModeStores(self, "live")
        self.backtest = ModeStores(self, "backtest")
        for (mode, name), url in sorted(self._routes.items()):
            log.debug("%s %s -> %s", mode, name, mask_url(url))

    def _guard_live_backends(self, lease_seconds: float) -> None:
        live: dict[str, list[str]] = {}
        for (mode, name), url in self._routes.items():
            if mode == "live":
                live.setdefault(url, []).append(name)
        for url, names in live.items():
            backend = self._backends[url]
            if backend.capabilities.ownership:
                self._owned[url] = OwnedBackend(backend, acquire_owner(backend, lease_seconds))
            elif backend.capabilities.shared_between_processes and not all(DOMAINS[n].first_write_wins for n in names):
                # Append-only domains (a jsonl log) cannot lose a write to a second process; others can.
                log.warning(
                    "%s keeps no ownership leases: a second live process writing %s would not be refused",
                    mask_url(url),
                    ", ".join(n for n in names if not DOMAINS[n].first_write_wins),
                )

    def mode(self, mode: str) -> ModeStores:
        """The stores of ``mode`` (``"live"`` or ``"backtest"``)."""
        if mode == "live":
            return self.live
        if mode == "backtest":
            return self.backtest
        raise ConfigurationError(f"unknown mode {mode!r}; the modes are: {', '.join(MODES)}")

    def backend(self, mode: str, domain_name: str) -> Backend:
        """The backend that serves ``domain_name`` in ``mode`` (bare: its writes take no ownership)."""
        self.mode(mode)
        domain(domain_name)
        return self._backends[self._routes[(mode, domain_name)]]

    def routes(self) -> list[tuple[str, str, str]]:
        """``(mode, domain, URL with password masked)`` for every pair."""
        return [(mode, name, mask_url(url)) for (mode, name), url in self._routes.items()]

    def claim_ownership(self) -> None:
        """Claim the live state now rather than at the first live write, to fail fast at start-up.

        Raises:
            OwnershipError: another live process owns one of the live backends' storage.
        """
        for owned in self._owned.values():
            owned.owner.ensure()

    def _make_store(self, mode: str, spec: DomainSpec, context: dict[str, Any]) -> Store:
        url = self._routes[(mode, spec.name)]
        backend: Backend = self._backends[url]
        if mode == "live":
            backend = self._owned.get(url, backend)
        return make_store(backend, spec, context, clock=self._clock, max_value_bytes=self._max_bytes)

    def close(self) -> None:
        """Release ownership and close every backend. Idempotent."""
        owned, self._owned = self._owned, {}
        for guarded in owned.values():
            release_owner(guarded.inner)
        for backend in self._backends.values():
            try:
                backend.close()
            except Exception:  # pragma: no cover - closing must not hide the error that led here
                log.exception("closing %r failed", backend)

    def __enter__(self) -> Persist:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_current: Persist | None = None
_current_lock = threading.Lock()


def setup(
    url: str | None = None,
    *,
    domains: Mapping[str, str] | None = None,
    live: Mapping[str, str] | None = None,
    backtest: Mapping[str, str] | None = None,
    redis_url: str | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    clock: Clock | None = None,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    env: Mapping[str, str] | None = None,
    share_modes: bool | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> Persist:
    """Configure the persistence layer once at start-up and return it (also via :func:`get_persist`).

    Args:
        url: the backend for every domain and mode, e.g. ``"postgresql+psycopg://user:pw@host/db"``.
        domains: per-domain URLs, e.g. ``{"candle": "mongodb://127.0.0.1/bot"}``.
        live: per-domain URLs for live mode only.
        backtest: per-domain URLs for backtest mode only.
        redis_url: the Redis id cache of MongoDB backends.
        options: backend options by URL scheme, e.g. ``{"file": {"durability": "process"}}``.
        clock: epoch-ms clock used to skip candles that have not closed yet (default: wall clock).
        max_value_bytes: the largest encoded value accepted (default 8 MiB).
        env: the environment to read (default ``os.environ``).
        share_modes: opt in to backtest and live records of signal, schedule, strategy, risk, partial and
            breakeven sharing one storage (default off, or ``PERSIST_SHARE_MODES=1``). Off, a backtest keeps
            those six in a memory backend of its own unless ``backtest={...}`` routes them elsewhere.
        lease_seconds: how long a live owner's lease lasts without renewal: a crashed owner on another host
            is replaced after this long (on the same host at once).

    With no arguments and no ``PERSIST_*`` variables, every domain uses the file backend under ``./dump``.
    Every backend is opened (and checked) before this returns; a previous setup is closed.

    Raises:
        ConfigurationError: unknown domain, mode or URL scheme, a backend whose extra is not installed, or a
            backtest route that would share live records without ``share_modes``.
        BackendUnavailableError: a backend cannot be reached.
    """
    global _current
    environ = os.environ if env is None else env
    modes = {k: v for k, v in (("live", live), ("backtest", backtest)) if v}
    routes = resolve_routes(url, domains, modes, environ, share_modes=share_modes_from(share_modes, environ))
    merged = {scheme: dict(opts) for scheme, opts in (options or {}).items()}
    if any(scheme_of(u) == "mongodb" for u in routes.values()):
        merged.setdefault("mongodb", {}).setdefault("redis_url", resolve_redis_url(redis_url, environ))
    persist = Persist(
        routes,
        options=merged,
        clock=clock or wall_clock_ms,
        max_value_bytes=max_value_bytes,
        lease_seconds=lease_seconds,
    )
    with _current_lock:
        previous, _current = _current, persist
    if previous is not None:
        previous.close()
    return persist


def get_persist() -> Persist:
    """The layer configured by the last :func:`setup`, or a default one (file backend, ``./dump``)."""
    with _current_lock:
        current = _current
    return current if current is not None else setup()
