"""The contract test kit: one pytest test per clause of CONTRACTS.md sections 3-6 (common part) and 8.

Subclass :class:`BackendContractTests` in a class whose name starts with ``Test`` and override the
``backend_factory`` fixture; every clause then runs against your backend. Clauses skip only through the
backend's declared :class:`~persist_core.backend.Capabilities`, never by its type.

The :class:`~persist_core.backend.Backend` surface itself serves as the back door: clauses write
through the typed stores and look at what the backend holds with ``get``/``scan``, and the other way
round, so neither side can hide a fault of the other.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from persist_core.async_backend import AsyncBackend, ThreadedAsyncBackend
from persist_core.async_stores import make_async_store
from persist_core.backend import Backend, Capabilities
from persist_core.domains import CANDLE_STEPS_MS, DOMAINS, DomainSpec, FieldType, Kind
from persist_core.errors import InvalidKeyError, InvalidValueError
from persist_core.stores import Store, make_store
from persist_core.testing.async_face import sync_view
from persist_core.testing.backend_clauses import BackendClauses
from persist_core.testing.durability import run_kill_test
from persist_core.testing.keys import KeyClauses
from persist_core.testing.listing import ListingClauses
from persist_core.testing.litter import LitterClauses
from persist_core.testing.ownership import OwnershipClauses
from persist_core.testing.races import CANDLE_BASE_MS, race_processes, race_remove_write, race_threads, slot_value
from persist_core.testing.samples import (
    HOSTILE_KEYS,
    INVALID_KEYS,
    INVALID_VALUES,
    TRICKY_VALUES,
    context_for,
    item_for,
    value_for,
)
from persist_core.testing.stateful import state_machine_for
from persist_core.testing.strategies import invalid_values, json_values, key_strings
from persist_core.testing.units import UnitClauses

__all__ = ["BackendContractTests"]

NOW_MS = 1_800_000_000_000
_namespaces = itertools.count()
#: A clause that drives the backend itself rather than the stores: the same on both faces, so a class with
#: ``face = "async"`` deselects it (it runs in the sync class beside it).
BACKEND_LEVEL = pytest.mark.persist_backend_level


def _names(*kinds: Kind) -> list[str]:
    return [name for name, spec in DOMAINS.items() if spec.kind in kinds]


SLOTS = _names(Kind.SLOT)
KEYED = _names(Kind.KEYED)
COLLECTIONS = _names(Kind.COLLECTION)
UPSERT_COLLECTIONS = [n for n in COLLECTIONS if not DOMAINS[n].first_write_wins]
BUCKETS = _names(Kind.BUCKET)
TIMED = [name for name, spec in DOMAINS.items() if spec.timed]
ALL = list(DOMAINS)
INTERVALS = [interval for interval, _ in sorted(CANDLE_STEPS_MS.items(), key=lambda pair: pair[1])]
WITH_ITEM = [n for n in ALL if DOMAINS[n].item is not None]
WITH_STR_CONTEXT = [n for n in ALL if any(f.type is FieldType.STR and f.choices is None for f in DOMAINS[n].context)]
# differing_executors: the same clause runs once per backend subclass, by design of the kit.
_PROPERTY = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.differing_executors],
)


_DEFAULT: Any = object()


def _writes(spec: DomainSpec, value: Any, item: Any = _DEFAULT) -> Callable[[Store], Any]:
    """A write of ``value`` in the form ``spec``'s store takes (item key defaulted)."""
    if spec.kind is Kind.SLOT:
        return lambda s: s.write(value)  # type: ignore[attr-defined]
    if item is _DEFAULT:
        item = item_for(spec)
    if spec.kind in (Kind.KEYED, Kind.BUCKET):
        return lambda s: s.write(item, value)  # type: ignore[attr-defined]
    if spec.kind is Kind.CANDLE:
        return lambda s: s.write([{**value, "timestamp": item}])  # type: ignore[attr-defined]
    return lambda s: s.write([{**value, "id": item}])  # type: ignore[attr-defined]


def _reads(spec: DomainSpec, item: Any = _DEFAULT) -> Callable[[Store], Any]:
    """A read of the record ``_writes`` wrote, returning the bare value (or the missing value)."""
    if spec.kind is Kind.SLOT:
        return lambda s: s.read()  # type: ignore[attr-defined]
    if item is _DEFAULT:
        item = item_for(spec)
    if spec.kind in (Kind.KEYED, Kind.BUCKET):
        return lambda s: s.read(item)  # type: ignore[attr-defined]
    if spec.kind is Kind.CANDLE:

        def candle(s: Store) -> Any:
            window = s.read(1, item)  # type: ignore[attr-defined]
            return None if window is None else {k: v for k, v in window[0].items() if k != "timestamp"}

        return candle

    def collection(s: Store) -> Any:
        for entry in s.read():  # type: ignore[attr-defined]
            if entry["id"] == item:
                return {k: v for k, v in entry.items() if k != "id"}
        return None

    return collection


class BackendContractTests(BackendClauses, OwnershipClauses, ListingClauses, KeyClauses, LitterClauses, UnitClauses):
    """The contract clauses, run against the backend that ``backend_factory`` builds.

    Override ``backend_factory`` to return a zero-argument, picklable callable that builds a new,
    unopened backend on the same storage each time it is called; the storage must be empty at the start
    of each test.
    """

    #: Optional: the capabilities of the backend under test, known before any test runs (usually
    #: ``MyBackend.capabilities``). When set, the clauses parametrized over domains that the backend does not
    #: store are deselected at collection instead of collected and skipped one by one, and
    #: ``test_declared_capabilities_are_the_backends`` checks that the backend declares exactly these.
    declared_capabilities: ClassVar[Capabilities | None] = None

    # -- fixtures an adapter author overrides -----------------------------------------------------------

    @pytest.fixture
    def backend_factory(self) -> Callable[[], Backend]:
        """Override: return a picklable zero-argument callable building the backend under test."""
        raise NotImplementedError("override the backend_factory fixture in your BackendContractTests subclass")

    # -- fixtures and helpers of the kit ------------------------------------------------------------------

    @pytest.fixture
    def backend(self, backend_factory: Callable[[], Backend], request: pytest.FixtureRequest) -> Iterator[Backend]:
        """An opened backend on fresh storage; a clause marked ``persist_domains`` skips, before anything is
        opened, unless the backend stores those domains (a class with ``declared_capabilities`` deselects it)."""
        backend = backend_factory()
        for marker in request.node.iter_markers("persist_domains"):
            for name in marker.args:
                self.require(backend, name)
        backend.open()
        yield backend
        backend.close()

    @pytest.fixture
    def namespace(self) -> str:
        """A prefix unique to the test, for contexts that should not meet other tests' records."""
        return f"t{next(_namespaces)}-"

    #: ``"async"`` runs every clause that uses :meth:`store` on the asyncio face: the async store classes over
    #: :meth:`async_backend_for` (by default the backend in the bounded thread pool). One subclass with
    #: ``face = "async"`` beside the sync one checks both faces (docs/writing-an-adapter.md).
    face: ClassVar[str] = "sync"

    @classmethod
    def store(cls, backend: Backend, name: str, variant: int = 0, *, clock_ms: int = NOW_MS, **context: Any) -> Any:
        """The store of domain ``name`` on ``backend`` for a sample context (or the given ``context``).

        On the asyncio face (``face = "async"``) a sync view of the async store: the same clause then checks
        the async stores and the async backend.
        """
        spec = DOMAINS[name]
        values = context or context_for(spec, variant)
        if cls.face == "async":
            return sync_view(make_async_store(cls.async_backend_for(backend), spec, values, clock=lambda: clock_ms))
        return make_store(backend, spec, values, clock=lambda: clock_ms)

    @classmethod
    def async_backend_for(cls, backend: Backend) -> AsyncBackend:
        """The asyncio backend on ``backend``'s storage; override for a backend with a native async driver."""
        return ThreadedAsyncBackend(backend)

    @staticmethod
    def require(backend: Backend, name: str | None = None, **capabilities: bool) -> None:
        """Skip unless ``backend`` stores domain ``name`` and declares every given capability."""
        caps = backend.capabilities
        if name is not None and not caps.supports(name):
            pytest.skip(f"the backend does not store the {name!r} domain (Capabilities.domains)")
        for flag, wanted in capabilities.items():
            if getattr(caps, flag) != wanted:
                pytest.skip(f"the backend declares {flag}={getattr(caps, flag)}")

    def assert_nothing_stored(self, backend: Backend, name: str, variant: int = 0) -> None:
        """The sample context of ``name`` holds no record at all (the back door)."""
        spec = DOMAINS[name]
        store = self.store(backend, name, variant)
        if spec.item is None:
            assert backend.get(spec, store.context) is None
        else:
            assert backend.scan(spec, store.context) == []

    # ==================================================================================================
    # 2. Capabilities
    # ==================================================================================================

    @BACKEND_LEVEL
    def test_capabilities_are_declared(self, backend: Backend) -> None:
        caps = backend.capabilities
        assert isinstance(caps, Capabilities)
        assert caps.domains is None or (caps.domains <= set(DOMAINS) and caps.domains)

    @BACKEND_LEVEL
    def test_declared_capabilities_are_the_backends(self, backend: Backend) -> None:
        """What the test class declared for collection is what the backend declares at run time.

        Deselected (by the plugin) in a class that declares nothing.
        """
        assert backend.capabilities == self.declared_capabilities

    @BACKEND_LEVEL
    def test_unsupported_domains_are_declared_not_faked(self, backend: Backend) -> None:
        """A backend storing only some domains says so; setup() then refuses to route others to it."""
        for name in DOMAINS:
            assert backend.capabilities.supports(name) == (
                backend.capabilities.domains is None or name in backend.capabilities.domains
            )

    # ==================================================================================================
    # 3.1 Slot domains
    # ==================================================================================================

    @pytest.mark.parametrize("name", SLOTS)
    def test_slot_missing_reads_missing_value(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        assert self.store(backend, name).read() == DOMAINS[name].missing.make()

    @pytest.mark.parametrize("name", SLOTS)
    def test_slot_round_trip(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        value = value_for(DOMAINS[name], "rt")
        self.store(backend, name).write(value)
        assert self.store(backend, name).read() == value

    @pytest.mark.parametrize("name", SLOTS)
    def test_slot_write_replaces_whole_value(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        store = self.store(backend, name)
        store.write({"a": 1, "b": 2})
        store.write({"c": 3})
        assert store.read() == {"c": 3}

    @pytest.mark.parametrize("name", SLOTS)
    def test_slot_write_none_clears(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        store = self.store(backend, name)
        store.write({"a": 1})
        store.write(None)
        assert store.read() == DOMAINS[name].missing.make()
        store.write({"b": 2})
        assert store.read() == {"b": 2}

    @pytest.mark.parametrize("name", SLOTS)
    def test_slot_contexts_are_independent(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        spec = DOMAINS[name]
        base = context_for(spec, 1)
        stores = [self.store(backend, name, **base)]
        for field in spec.context:  # change one field at a time
            other = dict(base)
            if field.type is FieldType.BOOL:
                other[field.name] = not base[field.name]
            elif field.choices is not None:
                other[field.name] = "5m"
            else:
                other[field.name] = base[field.name] + "x"
            stores.append(self.store(backend, name, **other))
        for index, store in enumerate(stores):
            store.write({"index": index})
        assert [store.read() for store in stores] == [{"index": i} for i in range(len(stores))]

    # ==================================================================================================
    # 3.1/3.2/3.5 when= and as_of=: the look-ahead guard
    # ==================================================================================================

    @pytest.mark.parametrize("name", TIMED)
    def test_as_of_hides_records_written_later(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        spec = DOMAINS[name]
        store = self.store(backend, name)
        value = {"v": 1}
        if spec.kind is Kind.SLOT:
            store.write(value, when=1_000)
            got = [store.read(as_of=999), store.read(as_of=1_000), store.read(as_of=5_000), store.read()]
        else:
            store.write("k", value, when=1_000)
            got = [
                store.read("k", as_of=999),
                store.read("k", as_of=1_000),
                store.read("k", as_of=5_000),
                store.read("k"),
            ]
        assert got == [spec.missing.make(), value, value, value]

    @pytest.mark.parametrize("name", TIMED)
    def test_as_of_accepts_aware_datetimes(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        spec = DOMAINS[name]
        store = self.store(backend, name)
        when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
        before, after = when - dt.timedelta(milliseconds=1), when + dt.timedelta(hours=1)
        if spec.kind is Kind.SLOT:
            store.write({"v": 1}, when=when)
            got = [store.read(as_of=before), store.read(as_of=int(when.timestamp() * 1000)), store.read(as_of=after)]
        else:
            store.write("k", {"v": 1}, when=when)
            got = [
                store.read("k", as_of=before),
                store.read("k", as_of=int(when.timestamp() * 1000)),
                store.read("k", as_of=after),
            ]
        assert got == [spec.missing.make(), {"v": 1}, {"v": 1}]

    @pytest.mark.parametrize("name", TIMED)
    def test_records_without_when_are_always_visible(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        store = self.store(backend, name)
        if DOMAINS[name].kind is Kind.SLOT:
            store.write({"v": 1})
            assert store.read(as_of=0) == {"v": 1}
        else:
            store.write("k", {"v": 1})
            assert store.read("k", as_of=0) == {"v": 1}

    @pytest.mark.parametrize("name", TIMED)
    @pytest.mark.parametrize("bad", [1.5, "1000", dt.datetime(2024, 1, 1), True, 2**63], ids=repr)
    def test_invalid_when_is_rejected_and_nothing_written(self, backend: Backend, name: str, bad: Any) -> None:
        self.require(backend, name)
        store = self.store(backend, name)
        with pytest.raises(InvalidValueError):
            if DOMAINS[name].kind is Kind.SLOT:
                store.write({"v": 1}, when=bad)
            else:
                store.write("k", {"v": 1}, when=bad)
        self.assert_nothing_stored(backend, name)

    # ==================================================================================================
    # 3.2 Keyed maps
    # ==================================================================================================

    @pytest.mark.parametrize("name", KEYED)
    def test_keyed_missing_reads_empty_mapping(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        assert self.store(backend, name).read("sig-1") == {}

    @pytest.mark.parametrize("name", KEYED)
    def test_keyed_values_are_per_signal_id(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        store = self.store(backend, name)
        store.write("sig-1", {"profitLevels": [10, 20], "lossLevels": []})
        store.write("sig-2", {"reached": True})
        assert store.read("sig-1") == {"profitLevels": [10, 20], "lossLevels": []}
        assert store.read("sig-2") == {"reached": True}
        store.write("sig-1", None)
        assert store.read("sig-1") == {}
        assert store.read("sig-2") == {"reached": True}

    # ==================================================================================================
    # 3.3 Candles
    # ==================================================================================================

    def _candles(self, start: int, count: int, step: int = 60_000, **extra: Any) -> list[dict[str, Any]]:
        return [
            {
                "timestamp": start + i * step,
                "open": 1.0 + i,
                "high": 2.0 + i,
                "low": 0.5,
                "close": 1.5 + i,
                "volume": 10.0 * i,
                **extra,
            }
            for i in range(count)
        ]

    @pytest.mark.persist_domains("candle")
    def test_candle_write_counts_and_window_reads_back(self, backend: Backend) -> None:
        store = self.store(backend, "candle")
        candles = self._candles(CANDLE_BASE_MS, 10)
        assert store.write(candles) == 10
        assert store.read(10, CANDLE_BASE_MS) == candles
        assert store.read(3, CANDLE_BASE_MS + 4 * 60_000) == candles[4:7]

    @pytest.mark.persist_domains("candle")
    def test_candle_first_write_wins(self, backend: Backend) -> None:
        store = self.store(backend, "candle")
        first = self._candles(CANDLE_BASE_MS, 3, close_source="first")
        assert store.write(first) == 3
        second = self._candles(CANDLE_BASE_MS, 5, close_source="second")
        assert store.write(second) == 2
        assert store.read(5, CANDLE_BASE_MS) == first + second[3:]

    @pytest.mark.persist_domains("candle")
    def test_candle_first_in_batch_wins_for_duplicate_timestamps(self, backend: Backend) -> None:
        store = self.store(backend, "candle")
        batch = [{"timestamp": CANDLE_BASE_MS, "close": 1.0}, {"timestamp": CANDLE_BASE_MS, "close": 2.0}]
        assert store.write(batch) == 1
        assert store.read(1, CANDLE_BASE_MS) == [batch[0]]

    @pytest.mark.persist_domains("candle")
    def test_candle_unclosed_is_skipped(self, backend: Backend) -> None:
        now = CANDLE_BASE_MS + 5 * 60_000
        store = self.store(backend, "candle", clock_ms=now)
        candles = self._candles(CANDLE_BASE_MS, 6)  # the last one opens at now - 0: closes at now + 60 s
        assert store.write(candles) == 5
        assert store.read(5, CANDLE_BASE_MS) == candles[:5]
        assert store.read(6, CANDLE_BASE_MS) is None
        closing_now = self.store(backend, "candle", clock_ms=now + 60_000)
        assert closing_now.write(candles[5:]) == 1  # timestamp + step == now counts as closed

    @pytest.mark.persist_domains("candle")
    def test_candle_partial_window_is_a_miss(self, backend: Backend) -> None:
        store = self.store(backend, "candle")
        candles = self._candles(CANDLE_BASE_MS, 5)
        store.write(candles[:2] + candles[3:])
        assert store.read(5, CANDLE_BASE_MS) is None
        assert store.read(2, CANDLE_BASE_MS) == candles[:2]
        assert store.read(1, CANDLE_BASE_MS - 60_000) is None
        assert store.read(2, CANDLE_BASE_MS + 3 * 60_000) == candles[3:]

    @pytest.mark.persist_domains("candle")
    @pytest.mark.parametrize("interval", INTERVALS)
    def test_candle_steps_per_interval(self, backend: Backend, interval: str) -> None:
        step = CANDLE_STEPS_MS[interval]
        store = self.store(backend, "candle", symbol="S", interval=interval, exchange_name="x")
        start = (CANDLE_BASE_MS // 86_400_000) * 86_400_000
        candles = self._candles(start, 4, step=step)
        assert store.write(candles) == 4
        assert store.read(4, start) == candles
        assert store.step_ms == step

    @pytest.mark.persist_domains("candle")
    @pytest.mark.parametrize("interval", ["2m", "1w", "1M", "60s", ""])
    def test_candle_unknown_interval_is_invalid_key(self, backend: Backend, interval: str) -> None:
        with pytest.raises(InvalidKeyError):
            self.store(backend, "candle", symbol="S", interval=interval, exchange_name="x")

    @pytest.mark.persist_domains("candle")
    @pytest.mark.parametrize("bad", [-1, 2**53, 1.5, "1700000000000", None, True], ids=repr)
    def test_candle_bad_timestamp_rejected_and_nothing_written(self, backend: Backend, bad: Any) -> None:
        store = self.store(backend, "candle")
        with pytest.raises((InvalidKeyError, InvalidValueError)):
            store.write([*self._candles(CANDLE_BASE_MS, 2), {"timestamp": bad, "close": 1.0}])
        self.assert_nothing_stored(backend, "candle")

    @pytest.mark.persist_domains("candle")
    @pytest.mark.parametrize(
        ("limit", "since"),
        [(2, 2**53 - 1), (2, 2**53 - 60_000), (3, 2**53 - 2 * 60_000), (2**40, 0), (2**62, CANDLE_BASE_MS)],
        ids=["last+1", "last+step", "last+2step", "huge-limit", "int64-overflow"],
    )
    def test_candle_window_beyond_the_key_range_is_invalid(self, backend: Backend, limit: int, since: int) -> None:
        store = self.store(backend, "candle")
        with pytest.raises(InvalidValueError):
            store.read(limit, since)
        # The last window that still fits is an ordinary miss on every backend.
        assert store.read(1, 2**53 - 1) is None
        assert store.read(2, 2**53 - 1 - 60_000) is None

    @pytest.mark.persist_domains("candle")
    def test_candle_window_of_1000_reads_in_order(self, backend: Backend) -> None:
        store = self.store(backend, "candle")
        candles = self._candles(CANDLE_BASE_MS, 1000)
        assert store.write(candles[500:]) == 500
        assert store.write(candles) == 500
        assert store.read(1000, CANDLE_BASE_MS) == candles

    # ==================================================================================================
    # 3.4 Collections
    # ==================================================================================================

    @pytest.mark.parametrize("name", COLLECTIONS)
    def test_collection_empty_reads_empty_list(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        assert self.store(backend, name).read() == []

    @pytest.mark.parametrize("name", COLLECTIONS)
    def test_collection_reads_ascending_by_id(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        store = self.store(backend, name)
        ids = ["b", "a", "B", "é", "z", "10", "9", "日本", "~", "a_b", "a/b"]
        store.write([{"id": i, "n": n} for n, i in enumerate(ids)])
        assert [item["id"] for item in store.read()] == sorted(ids)

    @pytest.mark.parametrize("name", UPSERT_COLLECTIONS)
    def test_collection_upserts_by_id(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        store = self.store(backend, name)
        store.write([{"id": "s1", "status": "opened"}, {"id": "s2", "status": "scheduled"}])
        store.write([{"id": "s1", "status": "closed", "pnl": 1.5}])
        assert store.read() == [{"id": "s1", "status": "closed", "pnl": 1.5}, {"id": "s2", "status": "scheduled"}]

    @pytest.mark.parametrize("name", UPSERT_COLLECTIONS)
    def test_collection_backtest_and_live_are_separate(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        self.store(backend, name, backtest=True).write([{"id": "x", "mode": "backtest"}])
        self.store(backend, name, backtest=False).write([{"id": "x", "mode": "live"}])
        assert self.store(backend, name, backtest=True).read() == [{"id": "x", "mode": "backtest"}]
        assert self.store(backend, name, backtest=False).read() == [{"id": "x", "mode": "live"}]

    @pytest.mark.parametrize("name", [n for n in ALL if any(f.name == "backtest" for f in DOMAINS[n].context)])
    def test_backtest_flag_keeps_mode_records_apart(self, backend: Backend, name: str) -> None:
        """Where the key carries the mode (``backtest``), the two modes' records are distinct (CONTRACTS.md 3.7)."""
        spec = DOMAINS[name]
        context = context_for(spec)
        backtest = self.store(backend, name, **{**context, "backtest": True})
        live = self.store(backend, name, **{**context, "backtest": False})
        _writes(spec, {"mode": "live"})(live)
        _writes(spec, {"mode": "backtest"})(backtest)
        assert _reads(spec)(live) == {"mode": "live"}
        assert _reads(spec)(backtest) == {"mode": "backtest"}
        if spec.kind is Kind.SLOT:
            backtest.write(None)
            assert _reads(spec)(live) == {"mode": "live"}

    @pytest.mark.persist_domains("log")
    def test_log_is_append_only(self, backend: Backend) -> None:
        store = self.store(backend, "log")
        store.write([{"id": "e1", "topic": "first"}, {"id": "e2", "topic": "first"}])
        store.write([{"id": "e1", "topic": "changed"}, {"id": "e3", "topic": "second"}])
        assert store.read() == [
            {"id": "e1", "topic": "first"},
            {"id": "e2", "topic": "first"},
            {"id": "e3", "topic": "second"},
        ]

    @pytest.mark.parametrize("name", COLLECTIONS)
    @pytest.mark.parametrize(
        "bad_item",
        [{"no_id": 1}, {"id": ""}, {"id": 5}, {"id": None}, {"id": "x" * 81}, {"id": "a\nb"}, "not-a-dict", ["id"]],
        ids=repr,
    )
    def test_collection_bad_item_rejects_whole_batch(self, backend: Backend, name: str, bad_item: Any) -> None:
        self.require(backend, name)
        store = self.store(backend, name)
        with pytest.raises((InvalidValueError, InvalidKeyError)):
            store.write([{"id": "good-1"}, bad_item, {"id": "good-2"}])
        assert store.read() == []

    @pytest.mark.parametrize("name", COLLECTIONS)
    def test_collection_item_without_id_is_invalid_value(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        with pytest.raises(InvalidValueError):
            self.store(backend, name).write([{"status": "opened"}])

    # ==================================================================================================
    # 3.5 Soft-delete buckets
    # ==================================================================================================

    @pytest.mark.parametrize("name", BUCKETS)
    def test_bucket_missing_reads_none(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        store = self.store(backend, name)
        assert store.read("k") is None
        assert store.has("k") is False
        assert store.keys() == []
        assert list(store.entries()) == []

    @pytest.mark.parametrize("name", BUCKETS)
    def test_bucket_round_trip_and_upsert(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        store = self.store(backend, name)
        store.write("k", {"v": 1})
        store.write("k", [1, "two", None])
        store.write("s", "scalar values are fine")
        assert store.read("k") == [1, "two", None]
        assert store.read("s") == "scalar values are fine"

    @pytest.mark.parametrize("name", BUCKETS)
    def test_bucket_remove_hides_the_entry(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        store = self.store(backend, name)
        store.write("k", {"v": 1})
        store.write("other", {"v": 2})
        store.remove("k")
        assert store.read("k") is None
        assert store.has("k") is False
        assert store.keys() == ["other"]
        assert list(store.entries()) == [("other", {"v": 2})]

    @pytest.mark.parametrize("name", BUCKETS)
    def test_bucket_remove_keeps_the_record(self, backend: Backend, name: str) -> None:
        self.require(backend, name, keeps_removed_records=True)
        store = self.store(backend, name)
        store.write("k", {"audit": "trail"}, when=7)
        store.remove("k")
        record = backend.get(DOMAINS[name], (*store.context, "k"))
        assert record is not None, "a removed record must stay in storage"
        assert record.removed is True
        assert record.when == 7
        assert store.domain.name == name

    @pytest.mark.parametrize("name", BUCKETS)
    def test_bucket_write_revives_a_removed_key(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        store = self.store(backend, name)
        store.write("k", {"v": 1})
        store.remove("k")
        store.write("k", {"v": 2})
        assert store.read("k") == {"v": 2}
        assert store.has("k") is True
        assert store.keys() == ["k"]

    @pytest.mark.parametrize("name", BUCKETS)
    def test_bucket_remove_missing_is_a_noop(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        store = self.store(backend, name)
        store.remove("never-written")
        assert backend.get(DOMAINS[name], (*store.context, "never-written")) is None
        assert store.keys() == []

    @pytest.mark.parametrize("name", BUCKETS)
    def test_bucket_keys_and_entries_ascending(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        store = self.store(backend, name)
        keys = ["m", "a", "Z", "é", "日本", "10", "9", "a.b", "%"]
        for n, key in enumerate(keys):
            store.write(key, {"n": n})
        assert store.keys() == sorted(keys)
        assert [k for k, _ in store.entries()] == sorted(keys)
        assert dict(store.entries()) == {key: {"n": n} for n, key in enumerate(keys)}

    @pytest.mark.parametrize("name", BUCKETS)
    def test_bucket_has_is_false_for_removed(self, backend: Backend, name: str) -> None:
        """Upstream's memory ``has`` says True for removed entries; ours does not."""
        self.require(backend, name)
        store = self.store(backend, name)
        store.write("k", None)
        assert store.has("k") is True
        store.remove("k")
        assert store.has("k") is False

    # ==================================================================================================
    # 3.6 Lifecycle
    # ==================================================================================================

    def test_open_and_close_are_idempotent(self, backend_factory: Callable[[], Backend]) -> None:
        backend = backend_factory()
        backend.open()
        backend.open()
        name = next(n for n in DOMAINS if backend.capabilities.supports(n))
        _writes(DOMAINS[name], {"v": 1})(self.store(backend, name))
        assert _reads(DOMAINS[name])(self.store(backend, name)) == {"v": 1}
        backend.close()
        backend.close()

    def test_backend_is_a_context_manager(self, backend_factory: Callable[[], Backend]) -> None:
        with backend_factory() as backend:
            assert isinstance(backend, Backend)
            name = next(n for n in DOMAINS if backend.capabilities.supports(n))
            self.store(backend, name)

    @pytest.mark.parametrize("name", ALL)
    def test_records_survive_reopen(self, backend_factory: Callable[[], Backend], name: str) -> None:
        first = backend_factory()
        first.open()
        self.require(first, name, shared_between_processes=True)
        spec = DOMAINS[name]
        _writes(spec, {"kept": name})(self.store(first, name))
        first.close()
        second = backend_factory()
        second.open()
        try:
            assert _reads(spec)(self.store(second, name)) == {"kept": name}
        finally:
            second.close()

    @pytest.mark.parametrize("name", ALL)
    def test_two_instances_see_each_others_writes(self, backend_factory: Callable[[], Backend], name: str) -> None:
        one, two = backend_factory(), backend_factory()
        one.open()
        two.open()
        try:
            self.require(one, name, shared_between_processes=True)
            spec = DOMAINS[name]
            _writes(spec, {"from": "one"})(self.store(one, name))
            assert _reads(spec)(self.store(two, name)) == {"from": "one"}
        finally:
            one.close()
            two.close()

    # ==================================================================================================
    # 4. Keys
    # ==================================================================================================

    @pytest.mark.parametrize("name", WITH_STR_CONTEXT)
    @pytest.mark.parametrize(("label", "bad"), INVALID_KEYS, ids=[label for label, _ in INVALID_KEYS])
    def test_invalid_context_key_is_rejected(self, backend: Backend, name: str, label: str, bad: Any) -> None:
        self.require(backend, name)
        spec = DOMAINS[name]
        fields = [f for f in spec.context if f.type is FieldType.STR and f.choices is None]
        for field in fields:
            if field.may_be_empty and bad == "":
                continue
            ctx = {**context_for(spec), field.name: bad}
            with pytest.raises(InvalidKeyError) as info:
                self.store(backend, name, **ctx)
            assert info.value.field == field.name

    @pytest.mark.parametrize("name", WITH_ITEM)
    @pytest.mark.parametrize(("label", "bad"), INVALID_KEYS, ids=[label for label, _ in INVALID_KEYS])
    def test_invalid_item_key_is_rejected_and_nothing_written(
        self, backend: Backend, name: str, label: str, bad: Any
    ) -> None:
        self.require(backend, name)
        spec = DOMAINS[name]
        if name == "candle" and type(bad) is int:
            bad = -bad  # a small positive int is a valid timestamp; a negative one is not
        store = self.store(backend, name)
        with pytest.raises((InvalidKeyError, InvalidValueError)):
            _writes(spec, {"v": 1}, item=bad)(store)
        self.assert_nothing_stored(backend, name)

    @pytest.mark.parametrize("name", [n for n in ALL if any(f.type is FieldType.BOOL for f in DOMAINS[n].context)])
    @pytest.mark.parametrize("bad", [1, 0, "true", None], ids=repr)
    def test_bool_field_accepts_only_bool(self, backend: Backend, name: str, bad: Any) -> None:
        self.require(backend, name)
        with pytest.raises(InvalidKeyError):
            self.store(backend, name, **{**context_for(DOMAINS[name]), "backtest": bad})

    @pytest.mark.parametrize("name", ["recent", "session"])
    def test_only_frame_name_may_be_empty(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        spec = DOMAINS[name]
        ctx = {**context_for(spec, 1), "frame_name": ""}
        self.store(backend, name, **ctx).write({"empty": "frame"})
        assert self.store(backend, name, **ctx).read() == {"empty": "frame"}
        for field in spec.context:
            if field.type is FieldType.STR and not field.may_be_empty:
                with pytest.raises(InvalidKeyError):
                    self.store(backend, name, **{**ctx, field.name: ""})

    @pytest.mark.parametrize("name", WITH_STR_CONTEXT)
    def test_hostile_context_keys_are_distinct_records(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        spec = DOMAINS[name]
        fields = [f for f in spec.context if f.type is FieldType.STR and f.choices is None]
        field = fields[-1]
        base = context_for(spec, 1)
        for key in HOSTILE_KEYS:
            _writes(spec, {"key": key})(self.store(backend, name, **{**base, field.name: key}))
        for key in HOSTILE_KEYS:
            assert _reads(spec)(self.store(backend, name, **{**base, field.name: key})) == {"key": key}, key

    @pytest.mark.parametrize("name", [n for n in WITH_ITEM if n != "candle"])
    def test_hostile_item_keys_are_distinct_records(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        spec = DOMAINS[name]
        store = self.store(backend, name)
        for key in HOSTILE_KEYS:
            _writes(spec, {"key": key}, item=key)(store)
        for key in HOSTILE_KEYS:
            assert _reads(spec, item=key)(store) == {"key": key}, key
        if spec.kind is Kind.BUCKET:
            assert store.keys() == sorted(HOSTILE_KEYS)
        elif spec.kind is Kind.COLLECTION:
            assert [e["id"] for e in store.read()] == sorted(HOSTILE_KEYS)

    @pytest.mark.parametrize("name", [n for n in ALL if len(DOMAINS[n].context) >= 2])
    def test_joined_field_boundaries_do_not_collide(self, backend: Backend, name: str) -> None:
        """Upstream joins fields with ``_``/``:``: ``a_b`` + ``c`` collided with ``a`` + ``b_c``."""
        self.require(backend, name)
        spec = DOMAINS[name]
        strs = [f for f in spec.context if f.type is FieldType.STR and f.choices is None]
        if len(strs) < 2:
            pytest.skip("fewer than two string context fields")
        first, second = strs[0].name, strs[1].name
        base = context_for(spec, 1)
        pairs = [
            ("a_b", "c"),
            ("a", "b_c"),
            ("a:b", "c"),
            ("a", "b:c"),
            ("a/b", "c"),
            ("a", "b/c"),
            ("a%2Fb", "c"),
            ("a", "b%2Fc"),
        ]
        for left, right in pairs:
            _writes(spec, {"pair": [left, right]})(self.store(backend, name, **{**base, first: left, second: right}))
        for left, right in pairs:
            store = self.store(backend, name, **{**base, first: left, second: right})
            assert _reads(spec)(store) == {"pair": [left, right]}

    @pytest.mark.persist_domains("measure", "state")
    @given(data=st.data())
    @_PROPERTY
    def test_property_key_injectivity(self, backend: Backend, data: st.DataObject) -> None:
        """Two distinct keys never share a record (Hypothesis)."""
        left, right = data.draw(st.lists(key_strings(), min_size=2, max_size=2, unique=True))
        tag = f"inj-{next(_namespaces)}"
        items = self.store(backend, "measure", bucket=tag)
        items.write(left, {"k": left})
        items.write(right, {"k": right})
        assert (items.read(left), items.read(right)) == ({"k": left}, {"k": right})
        assert items.keys() == sorted([left, right])
        slots = [self.store(backend, "state", signal_id=key, bucket_name=tag) for key in (left, right)]
        for store, key in zip(slots, (left, right), strict=True):
            store.write({"k": key})
        assert [store.read() for store in slots] == [{"k": left}, {"k": right}]

    # ==================================================================================================
    # 4. Values
    # ==================================================================================================

    @pytest.mark.parametrize("name", ALL)
    @pytest.mark.parametrize("index", range(len(TRICKY_VALUES)))
    def test_tricky_values_round_trip_exactly(self, backend: Backend, name: str, index: int) -> None:
        self.require(backend, name)
        spec = DOMAINS[name]
        value = TRICKY_VALUES[index]
        _writes(spec, value)(self.store(backend, name))
        got = _reads(spec)(self.store(backend, name))
        assert got == value
        assert _types(got) == _types(value), "ints must stay ints and floats floats"

    @pytest.mark.parametrize("name", ALL)
    @pytest.mark.parametrize(("label", "bad", "path"), INVALID_VALUES, ids=[label for label, _, _ in INVALID_VALUES])
    def test_invalid_value_is_rejected_and_nothing_written(
        self, backend: Backend, name: str, label: str, bad: Any, path: str
    ) -> None:
        self.require(backend, name)
        spec = DOMAINS[name]
        with pytest.raises(InvalidValueError) as info:
            _writes(spec, bad)(self.store(backend, name))
        if spec.kind in (Kind.SLOT, Kind.KEYED, Kind.BUCKET):
            assert info.value.path == path, str(info.value)
        else:  # a batch of one: the path names the item first
            assert info.value.path == "$[0]" + path[1:], str(info.value)
        self.assert_nothing_stored(backend, name)

    @pytest.mark.parametrize(
        "name",
        [n for n in ALL if DOMAINS[n].kind in (Kind.SLOT, Kind.KEYED) and DOMAINS[n].value_kind.value == "object"],
    )
    @pytest.mark.parametrize("bad", [[1, 2], "text", 5, 1.5, True], ids=repr)
    def test_object_domains_reject_non_objects(self, backend: Backend, name: str, bad: Any) -> None:
        self.require(backend, name)
        spec = DOMAINS[name]
        with pytest.raises(InvalidValueError):
            _writes(spec, bad)(self.store(backend, name))
        self.assert_nothing_stored(backend, name)

    @pytest.mark.parametrize("name", ["state", "session", "measure", "memory"])
    @pytest.mark.parametrize("value", [[1, [2]], "text", 5, 1.5, True, 0], ids=repr)
    def test_any_value_domains_round_trip_scalars_and_lists(self, backend: Backend, name: str, value: Any) -> None:
        self.require(backend, name)
        spec = DOMAINS[name]
        _writes(spec, value)(self.store(backend, name))
        got = _reads(spec)(self.store(backend, name))
        assert got == value
        assert type(got) is type(value)

    @pytest.mark.parametrize("name", ALL)
    def test_oversized_value_is_rejected_and_nothing_written(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        spec = DOMAINS[name]
        store = make_store(backend, spec, context_for(spec), clock=lambda: NOW_MS, max_value_bytes=4096)
        fits = {"fits": "x" * 3000}
        _writes(spec, fits)(store)
        with pytest.raises(InvalidValueError, match="bytes"):
            _writes(spec, {"too big": "é" * 2100}, item=item_for(spec, 1))(store)
        if spec.kind is Kind.SLOT:
            assert _reads(spec)(store) == fits
        else:
            assert _reads(spec, item=item_for(spec, 1))(store) in (None, {})
            assert _reads(spec)(store) == fits

    @pytest.mark.parametrize("name", ALL)
    def test_reads_return_fresh_objects(self, backend: Backend, name: str) -> None:
        self.require(backend, name)
        spec = DOMAINS[name]
        value: dict[str, Any] = {"list": [1, 2], "map": {"a": 1}}
        original = copy.deepcopy(value)
        store = self.store(backend, name)
        _writes(spec, value)(store)
        value["list"].append(3)  # mutate after writing
        first = _reads(spec)(store)
        assert first == original
        first["list"].append(99)  # mutate what a read returned
        first["map"]["b"] = 2
        assert _reads(spec)(store) == original

    @given(value=json_values(object_only=True))
    @_PROPERTY
    def test_property_round_trip(self, backend: Backend, value: dict[str, Any]) -> None:
        """Every valid value reads back equal, with the same types (Hypothesis)."""
        names = [n for n in ("state", "measure", "signal", "storage") if backend.capabilities.supports(n)]
        if not names:
            self.require(backend, "state")
        for name in names:
            spec = DOMAINS[name]
            _writes(spec, value)(self.store(backend, name))
            got = _reads(spec)(self.store(backend, name))
            if spec.kind is Kind.COLLECTION:
                value = {k: v for k, v in value.items() if k != "id"}
            assert got == value
            assert _types(got) == _types(value)

    @given(bad=invalid_values())
    @_PROPERTY
    def test_property_invalid_values_write_nothing(self, backend: Backend, bad: Any) -> None:
        """Invalid values raise InvalidValueError and leave the stored value untouched (Hypothesis)."""
        names = [n for n in ("state", "measure", "storage", "log") if backend.capabilities.supports(n)]
        if not names:
            self.require(backend, "state")
        for name in names:
            spec = DOMAINS[name]
            store = self.store(backend, name, 3)
            _writes(spec, {"keep": 1})(store)
            with pytest.raises(InvalidValueError):
                _writes(spec, bad)(store)
            assert _reads(spec)(store) == {"keep": 1}

    # ==================================================================================================
    # 8. State machine, durability, concurrency
    # ==================================================================================================

    @BACKEND_LEVEL
    def test_state_machine_matches_the_memory_model(self, backend_factory: Callable[[], Backend]) -> None:
        run_state_machine_as_test(
            state_machine_for(backend_factory),
            settings=settings(
                deadline=None,
                stateful_step_count=25,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )

    @BACKEND_LEVEL
    def test_sigkill_keeps_every_acknowledged_write(
        self, backend_factory: Callable[[], Backend], namespace: str
    ) -> None:
        probe = backend_factory()
        self.require(probe, survives_process_kill=True, shared_between_processes=True)
        if not any(probe.capabilities.supports(name) for name in ("signal", "log", "candle")):
            pytest.skip("the backend stores none of signal, log, candle (Capabilities.domains)")
        reports = run_kill_test(backend_factory, rounds=3, namespace=namespace, seed=len(namespace))
        assert all(r.acked for r in reports), "the writer acknowledged nothing before it was killed"
        problems = [p for r in reports for p in r.problems]
        assert problems == []

    @BACKEND_LEVEL
    @pytest.mark.parametrize("kind", ["candle", "log"])
    def test_threads_racing_on_one_key_have_one_winner(self, backend: Backend, kind: str, namespace: str) -> None:
        self.require(backend, kind)
        results = race_threads(backend, kind, namespace, racers=4, keys=15)
        self._check_one_winner(backend, kind, namespace, results)

    @BACKEND_LEVEL
    @pytest.mark.parametrize("kind", ["candle", "log"])
    def test_processes_racing_on_one_key_have_one_winner(
        self, backend_factory: Callable[[], Backend], backend: Backend, kind: str, namespace: str
    ) -> None:
        self.require(backend, kind, shared_between_processes=True)
        results = race_processes(backend_factory, kind, namespace, racers=3, keys=15)
        self._check_one_winner(backend, kind, namespace, results)

    @BACKEND_LEVEL
    @pytest.mark.persist_domains("signal")
    def test_threads_racing_on_one_slot_leave_one_written_value(self, backend: Backend, namespace: str) -> None:
        results = race_threads(backend, "slot", namespace, racers=4, keys=10)
        self._check_slot(backend, namespace, results)

    @BACKEND_LEVEL
    @pytest.mark.persist_domains("signal")
    def test_processes_racing_on_one_slot_leave_one_written_value(
        self, backend_factory: Callable[[], Backend], backend: Backend, namespace: str
    ) -> None:
        self.require(backend, shared_between_processes=True)
        results = race_processes(backend_factory, "slot", namespace, racers=3, keys=10)
        self._check_slot(backend, namespace, results)

    @BACKEND_LEVEL
    @pytest.mark.persist_domains("measure")
    def test_remove_racing_write_never_restores_an_older_payload(self, backend: Backend, namespace: str) -> None:
        """A remove racing a write of one bucket key never puts an older payload back (CONTRACTS.md 3.5).

        Two threads for about a second: one writes increasing counters, one removes. After each remove
        the stored counter (removed records included) may not be below the last acknowledged write, and
        at the end it is the last write's, removed or not. A remove that reads the record and writes it
        back flagged undoes a write acknowledged in between (issue 9).
        """
        race = race_remove_write(backend, "measure", namespace, seconds=1.0, max_ops=400)
        assert race.writes > 0, f"the race did not run: {race}"
        assert race.removes > 0, f"the race did not run: {race}"
        assert race.older == 0, (
            f"{race.older} of {race.removes} removes left an older payload than the last acknowledged write "
            f"(first: write {race.first_older[0] if race.first_older else '?'} acknowledged, "
            f"{race.first_older[1] if race.first_older else '?'} stored)"
        )
        assert race.final == race.writes, (
            f"after the race the key holds write {race.final}, not the last acknowledged write {race.writes}"
        )

    @pytest.mark.persist_domains("signal")
    def test_readers_never_see_a_torn_write(self, backend: Backend, namespace: str) -> None:
        """A read racing a replace sees the old or the new value, never a part of one (atomic writes)."""
        store = self.store(backend, "signal", symbol=f"{namespace}TORN", strategy_name="s", exchange_name="x")
        values = [slot_value(who, 0, 40_000) for who in range(3)]
        store.write(values[0])
        stop = threading.Event()
        seen: list[Any] = []
        errors: list[BaseException] = []

        def reader() -> None:
            try:
                while not stop.is_set():
                    seen.append(store.read())
            except BaseException as exc:  # a torn record may not even decode
                errors.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for n in range(60):
                store.write(values[n % 3])
        finally:
            stop.set()
            thread.join()
        assert errors == [], f"a read failed while a write was under way: {errors[0]!r}"
        torn = [v for v in seen if v not in values]
        assert torn == [], f"{len(torn)} of {len(seen)} reads saw a value nobody wrote"

    @pytest.mark.persist_domains("measure")
    def test_threads_share_stores_without_losing_writes(self, backend: Backend, namespace: str) -> None:
        store = self.store(backend, "measure", bucket=f"{namespace}threads")
        errors: list[BaseException] = []

        def work(who: int) -> None:
            try:
                for n in range(25):
                    store.write(f"{who}-{n:03d}", {"who": who, "n": n})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(who,)) for who in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert store.keys() == sorted(f"{who}-{n:03d}" for who in range(4) for n in range(25))

    # -- race checks ------------------------------------------------------------------------------------------

    def _check_one_winner(
        self, backend: Backend, kind: str, namespace: str, results: list[tuple[int, list[Any]]]
    ) -> None:
        winners: dict[Any, list[int]] = {}
        for who, won in results:
            for key in won:
                winners.setdefault(key, []).append(who)
        if kind == "candle":
            store = self.store(backend, "candle", symbol=f"{namespace}RACE/USDT", interval="1m", exchange_name="race")
            window = store.read(15, CANDLE_BASE_MS)
            assert window is not None, "a raced candle is missing"
            stored = {c["timestamp"]: c["who"] for c in window}
        else:
            entries = self.store(backend, "log").read()
            stored = {e["id"]: e["who"] for e in entries if e["id"].startswith(f"{namespace}race-")}
        assert len(stored) == 15
        for key, who in stored.items():
            assert winners.get(key) == [who], f"{key}: stored by {who}, reported won by {winners.get(key)}"

    def _check_slot(self, backend: Backend, namespace: str, results: list[tuple[int, list[Any]]]) -> None:
        store = self.store(
            backend, "signal", symbol=f"{namespace}RACE/USDT", strategy_name="race", exchange_name="race"
        )
        final = store.read()
        written = [slot_value(who, k, 2000) for who, rounds in results for k in rounds]
        assert final in written, f"the slot holds a value nobody wrote (a blend?): {str(final)[:200]}"


def _types(value: Any) -> Any:
    """The type skeleton of a value, to tell 1 from 1.0 and True from 1."""
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__
