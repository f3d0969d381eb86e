"""``setup()`` and the :class:`Persist` facade that hands out typed stores per mode and domain."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Generic, Literal, TypedDict, TypeVar, Unpack, cast, overload

from persist_core.backend import Backend
from persist_core.collecting import CollectingBackend
from persist_core.config import (
    DEFAULT_URL,
    MODES,
    resolve_redis_url,
    resolve_routes,
    share_modes_from,
    storage_identity,
)
from persist_core.domains import DOMAINS, CandleInterval, DomainSpec, domain
from persist_core.errors import ConfigurationError
from persist_core.guarded import Lifecycle, OpenBackend, OwnedBackend, acquire_owner, release_owner
from persist_core.ownership import DEFAULT_LEASE_SECONDS
from persist_core.prune import Progress, PrunePolicy, PruneReport, PruneRules, prune_storages
from persist_core.registry import create_backend
from persist_core.stores import (
    BucketStore,
    CandleStore,
    Clock,
    CollectionStore,
    KeyedStore,
    MappingSlotStore,
    ObjectSlotStore,
    Store,
    ValueSlotStore,
    make_store,
    wall_clock_ms,
)
from persist_core.units import PendingWrites, note_non_atomic, raise_incomplete
from persist_core.urls import UrlLike, mask_url, scheme_of
from persist_core.validation import DEFAULT_MAX_VALUE_BYTES

__all__ = ["ModeStores", "Persist", "SetupOptions", "Unit", "build_persist", "get_persist", "setup"]

log = logging.getLogger("persist")
_ObjectSlot = TypeVar("_ObjectSlot")
_MappingSlot = TypeVar("_MappingSlot")
_ValueSlot = TypeVar("_ValueSlot")
_Keyed = TypeVar("_Keyed")
_Candle = TypeVar("_Candle")
_Collection = TypeVar("_Collection")
_Bucket = TypeVar("_Bucket")


class _Stores(Generic[_ObjectSlot, _MappingSlot, _ValueSlot, _Keyed, _Candle, _Collection, _Bucket]):
    """The 16 typed store accessors of one mode, for either face (the store classes are the type arguments).

    Each accessor takes the domain's context fields as keywords and returns a store bound to them. The slot
    domains take three type arguments because their values differ (CONTRACTS.md 2): an object or ``None``
    (signal, schedule, strategy, recent), an object that reads ``{}`` when missing (risk), any JSON value
    (state, session).
    """

    def __init__(
        self, make: Callable[[str, DomainSpec, dict[str, Any]], Any], mode: str, unit: Callable[[], Any] | None = None
    ) -> None:
        self._make = make
        self._unit = unit
        self.mode = mode

    @overload
    def store(
        self, domain_name: Literal["signal", "schedule", "strategy", "recent"], **context: Any
    ) -> _ObjectSlot: ...
    @overload
    def store(self, domain_name: Literal["risk"], **context: Any) -> _MappingSlot: ...
    @overload
    def store(self, domain_name: Literal["state", "session"], **context: Any) -> _ValueSlot: ...
    @overload
    def store(self, domain_name: Literal["partial", "breakeven"], **context: Any) -> _Keyed: ...
    @overload
    def store(self, domain_name: Literal["candle"], **context: Any) -> _Candle: ...
    @overload
    def store(self, domain_name: Literal["storage", "notification", "log"], **context: Any) -> _Collection: ...
    @overload
    def store(self, domain_name: Literal["measure", "interval", "memory"], **context: Any) -> _Bucket: ...
    @overload
    def store(
        self, domain_name: str, **context: Any
    ) -> _ObjectSlot | _MappingSlot | _ValueSlot | _Keyed | _Candle | _Collection | _Bucket: ...
    def store(self, domain_name: str, **context: Any) -> Any:
        """The store of ``domain_name`` for ``context``, e.g. ``store("signal", symbol=..., ...)``.

        With a literal domain name a type checker knows the store's type; with any other ``str`` it gets the
        union of the store types, to narrow with ``isinstance``.
        """
        spec = domain(domain_name)
        return self._make(self.mode, spec, context)

    def _object_slot(self, name: str, **context: Any) -> _ObjectSlot:
        return cast(_ObjectSlot, self._make(self.mode, DOMAINS[name], context))

    def _mapping_slot(self, name: str, **context: Any) -> _MappingSlot:
        return cast(_MappingSlot, self._make(self.mode, DOMAINS[name], context))

    def _value_slot(self, name: str, **context: Any) -> _ValueSlot:
        return cast(_ValueSlot, self._make(self.mode, DOMAINS[name], context))

    def _keyed(self, name: str, **context: Any) -> _Keyed:
        return cast(_Keyed, self._make(self.mode, DOMAINS[name], context))

    def _candle(self, name: str, **context: Any) -> _Candle:
        return cast(_Candle, self._make(self.mode, DOMAINS[name], context))

    def _collection(self, name: str, **context: Any) -> _Collection:
        return cast(_Collection, self._make(self.mode, DOMAINS[name], context))

    def _bucket(self, name: str, **context: Any) -> _Bucket:
        return cast(_Bucket, self._make(self.mode, DOMAINS[name], context))

    def signal(self, *, symbol: str, strategy_name: str, exchange_name: str) -> _ObjectSlot:
        """The open position of a strategy on a symbol (slot; missing reads ``None``)."""
        return self._object_slot("signal", symbol=symbol, strategy_name=strategy_name, exchange_name=exchange_name)

    def schedule(self, *, symbol: str, strategy_name: str, exchange_name: str) -> _ObjectSlot:
        """The scheduled (limit-order) signal (slot; missing reads ``None``)."""
        return self._object_slot("schedule", symbol=symbol, strategy_name=strategy_name, exchange_name=exchange_name)

    def strategy(self, *, symbol: str, strategy_name: str, exchange_name: str) -> _ObjectSlot:
        """Deferred strategy state: commit queue, retry counters, pause flag (slot)."""
        return self._object_slot("strategy", symbol=symbol, strategy_name=strategy_name, exchange_name=exchange_name)

    def risk(self, *, risk_name: str, exchange_name: str) -> _MappingSlot:
        """Open positions of a risk profile, position key -> position (slot; missing reads ``{}``)."""
        return self._mapping_slot("risk", risk_name=risk_name, exchange_name=exchange_name)

    def partial(self, *, symbol: str, strategy_name: str, exchange_name: str) -> _Keyed:
        """Profit/loss levels reached, per signal id (missing reads ``{}``)."""
        return self._keyed("partial", symbol=symbol, strategy_name=strategy_name, exchange_name=exchange_name)

    def breakeven(self, *, symbol: str, strategy_name: str, exchange_name: str) -> _Keyed:
        """Breakeven reached, per signal id (missing reads ``{}``)."""
        return self._keyed("breakeven", symbol=symbol, strategy_name=strategy_name, exchange_name=exchange_name)

    def candle(self, *, symbol: str, interval: CandleInterval, exchange_name: str) -> _Candle:
        """The immutable candle cache of a symbol and interval (first write wins)."""
        return self._candle("candle", symbol=symbol, interval=interval, exchange_name=exchange_name)

    def storage(self, *, backtest: bool) -> _Collection:
        """Public signal rows, upserted by ``id``."""
        return self._collection("storage", backtest=backtest)

    def notification(self, *, backtest: bool) -> _Collection:
        """Notifications, upserted by ``id``."""
        return self._collection("notification", backtest=backtest)

    def log(self) -> _Collection:
        """Structured log entries, append-only by ``id``."""
        return self._collection("log")

    def measure(self, *, bucket: str) -> _Bucket:
        """Cached LLM/API responses of a bucket (soft delete)."""
        return self._bucket("measure", bucket=bucket)

    def interval(self, *, bucket: str) -> _Bucket:
        """Time-window markers of a bucket (soft delete)."""
        return self._bucket("interval", bucket=bucket)

    def memory(self, *, signal_id: str, bucket_name: str) -> _Bucket:
        """Persistent LLM context entries of a signal (soft delete)."""
        return self._bucket("memory", signal_id=signal_id, bucket_name=bucket_name)

    def recent(
        self, *, symbol: str, strategy_name: str, exchange_name: str, frame_name: str, backtest: bool
    ) -> _ObjectSlot:
        """The last-seen signal of a context (slot)."""
        return self._object_slot(
            "recent",
            symbol=symbol,
            strategy_name=strategy_name,
            exchange_name=exchange_name,
            frame_name=frame_name,
            backtest=backtest,
        )

    def state(self, *, signal_id: str, bucket_name: str) -> _ValueSlot:
        """Arbitrary strategy state of a signal (slot)."""
        return self._value_slot("state", signal_id=signal_id, bucket_name=bucket_name)

    def session(
        self, *, strategy_name: str, exchange_name: str, frame_name: str, symbol: str, backtest: bool
    ) -> _ValueSlot:
        """Cached indicator calculations (slot)."""
        return self._value_slot(
            "session",
            strategy_name=strategy_name,
            exchange_name=exchange_name,
            frame_name=frame_name,
            symbol=symbol,
            backtest=backtest,
        )


#: The accessors of the sync face, typed with its store classes (the base of its mode stores and units).
_SyncStores = _Stores[
    ObjectSlotStore, MappingSlotStore, ValueSlotStore, KeyedStore, CandleStore, CollectionStore, BucketStore
]


class ModeStores(_SyncStores):
    """The 16 typed stores of one mode on the sync face (``persist.live`` / ``persist.backtest``)."""

    def unit(self) -> Unit:
        """A unit of work of this mode: its stores' writes are collected and applied together at the end of
        its ``with`` block, all or none (nothing is written if the block raises)::

            with persist.live.unit() as unit:
                unit.signal(symbol=s, strategy_name=n, exchange_name=x).write(opened)
                unit.risk(risk_name=r, exchange_name=x).write(positions)
                unit.log().write([entry])

        The unit has the 16 store accessors of ``persist.live``, with their validation: bad input raises at
        the call, before anything is written. Its stores only write (a read raises
        :class:`~persist_core.errors.UnitOfWorkError`: read through ``persist.live``), and a candle ``write``
        returns the number of candles collected, not of those new.

        What is guaranteed: the unit's writes are grouped by the backend their domain routes to, and each
        group is applied atomically where the backend declares ``capabilities.atomic_units`` (one SQL
        transaction, one file journal, ...): after a crash, all of that group's writes are visible or none.
        With all domains on one backend (the default) the whole unit is all or none. With several backends the
        groups are applied one after another, in the order the unit first wrote to each; a crash between two
        groups leaves the earlier ones stored and the later ones not, and a failure there raises
        :class:`~persist_core.errors.UnitIncompleteError` naming both. A backend without ``atomic_units``
        (a third-party adapter, the jsonl log) has its group applied write by write, as a warning logs.
        """
        if self._unit is None:  # pragma: no cover - every facade passes its unit factory
            raise ConfigurationError("these stores belong to no facade that can make units of work")
        return cast(Unit, self._unit())


class Unit(_SyncStores):
    """A unit of work of the sync face; see :meth:`ModeStores.unit`."""

    def __init__(self, persist: Persist, mode: str) -> None:
        super().__init__(self._collect_into, mode)
        self._persist = persist
        self._pending: PendingWrites[Backend] = PendingWrites(mode)
        self._collectors: dict[int, CollectingBackend] = {}

    def _collect_into(self, mode: str, spec: DomainSpec, context: dict[str, Any]) -> Store:
        target = self._persist.store_backend(mode, spec.name)
        collector = self._collectors.get(id(target))
        if collector is None:
            collector = self._collectors.setdefault(id(target), CollectingBackend(target, self._pending))
        return make_store(
            collector, spec, context, clock=self._persist.clock, max_value_bytes=self._persist.max_value_bytes
        )

    def __len__(self) -> int:
        """The number of writes collected so far (a batch of n candles or items counts n)."""
        return len(self._pending)

    def commit(self) -> None:
        """Apply the collected writes (see :meth:`ModeStores.unit`); the end of the ``with`` block calls it.

        Raises:
            UnitIncompleteError: a group after the first failed; the earlier groups are stored.
            UnitOfWorkError: the unit was already committed or discarded.
            PersistError: the first group failed, and nothing is stored.
        """
        parts = self._pending.take()
        for index, (target, writes) in enumerate(parts):
            note_non_atomic(target, len(writes))
            try:
                target.apply_unit(writes)
            except Exception as exc:
                raise_incomplete([t.url for t, _ in parts], index, exc)

    def discard(self) -> None:
        """Drop the collected writes; the end of a ``with`` block that raised calls it."""
        self._pending.discard()

    def __enter__(self) -> Unit:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


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
        self._lifecycle = Lifecycle()
        #: What the stores write through: the backend behind the facade's open check (live: also ownership).
        self._guarded: dict[tuple[str, str], OpenBackend] = {}
        options = options or {}
        self._options = {scheme: dict(opts) for scheme, opts in options.items()}
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
            for url, backend in self._backends.items():
                self._guarded[("backtest", url)] = OpenBackend(backend, self._lifecycle)
                self._guarded[("live", url)] = self._owned.get(url) or self._guarded[("backtest", url)]
        except BaseException:
            self.close()
            raise
        self.live = ModeStores(self._make_store, "live", lambda: Unit(self, "live"))
        self.backtest = ModeStores(self._make_store, "backtest", lambda: Unit(self, "backtest"))
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
                self._owned[url] = OwnedBackend(backend, acquire_owner(backend, lease_seconds), self._lifecycle)
            elif backend.capabilities.shared_between_processes and not all(DOMAINS[n].first_write_wins for n in names):
                # Append-only domains (a jsonl log) cannot lose a write to a second process; others can.
                log.warning(
                    "%s keeps no ownership leases: a second live process writing %s would not be refused",
                    mask_url(url),
                    ", ".join(n for n in names if not DOMAINS[n].first_write_wins),
                )

    @property
    def lifecycle(self) -> Lifecycle:
        """Whether this facade is open, for the faces built on it (``AsyncPersist``): they check it too."""
        return self._lifecycle

    @property
    def closed(self) -> bool:
        """Whether this facade was closed (by :meth:`close` or by a later :func:`setup` that replaced it)."""
        return self._lifecycle.closed is not None

    def mode(self, mode: str) -> ModeStores:
        """The stores of ``mode`` (``"live"`` or ``"backtest"``)."""
        self._lifecycle.check()
        if mode == "live":
            return self.live
        if mode == "backtest":
            return self.backtest
        raise ConfigurationError(f"unknown mode {mode!r}; the modes are: {', '.join(MODES)}")

    def backend(self, mode: str, domain_name: str) -> Backend:
        """The backend that serves ``domain_name`` in ``mode`` (bare: its writes take no ownership, and it
        reopens if used after the facade is closed; stores refuse that)."""
        self.mode(mode)
        domain(domain_name)
        return self._backends[self._routes[(mode, domain_name)]]

    def routes(self) -> list[tuple[str, str, str]]:
        """``(mode, domain, URL with password masked)`` for every pair."""
        return [(mode, name, mask_url(url)) for (mode, name), url in self._routes.items()]

    @property
    def clock(self) -> Clock:
        """The candle clock (epoch ms) the stores use."""
        return self._clock

    @property
    def max_value_bytes(self) -> int:
        """The largest encoded value the stores accept."""
        return self._max_bytes

    def store_backend(self, mode: str, domain_name: str) -> Backend:
        """The backend the stores of ``domain_name`` in ``mode`` write through: refused once this facade is
        closed (:class:`~persist_core.errors.ClosedError`); live, it also claims ownership before a write."""
        self._lifecycle.check()
        return self._guarded[(mode, self._routes[(mode, domain_name)])]

    def route(self, mode: str, domain_name: str) -> tuple[str, dict[str, Any]]:
        """The URL and backend options serving ``domain_name`` in ``mode``, to build another face of that backend.

        The URL keeps its password: never print it (:meth:`routes` masks it).
        """
        self._lifecycle.check()
        url = self._routes[(mode, domain_name)]
        return url, dict(self._options.get(scheme_of(url), {}))

    def claim_ownership(self) -> None:
        """Claim the live state now rather than at the first live write, to fail fast at start-up.

        Raises:
            OwnershipError: another live process owns one of the live backends' storage.
            ClosedError: this facade is closed.
        """
        self._lifecycle.check()
        for owned in self._owned.values():
            owned.owner.ensure()

    def prune(
        self, *, dry_run: bool = False, progress: Progress | None = None, **rules: Unpack[PruneRules]
    ) -> PruneReport:
        """Apply retention rules to this facade's storage; the rules are :func:`persist_core.prune.prune`'s.

        Live storage is pruned through this process's ownership guard, so a bot can prune its own state while
        it runs; backtest-only storage takes no ownership. Process-local backends (memory) are pruned too.

        Raises:
            ConfigurationError: a bad rule or domain, or a backend that cannot list or delete records.
            OwnershipError: another live process owns the live storage.
        """
        policy = PrunePolicy.build(**rules)
        names: dict[str, list[str]] = {}
        for (_mode, name), url in sorted(self._routes.items()):
            if name not in names.setdefault(url, []):
                names[url].append(name)
        storages = [(self._owned.get(url, self._backends[url]), found) for url, found in names.items()]
        return prune_storages(storages, policy, dry_run=dry_run, progress=progress)

    def _make_store(self, mode: str, spec: DomainSpec, context: dict[str, Any]) -> Store:
        return make_store(
            self.store_backend(mode, spec.name), spec, context, clock=self._clock, max_value_bytes=self._max_bytes
        )

    def close(self) -> None:
        """Release ownership and close every backend. Idempotent.

        From then on the facade and every store it handed out raise
        :class:`~persist_core.errors.ClosedError` instead of reopening the storage.
        """
        self._lifecycle.close("this Persist is closed (close() or the end of its with block): call setup() again")
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


class SetupOptions(TypedDict, total=False):
    """The keyword arguments of :func:`setup` and :func:`~persist_core.asetup` (documented on ``setup``)."""

    domains: Mapping[str, UrlLike] | None
    live: Mapping[str, UrlLike] | None
    backtest: Mapping[str, UrlLike] | None
    redis_url: str | None
    options: Mapping[str, Mapping[str, Any]] | None
    clock: Clock | None
    max_value_bytes: int
    env: Mapping[str, str] | None
    share_modes: bool | None
    lease_seconds: float | None


def setup(url: UrlLike | None = None, **options: Unpack[SetupOptions]) -> Persist:
    """Configure the persistence layer once at start-up and return it (also via :func:`get_persist`).

    Args:
        url: the backend for every domain and mode, e.g. ``"postgresql+psycopg://user:pw@host/db"``; a
            ``sqlalchemy.URL`` is taken too (here and in ``domains``/``live``/``backtest``).
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

    With no arguments and no ``PERSIST_*`` variables, every domain uses the file backend under ``./dump`` of
    the working directory; the resolved location of every backend is logged at INFO (logger ``persist``).
    Pin it with ``PERSIST_URL`` or ``url`` (``file:/srv/bot/state``) so a restart from another folder finds it.

    Every backend is opened (and checked) before this returns. The facade returned by a previous
    ``setup()`` is then closed (logged at INFO): it and every store it handed out raise
    :class:`~persist_core.errors.ClosedError` from then on, rather than reopen the storage. Keep the facade
    this returns, or ask :func:`get_persist` for the current one.

    Raises:
        ConfigurationError: unknown domain, mode or URL scheme, a backend whose extra is not installed, or a
            backtest route that would share live records without ``share_modes``.
        BackendUnavailableError: a backend cannot be reached.
    """
    global _current
    persist = build_persist(url, **options)
    with _current_lock:
        previous, _current = _current, persist
    if previous is not None and not previous.closed:
        log.info("setup() replaces the previous Persist facade: closing it; its stores now raise ClosedError")
        previous.lifecycle.close(
            "this Persist was replaced by a later setup() and closed: use the facade that setup() returned "
            "(or get_persist())"
        )
        previous.close()
    return persist


def build_persist(url: UrlLike | None = None, **options: Unpack[SetupOptions]) -> Persist:
    """Build a :class:`Persist` as :func:`setup` does, without making it the current one (``asetup`` uses it)."""
    unknown = sorted(set(options) - set(SetupOptions.__annotations__))
    if unknown:  # **options accepts any name at run time; a typo must not pass silently
        raise ConfigurationError(
            f"unknown setup() argument(s) {', '.join(unknown)}; known: url, {', '.join(SetupOptions.__annotations__)}"
        )
    env = options.get("env")
    environ = os.environ if env is None else env
    modes = {k: v for k, v in (("live", options.get("live")), ("backtest", options.get("backtest"))) if v}
    share_modes = share_modes_from(options.get("share_modes"), environ)
    routes = resolve_routes(url, options.get("domains"), modes, environ, share_modes=share_modes)
    merged = {scheme: dict(opts) for scheme, opts in (options.get("options") or {}).items()}
    if any(scheme_of(u) == "mongodb" for u in routes.values()):
        redis_url = resolve_redis_url(options.get("redis_url"), environ)
        merged.setdefault("mongodb", {}).setdefault("redis_url", redis_url)
    lease_seconds = options.get("lease_seconds")
    persist = Persist(
        routes,
        options=merged,
        clock=options.get("clock") or wall_clock_ms,
        max_value_bytes=options.get("max_value_bytes", DEFAULT_MAX_VALUE_BYTES),
        lease_seconds=DEFAULT_LEASE_SECONDS if lease_seconds is None else lease_seconds,
    )
    _log_locations(routes)
    return persist


def _log_locations(routes: Mapping[tuple[str, str], str]) -> None:
    """Log where each storage is, resolved: a relative ``./dump`` depends on the working directory."""
    served: dict[str, dict[str, int]] = {}
    for (mode, _), url in sorted(routes.items()):
        counts = served.setdefault(url, {})
        counts[mode] = counts.get(mode, 0) + 1
    for url, counts in served.items():
        kind, *where = storage_identity(url)
        location = f"{scheme_of(url)} backend at {where[0]}" if kind == "path" else mask_url(url)
        modes = " and ".join(f"{mode} ({n} domains)" for mode, n in sorted(counts.items(), reverse=True))
        pin = " (the default: pin it with PERSIST_URL or setup(url=...))" if url == DEFAULT_URL else ""
        log.info("%s state: %s%s", modes, location, pin)


def get_persist() -> Persist:
    """The layer configured by the last :func:`setup`, or a default one (file backend, ``./dump``)."""
    with _current_lock:
        current = _current
    return current if current is not None else setup()
