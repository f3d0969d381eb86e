"""Key injectivity as a property over all key fields at once (CONTRACTS.md 4), driven on the backend itself.

Random text almost never finds the keys that a lossy encoding merges, so the strategies here build them on
purpose, as groups of distinct keys that a plausible encoding maps to one place: a separator moved across the
boundary of two fields (``a|b`` + ``c`` against ``a`` + ``b|c``), a character against a spelling of its escape
(``/`` against ``%2F``), leading or trailing whitespace, the Unicode normalisation forms of one text, case
variants, long keys that differ only in their last character (all fields long at once, so that a truncated
joined key merges them too), and the empty ``frame_name`` against the placeholders an adapter might store for
it. Each group varies one or two fields of a random full key; the other fields, booleans, intervals and candle
timestamps are random too.
"""

from __future__ import annotations

import functools
import itertools
import json
import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from persist_core.backend import Backend, Key, Record
from persist_core.domains import DOMAINS, DomainSpec, FieldType, KeyField
from persist_core.errors import InvalidKeyError
from persist_core.testing.samples import record_for
from persist_core.testing.strategies import key_strings
from persist_core.validation import MAX_KEY_BYTES, TIMESTAMP_LIMIT, check_field

__all__ = ["KeyClauses", "colliding_keys", "twin_keys"]

#: Separators that adapters join key fields with, and escapes they use.
SEPARATORS = ("|", "~", "_", ":", "/", "\\", "%2F", "-", ".", ",", ";", " ")
#: What an adapter might store for the empty ``frame_name``.
EMPTY_PLACEHOLDERS = ("_", "-", "~", ".", " ", "%", "0", "null", "None", "none", "NULL", "default", "empty", "<empty>")
#: Whitespace that a trimming adapter drops (all valid in keys: none is a control character).
WHITESPACE = (" ", "  ", "\u00a0", "\u2003", "\u3000", "\u2028", "\u200b", "\ufeff")
#: Characters with canonical or compatibility decompositions (NFC/NFD/NFKC/NFKD differ), and case traps.
# é Å, the Angstrom sign, Ω, the Ohm sign, the Kelvin sign, ﬁ, ①, fullwidth K, halfwidth ka, ǅ, 한, ẛ̣, ², ½, ™, ñ ç Ü
DECOMPOSABLE = "\u00e9\u00c5\u212b\u03a9\u2126\u212a\ufb01\u2460\uff2b\uff76" + (
    "\u01c5\ud55c\u1e9b\u0323\u00b2\u00bd\u2122\u00f1\u00e7\u00dc"
)
CASE_TRAPS = "aZ\u00df\u0130\u0131\u01c5\u03a3\u03c2"  # a Z ß İ, dotless i, ǅ, Σ, final ς
#: Characters whose UTF-8 takes 2, 3 and 4 bytes (and 3 times as many escaped), to fill long keys.
FILLERS = ("é", "日", "🚀")

_chars = st.characters(exclude_categories=["Cc", "Cs"])
_part = st.text(st.sampled_from("ab|~_:/%\\ .-") | _chars, max_size=5)


def _fits(value: str) -> bool:
    return len(value.encode()) <= MAX_KEY_BYTES


@functools.cache
def _random_field(field: KeyField) -> st.SearchStrategy[Any]:
    if field.type is FieldType.BOOL:
        return st.booleans()
    if field.type is FieldType.INT:
        return st.integers(0, TIMESTAMP_LIMIT - 1)
    if field.choices is not None:
        return st.sampled_from(sorted(field.choices))
    if field.may_be_empty:
        return st.just("") | key_strings()
    return key_strings()


def _fields(spec: DomainSpec) -> list[KeyField]:
    """Every field of a full key, in key order (context fields, then the item key)."""
    return [*spec.context, *([spec.item] if spec.item is not None else [])]


def _valid(fields: list[KeyField], key: list[Any]) -> bool:
    try:
        for field, value in zip(fields, key, strict=True):
            check_field(field, value)
    except InvalidKeyError:
        return False
    return True


Variants = list[dict[int, Any]]


@st.composite
def _split(draw: st.DrawFn, texts: list[int]) -> Variants:
    """A separator moved across the boundary of two neighbouring text fields, for every separator of the list
    and one drawn: an adapter joins fields with some character, and only that one merges keys."""
    at = draw(st.integers(0, len(texts) - 2))
    left, right = texts[at], texts[at + 1]
    a, b, c = draw(_part.filter(bool)), draw(_part), draw(_part.filter(bool))
    out: Variants = []
    for sep in (*SEPARATORS, draw(st.text(_chars, min_size=1, max_size=2))):
        out += [{left: a + sep + b, right: c}, {left: a, right: b + sep + c}]
    return out


@st.composite
def _escape(draw: st.DrawFn, texts: list[int]) -> Variants:
    """A character against the spellings an escaping adapter may give it (``/`` and ``%2F``, ``\\/``, ``_``)."""
    at = draw(st.sampled_from(texts))
    a, b = draw(_part), draw(_part)
    char = draw(st.sampled_from("/|:~%\\._ -") | _chars)
    utf8 = char.encode()
    spellings = ["".join(f"%{byte:02X}" for byte in utf8), "\\" + char, draw(st.sampled_from("_-~")), ""]
    return [{at: a + char + b}, *({at: a + s + b} for s in spellings)]


@st.composite
def _whitespace(draw: st.DrawFn, texts: list[int]) -> Variants:
    at = draw(st.sampled_from(texts))
    x = draw(key_strings())
    ws = draw(st.sampled_from(WHITESPACE))
    return [{at: x}, {at: ws + x}, {at: x + ws}]


@st.composite
def _normal_forms(draw: st.DrawFn, texts: list[int]) -> Variants:
    at = draw(st.sampled_from(texts))
    # A precomposed and a compatibility character always, so that every form differs from another.
    x = "\u00e9" + draw(_part) + draw(st.text(st.sampled_from(DECOMPOSABLE), max_size=3)) + "\ufb01"
    forms = [x] + [unicodedata.normalize(form, x) for form in ("NFC", "NFD", "NFKC", "NFKD")]
    return [{at: form} for form in forms]


@st.composite
def _case(draw: st.DrawFn, texts: list[int]) -> Variants:
    at = draw(st.sampled_from(texts))
    x = draw(_part) + draw(st.text(st.sampled_from(CASE_TRAPS + "AbC/usdt"), min_size=1, max_size=3)) + draw(_part)
    return [{at: x}, {at: x.upper()}, {at: x.lower()}, {at: x.swapcase()}]


@st.composite
def _long(draw: st.DrawFn, texts: list[int]) -> Variants:
    """Every text field long (up to the 80-byte limit), keys that differ only in the last character of one: once
    filled with ASCII (a cut after N characters) and once with a drawn multi-byte character (a cut after N bytes,
    or of an escaped form)."""
    out: Variants = []
    for filler in ("x", draw(st.sampled_from(FILLERS))):
        tails = draw(st.lists(st.sampled_from("ab0é日🚀"), min_size=2, max_size=3, unique=True))
        common: dict[int, Any] = {}
        for at in texts:
            room = MAX_KEY_BYTES - 4 - draw(st.integers(0, 20))
            common[at] = filler * (room // len(filler.encode())) + draw(st.sampled_from(tails))
        target = draw(st.sampled_from(texts))
        out += [{**common, target: common[target][:-1] + tail} for tail in tails]
    return out


@st.composite
def _placeholder(draw: st.DrawFn, empties: list[int]) -> Variants:
    """The empty field against every placeholder an adapter might store for it."""
    at = draw(st.sampled_from(empties))
    return [{at: ""}, *({at: p} for p in EMPTY_PLACEHOLDERS)]


@st.composite
def _random(draw: st.DrawFn, fields: list[KeyField]) -> Variants:
    """Keys that differ in a random subset of fields, including booleans, intervals and timestamps."""
    out: Variants = [{}]
    for _ in range(draw(st.integers(1, 3))):
        changed = draw(st.lists(st.integers(0, len(fields) - 1), min_size=1, max_size=len(fields), unique=True))
        out.append({at: draw(_random_field(fields[at])) for at in changed})
    return out


def _groups(spec: DomainSpec) -> list[st.SearchStrategy[Variants]]:
    """The group builders that apply to ``spec``'s fields."""
    fields = _fields(spec)
    texts = [i for i, f in enumerate(fields) if f.type is FieldType.STR and f.choices is None]
    empties = [i for i, f in enumerate(fields) if f.may_be_empty]
    groups = [_random(fields)]
    if texts:
        groups += [_escape(texts), _whitespace(texts), _normal_forms(texts), _case(texts), _long(texts)]
    if len(texts) >= 2:
        groups.append(_split(texts))
    if empties:
        groups.append(_placeholder(empties))
    return groups


@functools.cache
def _random_key(spec: DomainSpec) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(*(_random_field(f) for f in _fields(spec)))


@st.composite
def twin_keys(draw: st.DrawFn, spec: DomainSpec, group: st.SearchStrategy[Variants]) -> list[Key]:
    """A group of distinct, valid full keys of ``spec`` that a lossy key encoding tends to merge: ``group``'s
    variations of one random key."""
    fields = _fields(spec)
    base = draw(_random_key(spec))
    keys: list[Key] = []
    for changes in draw(group):
        key = [changes.get(i, value) for i, value in enumerate(base)]
        if all(_fits(v) for v in key if isinstance(v, str)) and _valid(fields, key) and tuple(key) not in keys:
            keys.append(tuple(key))
    return keys


@functools.cache
def colliding_keys(spec: DomainSpec) -> st.SearchStrategy[list[Key]]:
    """One group of :func:`twin_keys` of every kind that applies to ``spec``, flattened, every key distinct.

    Built once per domain: Hypothesis pays for building a strategy on every draw of a new one."""
    groups = st.tuples(*(twin_keys(spec, group) for group in _groups(spec)))
    return groups.map(lambda drawn: list(dict.fromkeys(itertools.chain(*drawn))))


def _profile_examples() -> int:
    """The active profile's ``max_examples`` (loaded before test collection imports the kit)."""
    default = settings.default
    return 100 if default is None else default.max_examples


_examples = itertools.count()
_BACKEND_LEVEL = pytest.mark.persist_backend_level


class KeyClauses:
    """The key injectivity clauses of the contract kit (mixed into ``BackendContractTests``)."""

    @pytest.fixture
    def stored(self) -> dict[tuple[str, Key], Record]:
        """What the clause has stored under each key in this test (the storage is empty when a test starts)."""
        return {}

    @_BACKEND_LEVEL
    @pytest.mark.parametrize("name", list(DOMAINS))
    @given(data=st.data())
    @settings(
        # A hundredth of the profile's examples per domain (one by default, five in the thorough profile): each
        # example writes a group of keys of every kind, 30 to 110 keys, and a file backend pays milliseconds each.
        max_examples=max(1, _profile_examples() // 100),
        deadline=None,
        # No shrinking: a failure names the two keys that share a record already, and shrinking a group of
        # dozens of keys replays the example hundreds of times (minutes on a broken backend).
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.differing_executors,
        ],
    )
    def test_property_distinct_keys_never_share_a_record(
        self, backend: Backend, stored: dict[tuple[str, Key], Record], name: str, data: st.DataObject
    ) -> None:
        """Distinct keys (any fields, context and item key) never read each other's record (Hypothesis).

        The keys come in groups that naive encodings merge (see :mod:`persist_core.testing.keys`); all are
        written through the backend, then each is read back with ``get`` and, for domains with an item key,
        found with its own record in a ``scan`` of its context.
        """
        spec = DOMAINS[name]
        if not backend.capabilities.supports(name):
            pytest.skip(f"the backend does not store the {name!r} domain (Capabilities.domains)")
        keys = data.draw(colliding_keys(spec), label="keys")
        for key in keys:
            n = next(_examples)
            record = record_for(spec, key, {"key": list(key), "n": n}, when=n)
            if spec.first_write_wins:
                inserted = backend.insert_many(spec, [(key, record)])
                if (name, key) not in stored:
                    assert inserted == 1, _merged(backend, spec, key, "the backend reported it as stored already")
                    stored[(name, key)] = record
            else:
                backend.put(spec, key, record)
                stored[(name, key)] = record
        for key in keys:
            got = backend.get(spec, key)
            assert _fields_of(got) == _fields_of(stored[(name, key)]), _merged(backend, spec, key, f"get gave {got}")
        if spec.item is not None:
            for context, items in _by_context(keys):
                listed = dict(backend.scan(spec, context))
                for item in items:
                    got = listed.get(item)
                    assert _fields_of(got) == _fields_of(stored[(name, (*context, item))]), _merged(
                        backend, spec, (*context, item), f"a scan of its context lists {got} among {len(listed)}"
                    )


def _fields_of(record: Record | None) -> tuple[Any, ...] | None:
    """A record's fields, its payload decoded: a backend may give back an equal JSON text, not the same one."""
    return None if record is None else (json.loads(record.payload), record.when, record.removed)


def _by_context(keys: list[Key]) -> Iterator[tuple[Key, list[Any]]]:
    groups: dict[Key, list[Any]] = {}
    for key in keys:
        groups.setdefault(key[:-1], []).append(key[-1])
    return iter(groups.items())


def _merged(backend: Backend, spec: DomainSpec, key: Key, what: str) -> str:
    record = backend.get(spec, key)
    owner = json.loads(record.payload).get("key") if record is not None else None  # whose write it holds
    return (
        f"{spec.name}: key {key!r} shares a record with key {tuple(owner) if owner else None!r}: {what}; "
        "the backend's key encoding is not injective (CONTRACTS.md 4)"
    )
