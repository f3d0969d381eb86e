"""Keys and values (CONTRACTS.md 4): the fast and precise paths of validation agree with a plain reference."""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persist_core.domains import DOMAINS, FieldType, KeyField
from persist_core.errors import InvalidKeyError, InvalidValueError
from persist_core.testing.samples import INVALID_VALUES, TRICKY_VALUES
from persist_core.testing.strategies import json_values, key_strings
from persist_core.validation import MAX_DEPTH, check_field, decode_value, encode_value, to_epoch_ms

SYMBOL = KeyField("symbol")
FRAME = KeyField("frame_name", may_be_empty=True)


def reference_valid(value: Any, depth: int = 1) -> bool:
    """CONTRACTS.md section 4, written as plainly as possible."""
    if value is None or type(value) is bool:
        return True
    if type(value) is int:
        return -(2**63) <= value < 2**63
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is str:
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if type(value) in (list, dict) and depth > MAX_DEPTH:
        return False
    if type(value) is list:
        return all(reference_valid(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and reference_valid(k) and reference_valid(v, depth + 1) for k, v in value.items())
    return False


_ANYTHING = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=5)
    | st.sampled_from(["\x00", "\ud800", "a\udfffb"])
    | st.binary(max_size=3)
    | st.tuples(st.integers()),
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(st.text(max_size=3) | st.integers() | st.sampled_from(["\x00k"]), kids, max_size=3)
    ),
    max_leaves=10,
)


@given(_ANYTHING)
def test_encode_accepts_exactly_what_the_reference_accepts(value: Any) -> None:
    expected = reference_valid(value)
    try:
        text = encode_value(value)
    except InvalidValueError as exc:
        assert not expected, f"rejected a valid value: {exc}"
        assert exc.path.startswith("$")
    else:
        assert expected, f"accepted an invalid value {value!r}"
        assert decode_value(text) == value


@given(json_values())
def test_valid_values_round_trip_with_their_types(value: Any) -> None:
    decoded = decode_value(encode_value(value))
    assert decoded == value
    assert json.dumps(decoded, sort_keys=True) == json.dumps(value, sort_keys=True)


def test_deeply_nested_limits() -> None:
    value: Any = 1
    for _ in range(MAX_DEPTH):
        value = [value]
    encode_value(value)
    with pytest.raises(InvalidValueError, match="deeper than 64"):
        encode_value([value])
    very_deep: Any = []
    for _ in range(5000):  # beyond the C encoder's recursion limit
        very_deep = [very_deep]
    with pytest.raises(InvalidValueError, match="deeper"):
        encode_value(very_deep)


def test_cycles_are_rejected() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(InvalidValueError):
        encode_value({"c": cyclic})


@pytest.mark.parametrize(("label", "value", "path"), INVALID_VALUES, ids=[v[0] for v in INVALID_VALUES])
def test_invalid_values_name_their_path(label: str, value: Any, path: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        encode_value(value)
    assert info.value.path == path
    assert path in str(info.value)


@pytest.mark.parametrize("value", TRICKY_VALUES)
def test_tricky_values_encode(value: Any) -> None:
    assert decode_value(encode_value(value)) == value


def test_size_limit_counts_utf8_bytes() -> None:
    encode_value("x" * 90, max_bytes=100)
    with pytest.raises(InvalidValueError, match="bytes"):
        encode_value("é" * 60, max_bytes=100)  # 60 characters, 122 bytes with quotes


def test_false_alarms_of_the_fast_path_are_accepted() -> None:
    # Text that looks suspicious to the fast path but is valid: an escaped backslash before u0000, long digit
    # runs inside strings, many brackets that are not nesting.
    for value in ({"s": "\\u0000"}, {"s": "1234567890123456789012"}, {"s": "[[[[" * 40}, [[]] * 100, 2**62):
        assert decode_value(encode_value(value)) == value


@given(key_strings())
def test_valid_keys_are_accepted(key: str) -> None:
    assert check_field(SYMBOL, key) == key


@given(
    st.text(min_size=1, max_size=10),
    st.sampled_from([chr(c) for c in range(0x20)] + ["\x7f", "\x85", "\x9f"]),
    st.integers(0, 10),
)
def test_control_characters_are_rejected_anywhere(text: str, control: str, position: int) -> None:
    key = text[:position] + control + text[position:]
    if len(key.encode("utf-8", "surrogatepass")) > 80:
        return
    with pytest.raises(InvalidKeyError) as info:
        check_field(SYMBOL, key)
    assert info.value.field == "symbol"
    assert unicodedata.category(control) == "Cc"


def test_key_length_is_counted_in_utf8_bytes() -> None:
    check_field(SYMBOL, "é" * 40)
    with pytest.raises(InvalidKeyError, match="81 bytes"):
        check_field(SYMBOL, "é" * 40 + "x")


def test_only_frame_name_may_be_empty() -> None:
    assert check_field(FRAME, "") == ""
    with pytest.raises(InvalidKeyError, match="empty"):
        check_field(SYMBOL, "")
    empties = [f.name for spec in DOMAINS.values() for f in spec.key_fields if f.may_be_empty]
    assert set(empties) == {"frame_name"}


@pytest.mark.parametrize("bad", [True, 1.0, "1", -1, 2**53])
def test_timestamps_are_ints_in_range(bad: Any) -> None:
    with pytest.raises(InvalidKeyError):
        check_field(KeyField("timestamp", FieldType.INT), bad)


def test_when_conversion() -> None:
    import datetime as dt

    assert to_epoch_ms(None) is None
    assert to_epoch_ms(5) == 5
    assert to_epoch_ms(dt.datetime(1970, 1, 1, 0, 0, 1, 500, tzinfo=dt.UTC)) == 1000
    with pytest.raises(InvalidValueError, match="timezone-aware"):
        to_epoch_ms(dt.datetime(2024, 1, 1))
    with pytest.raises(InvalidValueError):
        to_epoch_ms(True)
