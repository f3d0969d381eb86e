"""Contract clauses of listing and deletion (CONTRACTS.md 3.8), for backends that declare them.

The clauses drive :meth:`~persist_core.backend.Backend.list_contexts`,
:meth:`~persist_core.backend.Backend.list_records` and :meth:`~persist_core.backend.Backend.delete_records`
directly: listing is complete, in key order, paged without gaps or repeats, and never shows a record of
another domain or context; deletion removes exactly the records it names.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persist_core.backend import Backend, Key, Record
from persist_core.domains import DOMAINS, DomainSpec, FieldType, Kind
from persist_core.validation import check_field

__all__ = ["ListingClauses", "list_all", "listable_key"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: Strings that share prefixes, differ in case or only past an ASCII boundary: the orders that go wrong.
_SUFFIXES = ("", "a", "ab", "a b", "a~", "B", "b", "é", "ü", "z", "\u4e2d", "10", "9")
#: Candle timestamps whose text order differs from their numeric order.
_TIMESTAMPS = (2, 9, 10, 100, 1_000, 1_700_000_000_000)
_examples = itertools.count()


def _needs(**flags: bool) -> Callable[[_F], _F]:
    """Deselected in a class whose declared capabilities lack ``flags`` (skipped otherwise), and on the
    asyncio face (the operations are the backend's: one face checks them)."""

    def mark(clause: _F) -> _F:
        marked: _F = pytest.mark.persist_backend_level(pytest.mark.persist_capabilities(**flags)(clause))
        return marked

    return mark


def listable_key(spec: DomainSpec, namespace: str, suffixes: Iterable[Any]) -> Key:
    """A valid key of ``spec`` built from ``suffixes`` (one per field; cycled): each free string field is
    ``namespace + suffix``, so that the keys of one namespace keep the order of their suffixes."""
    out: list[Any] = []
    fields = (*spec.context, *([spec.item] if spec.item else []))
    for field, suffix in zip(fields, itertools.cycle(suffixes)):
        if field.type is FieldType.BOOL:
            out.append(len(str(suffix)) % 2 == 0)
        elif field.type is FieldType.INT:
            out.append(suffix if isinstance(suffix, int) and not isinstance(suffix, bool) else _TIMESTAMPS[0])
        elif field.choices is not None:
            out.append(sorted(field.choices)[len(str(suffix)) % len(field.choices)])
        else:
            out.append(f"{namespace}{suffix}")
    return tuple(check_field(field, value) for field, value in zip(fields, out, strict=True))


def _in_namespace(spec: DomainSpec, key: Key, namespace: str) -> bool:
    fields = (*spec.context, *([spec.item] if spec.item else []))
    texts = [v for f, v in zip(fields, key, strict=True) if f.type is FieldType.STR and f.choices is None]
    return bool(texts) and all(str(v).startswith(namespace) for v in texts)


def _record(spec: DomainSpec, key: Key, n: int, *, removed: bool = False) -> Record:
    """A valid record for ``key`` (a collection item carries its key as its ``id``)."""
    payload: dict[str, Any] = {"id": key[-1], "n": n} if spec.kind is Kind.COLLECTION else {"n": n}
    if spec.kind in (Kind.CANDLE, Kind.COLLECTION):  # as their stores write them: no logical time
        return Record(json.dumps(payload, separators=(",", ":")))
    return Record(json.dumps(payload, separators=(",", ":")), when=1_700_000_000_000 + n, removed=removed)


def list_all(backend: Backend, spec: DomainSpec, page: int) -> list[tuple[Key, Record]]:
    """Every record of ``spec`` through :meth:`Backend.list_records`, ``page`` at a time."""
    out: list[tuple[Key, Record]] = []
    after: Key | None = None
    while True:
        chunk = backend.list_records(spec, after=after, limit=page)
        assert len(chunk) <= page, f"list_records returned {len(chunk)} records for limit={page}"
        _check_progress([key for key, _ in chunk], after, "list_records")
        out.extend(chunk)
        if len(chunk) < page:
            return out
        after = chunk[-1][0]


def _check_progress(keys: list[Key], after: Key | None, operation: str) -> None:
    """A page holds only keys after the cursor, ascending: else paging repeats itself or never ends."""
    if keys and after is not None:
        assert keys[0][: len(after)] > after, f"{operation}(after={after!r}) returned {keys[0]!r}"
    assert all(a < b for a, b in itertools.pairwise(keys)), f"{operation} returned a page out of order"


def _all_contexts(backend: Backend, spec: DomainSpec, page: int) -> list[tuple[Key, int]]:
    out: list[tuple[Key, int]] = []
    after: Key | None = None
    while True:
        chunk = backend.list_contexts(spec, after=after, limit=page)
        assert len(chunk) <= page, f"list_contexts returned {len(chunk)} contexts for limit={page}"
        _check_progress([context for context, _ in chunk], after, "list_contexts")
        out.extend(chunk)
        if len(chunk) < page:
            return out
        after = chunk[-1][0]


def _write(backend: Backend, spec: DomainSpec, pairs: list[tuple[Key, Record]]) -> None:
    if spec.first_write_wins:
        assert backend.insert_many(spec, pairs) == len(pairs)
    else:
        backend.put_many(spec, pairs)


def _sample(spec: DomainSpec, namespace: str) -> dict[Key, Record]:
    """Keys of ``spec`` whose orders differ as text, by code point and numerically, with prefix-sharing
    contexts; some records removed where the domain soft-deletes."""
    keys: set[Key] = set()
    for first, second, item in itertools.product(_SUFFIXES[:4], ("a", "é"), (2, 10, "9", "10")):
        suffixes = [first, second, second, item] if spec.item else [first, second, second, first]
        keys.add(listable_key(spec, namespace, suffixes))
    return {key: _record(spec, key, n, removed=spec.soft_delete and n % 3 == 0) for n, key in enumerate(sorted(keys))}


class ListingClauses:
    """Listing and deletion clauses; mixed into :class:`~persist_core.testing.BackendContractTests`."""

    @pytest.fixture
    def listing_backend(self, backend: Backend) -> Backend:
        """The opened backend, if it declares listing (skip otherwise)."""
        if not backend.capabilities.listing:
            pytest.skip("the backend declares listing=False")
        return backend

    @staticmethod
    def _domains(backend: Backend) -> list[DomainSpec]:
        return [spec for spec in DOMAINS.values() if backend.capabilities.supports(spec.name)]

    @_needs(listing=True)
    @pytest.mark.parametrize("page", [1, 7, 1000])
    def test_listing_is_complete_ordered_and_paged(self, listing_backend: Backend, page: int) -> None:
        """Every record, once, ascending by key (strings by code point, ints numerically), its fields intact,
        whatever the page size; nothing of another domain."""
        written: dict[str, dict[Key, Record]] = {}
        for spec in self._domains(listing_backend):
            written[spec.name] = _sample(spec, "L")
            _write(listing_backend, spec, list(written[spec.name].items()))
        for spec in self._domains(listing_backend):
            listed = list_all(listing_backend, spec, page)
            keys = [key for key, _ in listed]
            assert keys == sorted(written[spec.name]), f"{spec.name}: listing differs from the sorted keys written"
            assert dict(listed) == written[spec.name], f"{spec.name}: a listed record differs from the one written"

    @_needs(listing=True)
    def test_contexts_are_listed_in_order_with_their_counts(self, listing_backend: Backend) -> None:
        for spec in self._domains(listing_backend):
            sample = _sample(spec, "C")
            _write(listing_backend, spec, list(sample.items()))
            width = len(spec.context)
            expected: dict[Key, int] = {}
            for key in sample:
                expected[key[:width]] = expected.get(key[:width], 0) + 1
            for page in (1, 3, 1000):
                assert _all_contexts(listing_backend, spec, page) == sorted(expected.items()), spec.name

    @_needs(listing=True)
    def test_a_context_cursor_skips_that_whole_context(self, listing_backend: Backend) -> None:
        for spec in self._domains(listing_backend):
            if spec.item is None:
                continue
            sample = _sample(spec, "S")
            _write(listing_backend, spec, list(sample.items()))
            width = len(spec.context)
            contexts = sorted({key[:width] for key in sample})
            cursor = contexts[len(contexts) // 2]
            listed = [key for key, _ in listing_backend.list_records(spec, after=cursor, limit=10_000)]
            assert listed == sorted(key for key in sample if key[:width] > cursor), spec.name
            assert [c for c, _ in listing_backend.list_contexts(spec, after=cursor, limit=10_000)] == [
                c for c in contexts if c > cursor
            ], spec.name

    @_needs(listing=True, deletion=True)
    def test_deletion_removes_exactly_the_named_records(self, listing_backend: Backend) -> None:
        if not listing_backend.capabilities.deletion:
            pytest.skip("the backend declares deletion=False")
        samples = {spec.name: _sample(spec, "D") for spec in self._domains(listing_backend)}
        for spec in self._domains(listing_backend):
            _write(listing_backend, spec, list(samples[spec.name].items()))
        victim = self._domains(listing_backend)[0]
        keys = sorted(samples[victim.name])
        doomed = keys[::3]
        missing = listable_key(victim, "never-written-", ["x"])
        assert listing_backend.delete_records(victim, [*doomed, missing]) == len(doomed)
        assert listing_backend.delete_records(victim, doomed) == 0, "deleting again found records"
        for key in doomed:
            assert listing_backend.get(victim, key) is None
        kept = {key: rec for key, rec in samples[victim.name].items() if key not in set(doomed)}
        assert dict(list_all(listing_backend, victim, 1000)) == kept
        for spec in self._domains(listing_backend)[1:]:
            assert dict(list_all(listing_backend, spec, 1000)) == samples[spec.name], f"{spec.name} was touched"

    @_needs(listing=True, deletion=True)
    def test_a_deleted_key_can_be_written_again(self, listing_backend: Backend) -> None:
        """After deletion a first-write-wins key is free again (prune, then a re-download of a candle)."""
        if not listing_backend.capabilities.deletion:
            pytest.skip("the backend declares deletion=False")
        for spec in self._domains(listing_backend):
            key = listable_key(spec, "W", ["a", "b", "c", 10])
            _write(listing_backend, spec, [(key, _record(spec, key, 1))])
            assert listing_backend.delete_records(spec, [key]) == 1
            _write(listing_backend, spec, [(key, _record(spec, key, 2))])
            assert listing_backend.get(spec, key) == _record(spec, key, 2), spec.name

    @_needs(listing=True)
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def test_property_listing_matches_what_was_written(self, listing_backend: Backend, data: st.DataObject) -> None:
        """Any set of keys, any page size: the listing of the example's keys is exactly their sorted set, and
        the whole listing is strictly ascending; deleting some (if declared) removes exactly those."""
        spec = data.draw(st.sampled_from(self._domains(listing_backend)), label="domain")
        namespace = f"p{next(_examples)}-"
        suffix = st.one_of(st.sampled_from(_SUFFIXES), st.sampled_from(_TIMESTAMPS), st.text(min_size=1, max_size=4))
        drawn = data.draw(st.lists(st.lists(suffix, min_size=4, max_size=4), min_size=1, max_size=25), label="keys")
        keys = sorted({listable_key(spec, namespace, [_clean(s) for s in suffixes]) for suffixes in drawn})
        _write(listing_backend, spec, [(key, _record(spec, key, n)) for n, key in enumerate(keys)])
        page = data.draw(st.integers(1, 30), label="page")
        listed = [key for key, _ in list_all(listing_backend, spec, page)]
        assert all(a < b for a, b in itertools.pairwise(listed)), "the listing is not strictly ascending"
        assert [key for key in listed if _in_namespace(spec, key, namespace)] == keys
        if listing_backend.capabilities.deletion:
            doomed = data.draw(st.lists(st.sampled_from(keys), unique=True), label="deleted")
            assert listing_backend.delete_records(spec, doomed) == len(doomed)
            after = [key for key, _ in list_all(listing_backend, spec, page) if _in_namespace(spec, key, namespace)]
            assert after == [key for key in keys if key not in set(doomed)]


def _clean(suffix: Any) -> Any:
    """A drawn suffix made a valid key part: no NUL, no lone surrogate, no control character."""
    if isinstance(suffix, str):
        cleaned = "".join(ch for ch in suffix if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF)
        return cleaned or "x"
    return suffix
