"""Clauses that drive the :class:`~persist_core.backend.Backend` surface itself, not the typed stores.

The stores call ``scan`` without bounds (except for candle windows), never write a ``when`` of 0 or
``2**63 - 1``, and seldom reopen: a backend that shifts a bound, orders ints as text, lets context ``a`` see
``ab``'s items, loses a field on the way through storage, cuts a large value, swallows a storage error, hands
out one shared instance or leaks what it opened passes every store clause. These clauses check each of those
directly (CONTRACTS.md 8, docs/writing-an-adapter.md, "Backend-level clauses").
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persist_core.backend import Backend, ItemKey, Key, Record
from persist_core.domains import DOMAINS, DomainSpec, FieldType
from persist_core.errors import PersistError
from persist_core.testing.strategies import key_strings
from persist_core.validation import encode_value

__all__ = ["WHEN_EDGES", "BackendClauses", "StorageBreaker", "broken_folder"]

#: Given the opened backend under test, a context manager inside which every write to its storage fails
#: (and after which the storage works again): the adapter author's error-injection hook.
StorageBreaker = Callable[[Backend], AbstractContextManager[object]]

#: ``when`` values at the edges of what the stores accept (signed 64-bit epoch ms) and of a double's exactness.
WHEN_EDGES: tuple[int | None, ...] = (None, 0, -1, 1, -(2**63), 2**53, 2**53 + 1, 2**63 - 1)
#: Strings whose code-point order differs from naive orders: case, accents, UTF-16 (U+FF61 sorts after the
#: surrogates of U+1F600 in UTF-16, before it by code point), digits as text, a trailing space.
CODE_POINT_KEYS: tuple[str, ...] = ("a", "B", "Z", "é", "\uff61", "\U0001f600", "a ", "ab", "10", "9", "~", "日本", "%")
#: Context values that share a prefix, or differ only by a trailing character that an encoding might drop.
PREFIX_CONTEXTS: tuple[str, ...] = ("a", "ab", "a ", "a  ", "a/", "a/b", "a_", "a%", "a.", "a~", "A", "a\u00a0")
#: Int item keys whose text order differs from their numeric order.
INT_KEYS: tuple[int, ...] = (2, 10, 100, 9, 1000, 0, 1, 99, 2**53 - 1, 2**31, 2**32 + 1)
#: Sizes of large values, in bytes of payload: several MiB, up to just below the stores' default limit.
LARGE_SIZES: tuple[int, ...] = (4 * 2**20, 8 * 2**20 - 4096)

_tags = itertools.count()
_BACKEND_LEVEL = pytest.mark.persist_backend_level
_PROPERTY = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.differing_executors],
)


def _run_property(example: Callable[[st.DataObject], None]) -> None:
    """Run ``example`` as a Hypothesis property with a quarter of the active profile's examples, at least 10.

    Each example creates storage (folders and fsyncs, rows on a server). The settings are built at run time: a
    ``@settings`` at import would freeze the profile in force before ``--hypothesis-profile`` was loaded.
    """
    examples = max(10, settings().max_examples // 4)
    given(data=st.data())(settings(_PROPERTY, max_examples=examples)(example))()


def _pick(backend: Backend, what: str, want: Callable[[DomainSpec], bool]) -> DomainSpec:
    """The first domain the backend stores that ``want`` accepts; skip (by capability) if there is none."""
    for spec in DOMAINS.values():
        if want(spec) and backend.capabilities.supports(spec.name):
            return spec
    pytest.skip(f"the backend stores no domain {what} (Capabilities.domains)")


def _str_items(spec: DomainSpec) -> bool:
    return spec.item is not None and spec.item.type is FieldType.STR


def _int_items(spec: DomainSpec) -> bool:
    return spec.item is not None and spec.item.type is FieldType.INT


def _str_context(spec: DomainSpec) -> bool:
    return any(f.type is FieldType.STR and f.choices is None for f in spec.context)


def _context(spec: DomainSpec, tag: str, **values: Any) -> Key:
    """A valid context of ``spec``: ``tag`` in every free string field, unless ``values`` names the field."""
    out: list[Any] = []
    for field in spec.context:
        if field.name in values:
            out.append(values[field.name])
        elif field.type is FieldType.BOOL:
            out.append(True)
        elif field.choices is not None:
            out.append(min(field.choices))
        else:
            out.append(tag)
    return tuple(out)


def _fresh(spec: DomainSpec) -> Key:
    return _context(spec, f"bk{next(_tags)}")


def _payload(**fields: Any) -> str:
    """A JSON payload; pass ``id`` = the item key where the record may be a collection item (it carries its id)."""
    return encode_value(fields)


def _write(backend: Backend, spec: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
    """Store ``items`` the way the stores do for ``spec``: insert for first-write-wins domains, else put."""
    if spec.first_write_wins:
        assert backend.insert_many(spec, items) == len(items), "insert_many of new keys stored fewer"
    else:
        for key, record in items:
            backend.put(spec, key, record)


def _same(got: Record | None, want: Record) -> bool:
    """Equal records: payloads as JSON (a backend may give back equal JSON text), ``when`` and ``removed`` exactly."""
    try:
        payload = json.loads(got.payload) if got is not None else None
    except ValueError:  # a cut or garbled payload
        return False
    return (
        got is not None
        and payload == json.loads(want.payload)
        and got.when == want.when
        and (got.when is None) == (want.when is None)
        and got.removed == want.removed
    )


def _describe(record: Record | None) -> str:
    if record is None:
        return "None"
    payload = record.payload if len(record.payload) <= 80 else record.payload[:80] + "..."
    return f"Record(payload={payload!r}, when={record.when!r}, removed={record.removed!r})"


def _check_records(backend: Backend, spec: DomainSpec, expected: dict[Key, Record], label: str) -> None:
    """``get`` and ``scan`` give back every expected record, every field equal."""
    for key, want in expected.items():
        got = backend.get(spec, key)
        assert _same(got, want), f"{label}: get{key!r} gave {_describe(got)}, stored {_describe(want)}"
    if spec.item is None:
        return
    contexts: dict[Key, dict[ItemKey, Record]] = {}
    for key, want in expected.items():
        contexts.setdefault(key[:-1], {})[key[-1]] = want
    for context, records in contexts.items():
        scanned = backend.scan(spec, context)
        assert [item for item, _ in scanned] == sorted(records), f"{label}: scan{context!r} listed other items"
        for item, got in scanned:
            assert _same(got, records[item]), (
                f"{label}: scan{context!r} gave {item!r} -> {_describe(got)}, stored {_describe(records[item])}"
            )


def _with_keys(backend: Backend, spec: DomainSpec, keys: Sequence[ItemKey]) -> Key:
    """A fresh context of ``spec`` holding a record under each of ``keys``."""
    context = _fresh(spec)
    _write(backend, spec, [((*context, k), Record(_payload(id=k))) for k in keys])
    return context


def _listed(
    backend: Backend, spec: DomainSpec, context: Key, start: ItemKey | None = None, stop: ItemKey | None = None
) -> list[ItemKey]:
    """The item keys ``scan`` lists."""
    return [item for item, _ in backend.scan(spec, context, start, stop)]


def _bounded(keys: Sequence[ItemKey], start: ItemKey | None, stop: ItemKey | None) -> list[ItemKey]:
    return [k for k in sorted(keys) if (start is None or k >= start) and (stop is None or k < stop)]


def _open_fds() -> set[str] | None:
    """What each open descriptor of this process points at (Linux ``/proc``), or ``None`` elsewhere."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    out = set()
    for name in names:
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            out.add(f"{name} -> {os.readlink(f'/proc/self/fd/{name}')}")
    return out


class BackendClauses:
    """The backend-level clauses; mixed into :class:`~persist_core.testing.BackendContractTests`.

    The fixtures ``backend`` and ``backend_factory`` come from the kit's base class; ``break_storage`` is the
    optional error-injection hook an adapter author overrides (see :meth:`break_storage`).
    """

    @pytest.fixture
    def break_storage(self) -> StorageBreaker | None:
        """Override to enable the error-injection clause: return a callable that takes the opened backend and
        returns a context manager inside which every write to the backend's storage fails, and after which the
        storage works again (rename the table or folder away and back, replace a folder with a file, ...).

        ``None`` (the default) skips the clause, and the kit's summary lists it as skipped by capability.
        """
        return None

    # -- scan: bounds, order, isolation --------------------------------------------------------------------

    @_BACKEND_LEVEL
    @pytest.mark.parametrize("items", ["str", "int"])
    def test_backend_scan_start_inclusive_stop_exclusive(self, backend: Backend, items: str) -> None:
        """``scan(start, stop)``: ``start`` inclusive, ``stop`` exclusive, ``None`` open, bounds need not exist."""
        if items == "str":
            spec = _pick(backend, "with string item keys", _str_items)
            keys: list[Any] = ["b", "c", "d", "f"]
            bounds: list[Any] = [None, "a", "b", "c", "ca", "d", "e", "f", "g"]
        else:
            spec = _pick(backend, "with int item keys", _int_items)
            keys = [20, 30, 40, 60]
            bounds = [None, 10, 20, 30, 31, 40, 50, 60, 70]
        context = _with_keys(backend, spec, keys)
        for start, stop in itertools.product(bounds, bounds):
            got = _listed(backend, spec, context, start, stop)
            assert got == _bounded(keys, start, stop), f"scan(start={start!r}, stop={stop!r}) of {keys}"

    @_BACKEND_LEVEL
    def test_backend_scan_orders_int_items_numerically(self, backend: Backend) -> None:
        """Int item keys (candle timestamps) order as numbers: 2 < 10 < 100, never as text."""
        spec = _pick(backend, "with int item keys", _int_items)
        context = _with_keys(backend, spec, INT_KEYS)
        assert _listed(backend, spec, context) == sorted(INT_KEYS)
        assert _listed(backend, spec, context, 2, 1000) == [2, 9, 10, 99, 100]

    @_BACKEND_LEVEL
    def test_backend_scan_orders_strings_by_code_point(self, backend: Backend) -> None:
        """String item keys order by code point (UTF-8 byte order), not by locale, case folding or UTF-16."""
        spec = _pick(backend, "with string item keys", _str_items)
        context = _with_keys(backend, spec, CODE_POINT_KEYS)
        assert _listed(backend, spec, context) == sorted(CODE_POINT_KEYS)
        assert _listed(backend, spec, context, "a", "é") == _bounded(CODE_POINT_KEYS, "a", "é")

    @_BACKEND_LEVEL
    def test_property_backend_scan_bounds_and_order(self, backend: Backend) -> None:
        """Any keys and bounds: ``scan`` lists exactly the keys in ``[start, stop)``, ascending (Hypothesis)."""
        _run_property(lambda data: self._scan_example(backend, data))

    def _scan_example(self, backend: Backend, data: st.DataObject) -> None:
        caps = backend.capabilities
        kinds = [
            k
            for k, want in (("int", _int_items), ("str", _str_items))
            if any(want(s) and caps.supports(s.name) for s in DOMAINS.values())
        ]
        if not kinds:
            pytest.skip("the backend stores no domain with item keys (Capabilities.domains)")
        if data.draw(st.sampled_from(kinds), label="items") == "int":
            spec = _pick(backend, "with int item keys", _int_items)
            keys_st: st.SearchStrategy[Any] = st.sampled_from(INT_KEYS) | st.integers(0, 2**53 - 1)
        else:
            spec = _pick(backend, "with string item keys", _str_items)
            keys_st = key_strings()
        keys = data.draw(st.lists(keys_st, max_size=6, unique=True), label="keys")
        bound = st.none() | keys_st | (st.sampled_from(keys) if keys else st.none())
        start, stop = data.draw(bound, label="start"), data.draw(bound, label="stop")
        context = _fresh(spec)
        # A domain without context fields (log) has one context for every example: count what is there.
        records = dict(backend.scan(spec, context))
        new = {k: Record(_payload(id=k)) for k in keys if k not in records}
        _write(backend, spec, [((*context, k), r) for k, r in new.items()])
        records.update(new)
        got = backend.scan(spec, context, start, stop)
        assert [item for item, _ in got] == _bounded(list(records), start, stop)
        assert all(_same(record, records[item]) for item, record in got)

    @_BACKEND_LEVEL
    def test_backend_contexts_sharing_a_prefix_are_isolated(self, backend: Backend) -> None:
        """Context ``a`` never sees ``ab``'s (or ``a ``'s, ``a/``'s ...) records, through scan or get."""
        checked = 0
        for want in (_str_items, _int_items, lambda s: s.item is None):
            spec = next(
                (s for s in DOMAINS.values() if want(s) and _str_context(s) and backend.capabilities.supports(s.name)),
                None,
            )
            if spec is None:
                continue
            fields = [f for f in spec.context if f.type is FieldType.STR and f.choices is None]
            for field in {fields[0].name: fields[0], fields[-1].name: fields[-1]}.values():
                tag = f"bk{next(_tags)}"
                contexts = [_context(spec, tag, **{field.name: value}) for value in PREFIX_CONTEXTS]
                if field.may_be_empty:
                    contexts.append(_context(spec, tag, **{field.name: ""}))
                self._check_isolated(backend, spec, contexts)
                checked += 1
        if not checked:
            pytest.skip("the backend stores no domain with a free string context field (Capabilities.domains)")

    @_BACKEND_LEVEL
    def test_property_backend_context_isolation(self, backend: Backend) -> None:
        """A context and its extensions (``x``, ``x`` + suffix) hold separate records (Hypothesis)."""
        _run_property(lambda data: self._isolation_example(backend, data))

    def _isolation_example(self, backend: Backend, data: st.DataObject) -> None:
        spec = _pick(backend, "with string items and context", lambda s: _str_items(s) and _str_context(s))
        field = data.draw(st.sampled_from([f for f in spec.context if f.type is FieldType.STR and f.choices is None]))
        base = data.draw(key_strings(), label="base")
        suffixes = st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=3)
        extended = (base + suffix for suffix in data.draw(st.lists(suffixes, min_size=1, max_size=3)))
        values = {base} | {v for v in extended if len(v.encode()) <= 80}
        tag = f"bk{next(_tags)}"
        self._check_isolated(backend, spec, [_context(spec, tag, **{field.name: v}) for v in sorted(values)])

    def _check_isolated(self, backend: Backend, spec: DomainSpec, contexts: list[Key]) -> None:
        item = 7 if spec.item is not None and spec.item.type is FieldType.INT else "item"
        keys = [(*c, item) if spec.item is not None else c for c in contexts]
        for n, key in enumerate(keys):
            _write(backend, spec, [(key, Record(_payload(context=list(key[: len(spec.context)]), n=n)))])
        for n, (context, key) in enumerate(zip(contexts, keys, strict=True)):
            got = backend.get(spec, key)
            assert got is not None, f"get{key!r} lost its record"
            assert json.loads(got.payload)["n"] == n, f"get{key!r} gave {_describe(got)}: another context's record"
            if spec.item is not None:
                listed = [(i, json.loads(r.payload)["n"]) for i, r in backend.scan(spec, context)]
                assert listed == [(item, n)], f"scan{context!r} listed {listed}: records of other contexts leaked in"

    # -- read_window ----------------------------------------------------------------------------------------

    @_BACKEND_LEVEL
    def test_backend_read_window_returns_the_grid_records(self, backend: Backend) -> None:
        """``read_window`` gives the records at ``start + i * step`` below ``stop``, ascending; off-grid and
        out-of-range records never; at a gap it may stop (the window is a miss either way)."""
        spec = _pick(backend, "with int item keys", _int_items)
        context = _fresh(spec)
        step, start = 60_000, 1_700_000_040_000
        grid = [start + i * step for i in range(6)]
        around = [start - step, start + 7, start + 6 * step, start + 7 * step]  # before, off-grid, at and after stop
        records = {k: Record(_payload(id=k)) for k in grid + around}
        _write(backend, spec, [((*context, k), r) for k, r in records.items()])
        stop = start + 6 * step
        full = backend.read_window(spec, context, start, stop, step)
        assert [k for k, _ in full] == grid
        assert all(_same(r, records[k]) for k, r in full)
        assert [k for k, _ in backend.read_window(spec, context, grid[2], grid[4], step)] == grid[2:4]
        gap_context = _fresh(spec)
        present = [k for n, k in enumerate(grid) if n != 3]
        _write(backend, spec, [((*gap_context, k), records[k]) for k in present])
        got = [k for k, _ in backend.read_window(spec, gap_context, start, stop, step)]
        assert got in (present, present[:3]), f"a window with a gap at {grid[3]} gave {got}"

    # -- record fields through storage and a reopen --------------------------------------------------------

    def _edge_records(self, backend: Backend) -> list[tuple[DomainSpec, dict[Key, Record]]]:
        """Records with every edge ``when``, removed and not, of the timed domains the backend stores."""
        out: list[tuple[DomainSpec, dict[Key, Record]]] = []
        timed = [s for s in DOMAINS.values() if s.timed and backend.capabilities.supports(s.name)]
        with_item = [s for s in timed if s.soft_delete] + [s for s in timed if s.item is not None]
        for spec in [*with_item[:1], *[s for s in timed if s.item is None][:1]]:
            removable = spec.soft_delete and backend.capabilities.keeps_removed_records
            expected: dict[Key, Record] = {}
            for n, when in enumerate(WHEN_EDGES):
                context = _fresh(spec)
                key = (*context, f"w{n}") if spec.item is not None else context
                expected[key] = Record(_payload(n=n, when=when), when)
                if removable:
                    expected[(*context, f"r{n}")] = Record(_payload(n=n, removed=True), when, removed=True)
            _write(backend, spec, list(expected.items()))
            if removable:  # and mark_removed, which must keep the payload and when
                for n, when in enumerate(WHEN_EDGES):
                    key = (*_fresh(spec), f"m{n}")
                    backend.put(spec, key, Record(_payload(n=n, marked=True), when))
                    backend.mark_removed(spec, key)
                    expected[key] = Record(_payload(n=n, marked=True), when, removed=True)
            out.append((spec, expected))
        if not out:
            pytest.skip("the backend stores no timed domain (Capabilities.domains)")
        return out

    @_BACKEND_LEVEL
    def test_backend_record_fields_round_trip(self, backend: Backend) -> None:
        """Every field comes back: payload, ``when`` at its edges (0, negative, 2**53, 2**63 - 1, None), removed."""
        for spec, expected in self._edge_records(backend):
            _check_records(backend, spec, expected, spec.name)

    @_BACKEND_LEVEL
    def test_backend_record_fields_survive_reopen(self, backend_factory: Callable[[], Backend]) -> None:
        """The same records, read by a new backend from the factory after the writer closed."""
        first = backend_factory()
        first.open()
        try:
            if not first.capabilities.shared_between_processes:
                pytest.skip("the backend declares shared_between_processes=False")
            written = self._edge_records(first)
        finally:
            first.close()
        with backend_factory() as second:
            for spec, expected in written:
                _check_records(second, spec, expected, f"{spec.name} after a reopen")

    @_BACKEND_LEVEL
    def test_backend_mark_removed_keeps_payload_and_when(self, backend: Backend) -> None:
        """``mark_removed`` sets the flag and keeps the rest; on a missing key it stores nothing."""
        spec = _pick(backend, "with soft delete", lambda s: s.soft_delete)
        if not backend.capabilities.keeps_removed_records:
            pytest.skip("the backend declares keeps_removed_records=False")
        context = _fresh(spec)
        kept = Record(_payload(audit={"trail": [1, 2.5, "three"]}, big="x" * 5000), 1_700_000_000_123)
        backend.put(spec, (*context, "k"), kept)
        backend.mark_removed(spec, (*context, "k"))
        backend.mark_removed(spec, (*context, "k"))  # twice: still the same record
        backend.mark_removed(spec, (*context, "never-written"))
        want = Record(kept.payload, kept.when, removed=True)
        _check_records(backend, spec, {(*context, "k"): want}, "after mark_removed")
        assert backend.get(spec, (*context, "never-written")) is None

    @_BACKEND_LEVEL
    def test_backend_large_values_read_back_whole(self, backend_factory: Callable[[], Backend]) -> None:
        """Values of several MiB (up to the stores' 8 MiB default limit) come back whole, also after a reopen."""
        with backend_factory() as backend:
            spec = _pick(backend, "with item keys", lambda s: s.item is not None)
            context = _fresh(spec)
            # A pattern of 1- to 4-byte characters: a cut anywhere changes the text or breaks the JSON.
            unit = "abcdefgh-é-日本-\U0001f600-"
            per_unit = len(encode_value(unit * 2).encode()) - len(encode_value(unit).encode())
            expected = {}
            for n, size in enumerate(LARGE_SIZES):
                text = unit * ((size - 64) // per_unit)
                item: Any = n if spec.item is not None and spec.item.type is FieldType.INT else f"large-{n}"
                expected[(*context, item)] = Record(_payload(id=item, n=n, blob=text))
            _write(backend, spec, list(expected.items()))
            _check_records(backend, spec, expected, "a large value")
            shared = backend.capabilities.shared_between_processes
        if shared:
            with backend_factory() as again:
                _check_records(again, spec, expected, "a large value after a reopen")

    # -- the factory and close() ---------------------------------------------------------------------------

    @_BACKEND_LEVEL
    def test_factory_builds_a_new_backend_each_call(self, backend_factory: Callable[[], Backend]) -> None:
        """The factory returns a new backend each call; on shared storage, closing one leaves the other working."""
        one, two = backend_factory(), backend_factory()
        assert one is not two, "backend_factory returned the same backend object twice (a shared instance)"
        one.open()
        two.open()
        try:
            caps = one.capabilities
            spec = next((s for s in DOMAINS.values() if s.item is not None and caps.supports(s.name)), None)
            if spec is None or not caps.shared_between_processes:
                return
            context = _fresh(spec)
            _write(one, spec, [((*context, "from-one"), Record(_payload(id="from-one", by="one")))])
            one.close()
            _write(two, spec, [((*context, "from-two"), Record(_payload(id="from-two", by="two")))])
            assert [item for item, _ in two.scan(spec, context)] == ["from-one", "from-two"]
        finally:
            one.close()
            two.close()

    @_BACKEND_LEVEL
    def test_close_releases_what_open_took(self, backend_factory: Callable[[], Backend]) -> None:
        """Open, use and close cycles leave no open file descriptors or threads behind."""
        spec = next(iter(DOMAINS.values()))

        def cycle() -> None:
            nonlocal spec
            with backend_factory() as backend:
                spec = _pick(backend, "with item keys", lambda s: s.item is not None)
                context = _fresh(spec)
                item = next(_tags) if _int_items(spec) else f"k{next(_tags)}"  # new each cycle: shared storage
                _write(backend, spec, [((*context, item), Record(_payload(id=item)))])
                backend.scan(spec, context)

        cycle()  # lazy imports, module-level caches and pools of drivers are not a leak
        before_fds, before_threads = _open_fds(), threading.active_count()
        for _ in range(3):
            cycle()
        deadline = time.monotonic() + 5.0  # driver threads and sockets may take a moment to wind down
        while True:
            gc.collect()
            fds, threads = _open_fds(), threading.active_count()
            leaked_fds = sorted(fds - before_fds) if fds is not None and before_fds is not None else []
            if (not leaked_fds and threads <= before_threads) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert leaked_fds == [], f"3 open/close cycles left {len(leaked_fds)} descriptors open: {leaked_fds[:10]}"
        assert threads <= before_threads, (
            f"3 open/close cycles left {threads - before_threads} threads running: "
            f"{[t.name for t in threading.enumerate()]}"
        )

    # -- error injection ----------------------------------------------------------------------------------

    @_BACKEND_LEVEL
    def test_storage_error_surfaces_as_persist_error(
        self, backend: Backend, break_storage: StorageBreaker | None
    ) -> None:
        """With its storage broken (the ``break_storage`` hook), every write raises a PersistError instead of
        reporting success; once the storage is back, writes succeed again."""
        if break_storage is None:
            pytest.skip("no break_storage hook: the test class declares no way to break its storage")
        writes = self._failing_writes(backend)
        with break_storage(backend):
            for label, write in writes:
                with pytest.raises(PersistError):
                    write()
                    pytest.fail(f"{label} reported success while the storage was broken")
        for _, write in writes:
            write()  # the storage is back: the same writes now succeed

    def _failing_writes(self, backend: Backend) -> list[tuple[str, Callable[[], object]]]:
        """One write of each backend operation (put, put_many, insert_many, mark_removed) the backend serves."""
        writes: list[tuple[str, Callable[[], object]]] = []
        caps = backend.capabilities
        slot = next((s for s in DOMAINS.values() if s.item is None and caps.supports(s.name)), None)
        if slot is not None:
            key = _fresh(slot)
            writes.append((f"put({slot.name})", lambda: backend.put(slot, key, Record(_payload(v=1)))))
        upserts = [s for s in DOMAINS.values() if not s.first_write_wins and caps.supports(s.name)]
        keyed = next((s for s in upserts if _str_items(s)), None)
        if keyed is not None:
            many = [((*_fresh(keyed), f"k{n}"), Record(_payload(id=f"k{n}", v=n))) for n in range(3)]
            writes.append((f"put_many({keyed.name})", lambda: backend.put_many(keyed, many)))
        first = next((s for s in DOMAINS.values() if s.first_write_wins and caps.supports(s.name)), None)
        if first is not None:
            item: Any = 1_700_000_000_000 if _int_items(first) else "k"
            context = _fresh(first)
            counter = itertools.count()

            def insert() -> object:  # a new key each call: the retry after the repair must store it
                n = next(counter)
                new = item + n * 60_000 if isinstance(item, int) else f"{item}{n}"
                return backend.insert_many(first, [((*context, new), Record(_payload(id=new, v=n)))])

            writes.append((f"insert_many({first.name})", insert))
        soft = next((s for s in DOMAINS.values() if s.soft_delete and caps.supports(s.name)), None)
        if soft is not None:
            removable = (*_fresh(soft), "k")
            backend.put(soft, removable, Record(_payload(v=1)))  # exists before the storage breaks
            writes.append((f"mark_removed({soft.name})", lambda: backend.mark_removed(soft, removable)))
        return writes


@contextlib.contextmanager
def broken_folder(path: str | os.PathLike[str]) -> Iterator[None]:
    """Put a regular file where the folder ``path`` was, for the ``with`` block; move the folder back after.

    A ``break_storage`` hook for backends that keep their storage under one folder. It works for root too, who
    ignores permission bits: creating anything under a regular file fails with ``ENOTDIR``.
    """
    folder = os.fspath(path)
    aside = f"{folder}.broken-{os.getpid()}"
    os.rename(folder, aside)
    try:
        with open(folder, "wb"):
            pass
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder)
        os.rename(aside, folder)
