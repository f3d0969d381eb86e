"""Sample keys and values for the contract kit: ordinary, hostile and invalid ones."""

from __future__ import annotations

import datetime as _dt
import decimal
import itertools
from collections.abc import Iterator
from typing import Any

from persist_core.backend import Key, Record
from persist_core.domains import DomainSpec, FieldType
from persist_core.validation import encode_value

__all__ = [
    "HOSTILE_KEYS",
    "INVALID_KEYS",
    "INVALID_VALUES",
    "TRICKY_VALUES",
    "context_for",
    "item_for",
    "record_for",
    "value_for",
]

#: Valid key strings that break naive encodings (path separators, dots, escapes, non-Latin, 80 bytes).
HOSTILE_KEYS: tuple[str, ...] = (
    "BTC/USDT:USDT",
    "..",
    ".",
    ".hidden",
    "/",
    "\\",
    ":",
    "%",
    "%2F",
    "a/b",
    "a%2Fb",
    "a_b",
    "~",
    " ",
    "CON",
    "日本語のキー",
    "é" * 40,  # 80 bytes of UTF-8
    "x" * 80,
    "slot.json",
    "k.json",
    "$where",
    "*",
    "null",
)

#: Key values every string key field rejects, with a label.
INVALID_KEYS: tuple[tuple[str, object], ...] = (
    ("empty", ""),
    ("81 bytes", "x" * 81),
    ("41 two-byte chars", "é" * 41),
    ("NUL", "a\x00b"),
    ("newline", "a\nb"),
    ("tab", "a\tb"),
    ("DEL", "a\x7f"),
    ("C1 control", "a\x85"),
    ("lone surrogate", "a\ud800"),
    ("int", 5),
    ("bytes", b"abc"),
    ("None", None),
    ("bool", True),
)

#: Values that must round-trip exactly on every backend.
TRICKY_VALUES: tuple[Any, ...] = (
    {},
    {"a": []},
    {"nested": [[1, [2, [3]]], [], [[]]]},
    {"dot.key": 1, "$dollar": 2, "a.b.c": {"$x": [1]}},
    {"big": 2**63 - 1, "small": -(2**63), "over32": 2**40, "neg": -(2**35)},
    {"f": 0.1, "g": 1e308, "h": 5e-324, "i": -1.5, "j": 1.0, "k": 123456789.125},
    {"unicode": "日本語 é ✓ 🚀", "escapes": 'quote" backslash\\ newline\n tab\t', "ctrl": "\x01\x1f"},
    {"empty": "", "none": None, "t": True, "f": False, "zero": 0},
    {"long_list": list(range(300))},
    {"": "empty key", " ": "space key", "日本": "non-Latin key"},
    {"deep": [[[[[[[[[[{"x": 1}]]]]]]]]]]},
    {"digits": "12345678901234567890123", "escaped_nul_text": "\\u0000"},
)


class _Opaque:
    pass


def _nested(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


#: Values every domain rejects, with a label and the JSONPath the error must name.
INVALID_VALUES: tuple[tuple[str, object, str], ...] = (
    ("NaN", {"p": float("nan")}, "$.p"),
    ("Infinity", {"p": float("inf")}, "$.p"),
    ("-Infinity", {"o": [1, float("-inf")]}, "$.o[1]"),
    ("tuple", {"t": (1, 2)}, "$.t"),
    ("set", {"s": {1}}, "$.s"),
    ("bytes", {"b": b"x"}, "$.b"),
    ("datetime", {"d": _dt.datetime(2024, 1, 1, tzinfo=_dt.UTC)}, "$.d"),
    ("Decimal", {"d": decimal.Decimal("1.5")}, "$.d"),
    ("object", {"o": _Opaque()}, "$.o"),
    ("int over 64 bits", {"i": 2**63}, "$.i"),
    ("int under 64 bits", {"i": [-(2**63) - 1]}, "$.i[0]"),
    ("NUL in string", {"s": "a\x00b"}, "$.s"),
    ("NUL in key", {"a\x00": 1}, "$"),
    ("lone surrogate", {"s": "\udc00"}, "$.s"),
    ("int dict key", {"k": {1: "x"}}, "$.k"),
    ("too deep", {"d": _nested(64)}, "$.d" + "[0]" * 63),  # the 65th level is the first one too deep
)

_ordinals = itertools.count()


def context_for(spec: DomainSpec, variant: int = 0, namespace: str = "") -> dict[str, Any]:
    """A valid context of ``spec``; distinct ``variant``/``namespace`` give distinct contexts.

    The first string field carries the namespace and the variant; later string fields take hostile keys,
    and ``frame_name`` is empty for even variants.
    """
    out: dict[str, Any] = {}
    first = True
    for field in spec.context:
        if field.type is FieldType.BOOL:
            out[field.name] = variant % 2 == 0
        elif field.choices is not None:
            out[field.name] = "1m"
        elif first:
            out[field.name] = f"{namespace}{field.name}-{variant}"
            first = False
        elif field.may_be_empty and variant % 2 == 0:
            out[field.name] = ""
        else:
            out[field.name] = HOSTILE_KEYS[variant % len(HOSTILE_KEYS)]
    return out


def item_for(spec: DomainSpec, variant: int = 0) -> Any:
    """A valid item key of ``spec`` (an int candle timestamp, else a string; ``None`` for slots)."""
    if spec.item is None:
        return None
    if spec.item.type is FieldType.INT:
        return 1_700_000_040_000 + variant * 60_000
    return f"item-{variant}"


def value_for(spec: DomainSpec, tag: object = 0) -> dict[str, Any]:
    """A valid value for ``spec`` carrying ``tag`` (an object, accepted by every domain)."""
    return {"tag": tag, "n": next(_ordinals), "nested": {"list": [1, 2.5, "x", None, True]}}


def record_for(spec: DomainSpec, key: Key, value: dict[str, Any], when: int | None = None) -> Record:
    """A record of ``value`` under ``key`` as the stores hand it to a backend, for clauses that drive the backend
    itself: a collection item carries its key in its id field (first), and only timed domains keep ``when``."""
    if spec.item_id_field is not None:
        value = {spec.item_id_field: key[-1], **value}
    return Record(encode_value(value), when if spec.timed else None)


def unique_namespace() -> Iterator[str]:
    """An endless supply of short namespace prefixes."""
    for n in itertools.count():
        yield f"ns{n}-"
