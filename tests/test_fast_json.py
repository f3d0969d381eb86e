"""The orjson fast path (issue 13.3) gives what the standard-library path gives: the same text for every value
it accepts, the same error class, path and reason for every value it rejects, the same decoded value.

The standard-library path is the reference: it is how every payload stored so far was written, and backends
compare payload texts and export digests hash them, so the stored text must stay byte-identical.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import math
import subprocess
import sys
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from persist_core import asetup, fast_json, validation
from persist_core.bench.core_pairs import sample_value
from persist_core.config import resolve_routes
from persist_core.domains import DOMAINS, ValueKind
from persist_core.errors import InvalidValueError
from persist_core.persist import Persist
from persist_core.testing.samples import INVALID_VALUES, TRICKY_VALUES
from persist_core.validation import MAX_DEPTH, check_stored, decode_stored, encode_value

ROOT = Path(__file__).resolve().parents[1]
OBJECT_SPEC = DOMAINS["signal"]
ANY_SPEC = next(spec for spec in DOMAINS.values() if spec.value_kind is not ValueKind.OBJECT)

pytestmark = pytest.mark.skipif(not fast_json.AVAILABLE, reason="orjson is not installed")


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Text(str):
    pass


class Number(float):
    pass


@dataclasses.dataclass
class Point:
    x: int


def _near(x: float) -> st.SearchStrategy[float]:
    """Floats at and next to a layout boundary of either encoder, with both signs."""
    steps = [x, math.nextafter(x, 0.0), math.nextafter(x, math.inf)]
    return st.sampled_from(steps + [-s for s in steps])


_FLOATS = (
    st.floats()
    | st.floats(min_value=1e-6, max_value=1e-3)
    | st.floats(min_value=1e15, max_value=1e18)
    | _near(1e-4)
    | _near(1e-5)
    | _near(1e16)
    | st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, 0.1, 1e22, 123456789012345.67])
)
_INTS = st.integers(-(2**70), 2**70) | st.sampled_from(
    [s * (2**e + d) for e in (53, 63, 64) for d in (-1, 0, 1) for s in (1, -1)]
)
# Every code point, lone surrogates and NUL included, and the short escapes often.
_STRINGS = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=8) | st.sampled_from(
    ['"\\/\b\f\n\r\t', "\x7f\x85\u2028\u2029\ufeff", "\\u0000", "😀"]
)
_ODD = st.sampled_from(
    [(1, 2), Colour.RED, Level.HIGH, uuid.UUID(int=7), Text("t"), Number(1.5), Point(1), OrderedDict(a=1), b"x"]
)


def _tree(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda kids: (
            st.lists(kids, max_size=4)
            | st.dictionaries(_STRINGS | st.sampled_from([1, Text("k"), None]), kids, max_size=4)
        ),
        max_leaves=16,
    )


_VALUES = _tree(st.none() | st.booleans() | _INTS | _FLOATS | _STRINGS | _ODD)


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _outcome(encode: Any, value: object, max_bytes: int) -> tuple[Any, ...]:
    try:
        return ("text", encode(value, max_bytes))
    except InvalidValueError as exc:
        return ("error", type(exc), exc.path, exc.reason)


@given(_VALUES, st.sampled_from([None, -1, 0, 1]))
@example(sample_value(), None)
@example(_nested(MAX_DEPTH), None)
@example(_nested(MAX_DEPTH + 1), None)
@example({"a": [float("nan")]}, None)
@example({"k": {1: 2}}, None)
def test_encode_is_the_standard_path_byte_for_byte(value: Any, size_delta: int | None) -> None:
    """Accepted: the same text; rejected: the same error. Also at the size limit (``size_delta`` around it)."""
    reference = _outcome(validation._encode_standard, value, validation.DEFAULT_MAX_VALUE_BYTES)
    max_bytes = validation.DEFAULT_MAX_VALUE_BYTES
    if size_delta is not None and reference[0] == "text":
        max_bytes = len(reference[1].encode()) + size_delta
        reference = _outcome(validation._encode_standard, value, max_bytes)
    assert _outcome(encode_value, value, max_bytes) == reference
    fast = fast_json.fast_encode(value, max_bytes, MAX_DEPTH)
    if fast is not None:  # what the fast path vouches for, the reference accepts with the same text
        assert reference == ("text", fast)


def test_the_bench_row_takes_the_fast_path() -> None:
    """Otherwise the property above would hold trivially for the row the targets are about."""
    value = sample_value()
    assert fast_json.fast_encode(value, validation.DEFAULT_MAX_VALUE_BYTES, MAX_DEPTH) == json.dumps(
        value, ensure_ascii=False, separators=(",", ":")
    )
    for value in TRICKY_VALUES:
        assert fast_json.fast_encode(value, validation.DEFAULT_MAX_VALUE_BYTES, MAX_DEPTH) in (
            None,
            validation._encode_standard(value, validation.DEFAULT_MAX_VALUE_BYTES),
        )


@pytest.mark.parametrize(("label", "value", "path"), INVALID_VALUES, ids=[v[0] for v in INVALID_VALUES])
def test_the_fast_path_declines_every_invalid_sample(label: str, value: Any, path: str) -> None:
    assert fast_json.fast_encode(value, validation.DEFAULT_MAX_VALUE_BYTES, MAX_DEPTH) is None


def test_every_code_point_is_escaped_alike() -> None:
    """Strings are escaped by both encoders alike, for every character but NUL and the surrogates."""
    chars = [chr(c) for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(chars), 4096):
        text = "".join(chars[start : start + 4096])
        assert fast_json.fast_encode(text, 1 << 20, MAX_DEPTH) == validation._encode_standard(text, 1 << 20)


def _decoded(decode: Any, spec: Any, text: str | bytes) -> tuple[Any, ...]:
    try:
        return ("value", repr(decode(spec, text)))  # repr: ints stay ints, -0.0 stays -0.0, order counts
    except (ValueError, RecursionError) as exc:  # json.loads of deep nesting: RecursionError (as before)
        return ("error", type(exc), str(exc))


def _standard(spec: Any, text: str | bytes) -> Any:
    value = validation._decode_standard(text)
    validation.check_value_kind(spec, value)
    return value


_JSON_LEAVES = st.none() | st.booleans() | _INTS | _FLOATS | st.text(max_size=6) | st.sampled_from(["\ud800"])
_SPELLINGS = st.builds(
    lambda value, ascii_only, indent: json.dumps(value, ensure_ascii=ascii_only, indent=indent),
    _tree(_JSON_LEAVES).filter(lambda v: not isinstance(v, dict) or all(type(k) is str for k in v)),
    st.booleans(),
    st.sampled_from([None, 1]),
)
_TEXTS = (
    _SPELLINGS
    | st.text(st.sampled_from('{}[]":,0123456789.eE-+ nultrfaNIy\\u'), max_size=20)
    | st.sampled_from(["1e400", "-1e400", '"\\ud800"', "\ufeff{}", '{"a":1,"a":2}', "-0", " {} ", "[" * 2000])
)


@given(_TEXTS, st.sampled_from([OBJECT_SPEC, ANY_SPEC]), st.booleans())
def test_decode_is_the_standard_path(text: str, spec: Any, as_bytes: bool) -> None:
    """The same value (type for type), or the same error class and message, for stored text of any shape."""
    payload: str | bytes = text.encode("utf-8", "surrogatepass") if as_bytes else text
    assert _decoded(decode_stored, spec, payload) == _decoded(_standard, spec, payload)


def test_decode_keeps_ints_beyond_64_bits() -> None:
    """orjson would read these as floats: the standard library decides (the value is not rejected today)."""
    for number in (2**64, -(2**63) - 1, 10**30):
        assert decode_stored(ANY_SPEC, f"[{number}]") == [number]
        assert type(decode_stored(ANY_SPEC, f"[{number}]")[0]) is int


@pytest.mark.parametrize("offset", range(6))
def test_a_run_of_19_digits_is_found_at_any_offset(offset: int) -> None:
    """may_differ looks at every third byte first: a run of 19 digits shows there wherever it starts."""
    for length in (18, 19, 20, 40):
        for number in ("7" * length, "-" + "7" * length):
            text = f'{{"{"k" * offset}":[{number}]}}'
            assert fast_json.may_differ(text) is (length >= 19)
            assert fast_json.may_differ(text.encode()) is (length >= 19)
            assert decode_stored(ANY_SPEC, text) == json.loads(text)
            assert type(decode_stored(ANY_SPEC, text)[next(iter(json.loads(text)))][0]) is int


def test_a_checked_payload_is_decoded_once_and_handed_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    loads = validation._fast_loads
    monkeypatch.setattr(validation, "_fast_loads", lambda text: calls.append(text) or loads(text))
    text = encode_value(sample_value())
    check_stored(OBJECT_SPEC, text)
    first = decode_stored(OBJECT_SPEC, text)
    assert len(calls) == 1
    second = decode_stored(OBJECT_SPEC, text)  # handed out once: a second read decodes anew
    assert len(calls) == 2
    assert first == second == sample_value()
    assert first is not second
    equal_copy = "".join(list(text))  # an equal text, another object: not handed the kept value
    check_stored(OBJECT_SPEC, text)
    assert decode_stored(OBJECT_SPEC, equal_copy) is not decode_stored(OBJECT_SPEC, text)
    assert len(calls) == 4


def test_the_handover_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    handover = validation._handover
    monkeypatch.setattr(handover, "slots", 8)
    monkeypatch.setattr(handover, "chars", 200)
    texts = [encode_value({"i": i}) for i in range(30)]  # 8 characters each
    for text in texts:
        check_stored(OBJECT_SPEC, text)
    assert len(handover.waiting) == 8
    assert handover.held == 8 * 8
    assert [entry[0] for entry in handover.waiting.values()] == texts[-8:]  # the oldest were dropped
    big = encode_value({"s": "x" * 100})
    check_stored(OBJECT_SPEC, big)  # 112 characters: the oldest go until it fits in 200
    assert handover.held <= 200
    assert id(big) in handover.waiting
    check_stored(OBJECT_SPEC, encode_value({"s": "x" * 300}))  # larger than the whole budget: not kept
    assert handover.held <= 200
    same = "1"  # CPython shares one-character strings: checked twice, counted once
    check_stored(ANY_SPEC, same)
    check_stored(ANY_SPEC, same)
    assert handover.held == sum(len(entry[0]) for entry in handover.waiting.values())
    for entry in list(handover.waiting.values()):  # consume what waits, so that other tests start empty
        decode_stored(entry[1], entry[0])
    assert not handover.waiting
    assert handover.held == 0


def test_a_file_window_read_decodes_each_candle_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """read_window verifies each candle it reads; the store then takes every one of them from the handover."""
    persist = Persist(resolve_routes(f"file:{tmp_path}", env={}))
    try:
        candles = persist.live.candle(symbol="BTC/USDT", interval="1m", exchange_name="x")
        start = 1_700_000_040_000
        rows = [{"timestamp": start + k * 60_000, "open": 1.5, "close": 2.5} for k in range(200)]
        candles.write(rows)
        calls: list[object] = []
        loads = validation._fast_loads
        monkeypatch.setattr(validation, "_fast_loads", lambda text: calls.append(text) or loads(text))
        assert candles.read(200, start) == rows
        assert len(calls) == 200
    finally:
        persist.close()
    assert not validation._handover.waiting


def test_a_file_read_decodes_the_payload_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file backend verifies on read and the store decodes: one decode between them (it was two)."""
    persist = Persist(resolve_routes(f"file:{tmp_path}", env={}))
    try:
        store = persist.live.signal(symbol="BTC/USDT", strategy_name="s", exchange_name="x")
        store.write(sample_value())
        calls: list[object] = []
        loads = validation._fast_loads
        monkeypatch.setattr(validation, "_fast_loads", lambda text: calls.append(text) or loads(text))
        first = store.read()
        assert len(calls) == 1
        first["symbol"] = "changed"  # reads still hand out fresh values
        assert store.read() == sample_value()
    finally:
        persist.close()
    assert not validation._handover.waiting


def test_an_orjson_that_spells_differently_turns_the_fast_path_off() -> None:
    """The import-time probe: this orjson agrees; one that wrote ``1e16`` style or upper-case escapes would not."""
    assert fast_json.agrees(fast_json.orjson)

    class Respelled:
        @staticmethod
        def dumps(value: Any, option: int) -> bytes:
            return fast_json.orjson.dumps(value, option=option).replace(b"\\u001f", b"\\u001F")

    class Older:
        @staticmethod
        def dumps(value: Any, option: int) -> bytes:
            raise TypeError("unknown option")

    assert not fast_json.agrees(Respelled)
    assert not fast_json.agrees(Older)


def test_an_asyncio_file_read_decodes_the_payload_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The asyncio face reads in a worker thread and decodes on the loop: the handover crosses threads."""

    async def main() -> None:
        async with await asetup(f"file:{tmp_path}", env={}) as persist:
            store = persist.live.signal(symbol="BTC/USDT", strategy_name="s", exchange_name="x")
            await store.write(sample_value())
            calls: list[object] = []
            loads = validation._fast_loads
            monkeypatch.setattr(validation, "_fast_loads", lambda text: calls.append(text) or loads(text))
            first, second = await store.read(), await store.read()
            assert len(calls) == 2
            assert first == second == sample_value()
            assert first is not second

    asyncio.run(main())
    assert not validation._handover.waiting


_WITHOUT_ORJSON = """
import json, sys
sys.modules["orjson"] = None  # import orjson now fails, as where it is not installed
from persist_core import asetup, fast_json, validation
from persist_core.bench.core_pairs import sample_value
from persist_core.domains import DOMAINS
from persist_core.errors import InvalidValueError
from persist_core.testing.samples import INVALID_VALUES
assert not fast_json.AVAILABLE
out = [validation.encode_value(sample_value()), validation.decode_stored(DOMAINS["signal"], '{"a":[1,2.5]}')]
for _, value, _ in INVALID_VALUES:
    try:
        validation.encode_value(value)
    except InvalidValueError as exc:
        out.append([exc.path, exc.reason])
print(json.dumps(out))
"""


def test_without_orjson_the_standard_path_gives_the_same_results() -> None:
    """The fallback where orjson has no wheel: same texts, values and errors as with it."""
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_ORJSON], capture_output=True, text=True, timeout=60, cwd=ROOT, check=True
    )
    expected: list[Any] = [encode_value(sample_value()), decode_stored(OBJECT_SPEC, '{"a":[1,2.5]}')]
    for _, value, _ in INVALID_VALUES:
        with pytest.raises(InvalidValueError) as info:
            encode_value(value)
        expected.append([info.value.path, info.value.reason])
    assert json.loads(done.stdout) == expected
