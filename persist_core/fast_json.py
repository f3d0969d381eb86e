"""The orjson fast path of :mod:`persist_core.validation`: it vouches for the common value, or declines.

:func:`fast_encode` returns exactly the text the standard-library path of
:func:`~persist_core.validation.encode_value` returns, or ``None`` when it cannot vouch for that (anything
unusual, and every invalid value); :data:`loads` returns exactly what the standard-library decode returns,
unless it raises or :func:`may_differ` says so. The callers then take the standard-library path, which also
names every error, so a value is accepted or rejected, and an error worded, exactly as without orjson. Without
orjson (a dependency only where it has wheels: docs/decisions.md) the fast path always declines.

Why the texts are equal where the fast path vouches (the property tests in tests/test_fast_json.py check it):

- the value is built only of exact ``dict`` (``str`` keys), ``list``, ``str``, ``int``, ``float``, ``bool``
  and ``None``, checked by a walk: orjson would also accept tuples, enums, UUIDs, and NaN/infinities (as
  ``null``);
- strings are escaped alike: ``\\"``, ``\\\\``, the short escapes, ``\\u00XX`` in lower case for the other
  controls, every other character as itself (checked for every code point);
- ints within 53 bits (``OPT_STRICT_INTEGER``; larger ones, rare, take the other path) are written alike;
- floats print the shortest round-trip digits in both, and in the same layout when
  ``1e-4 <= |x| < 1e16`` or ``x == 0``: Python's ``repr`` changes to exponent form outside that range, orjson
  (ryu) with another spelling (``1e16`` for ``1e+16``) and another lower bound;
- dicts keep insertion order in both, with the same separators.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any, Final

try:
    import orjson as _imported
except ImportError:  # pragma: no cover - CI installs orjson; tests/test_fast_json.py runs without it too
    _imported = None  # type: ignore[assignment]

__all__ = ["AVAILABLE", "agrees", "fast_encode", "loads", "may_differ"]

# Everything orjson serialises by itself but the standard-library path treats otherwise (subclasses of
# str/int/dict/list, dataclasses, datetimes) raises instead of being encoded; big ints too.
_OPTIONS: Final = (
    0
    if _imported is None
    else _imported.OPT_STRICT_INTEGER
    | _imported.OPT_PASSTHROUGH_SUBCLASS
    | _imported.OPT_PASSTHROUGH_DATACLASS
    | _imported.OPT_PASSTHROUGH_DATETIME
)
# One document of the spellings the fast path relies on: escapes, the float layouts at both ends of the
# vouched range, int bounds, key order. docs/decisions.md, "Cheaper validation and encoding".
_PROBE: Final = [
    "".join(map(chr, range(1, 0x80))) + "\u0085\u00a0\u2028\u2029\ufeff\U0001f600",
    [1e-4, -1e-4, 1.0001e-4, 9999999999999998.0, 1e15, 0.1, 1 / 3, 123456789012.5, 42017.5, -0.0, 0.0],
    [2**53 - 1, -(2**53 - 1), 0, True, False, None],
    {"b": 1, "a": [{}, []], "é": "x"},
]


def agrees(module: Any) -> bool:
    """Whether ``module`` (an orjson) writes :data:`_PROBE` exactly as the standard-library path does.

    Checked once at import: an orjson release that changed one of these spellings turns the fast path off
    instead of changing the text every backend stores.
    """
    standard = json.dumps(_PROBE, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return bool(module.dumps(_PROBE, option=_OPTIONS) == standard.encode())
    except Exception:  # an orjson without one of the options, say: no fast path rather than no import
        return False


orjson: ModuleType | None = _imported if _imported is not None and agrees(_imported) else None
#: Whether the fast path is on: orjson is installed and :func:`agrees` (otherwise it always declines).
AVAILABLE: Final = orjson is not None
#: ``orjson.loads`` (``None`` without the fast path). It refuses what the standard library accepts in a few
#: corners (a lone surrogate escape, a number that overflows to infinity): the caller then decodes with the
#: standard library, and also where :func:`may_differ`.
loads: Final = None if orjson is None else orjson.loads

_SCALARS: Final = frozenset({str, int, bool, type(None)})
_NUL: Final = b"\\u0000"
# See validation._SCAN_TABLE: a run of 19 digits is the only way a number beyond 64 bits can appear.
_DIGITS_TABLE: Final = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGIT_RUN: Final = b"0" * 19
# Any 19 consecutive bytes hold at least 6 at offsets that are multiples of 3, and those are consecutive in
# ``data[::3]``: a third of the text, looked at first, rules a run out. A 13-digit epoch-ms timestamp shows
# as at most 5 there, so the bench row never takes the full look.
_SAMPLED_RUN: Final = b"0" * 6


def fast_encode(value: object, max_bytes: int, max_depth: int) -> str | None:
    """The canonical JSON text of ``value`` if orjson can vouch that it is valid, else ``None``."""
    if orjson is None:
        return None
    try:
        data: bytes = orjson.dumps(value, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: an unsupported type, a big int, a lone surrogate, a cycle
        return None
    # A backslash is rare in stored values, and looking for one byte is a tenth of looking for six.
    if len(data) > max_bytes or (b"\\" in data and _NUL in data) or not _plain_and_shallow(value, max_depth):
        return None
    return data.decode()


def _plain_and_shallow(value: object, max_depth: int) -> bool:
    """Whether ``value`` is made of exact JSON types only, with floats that print alike in both encoders and
    containers no deeper than ``max_depth``. Dict keys are not looked at: orjson has refused any that is not
    an exact ``str``.

    One level of containers at a time, so that the depth costs a counter rather than a tuple per node.
    """
    scalars = _SCALARS
    level: list[Any] = [[value]]  # a wrapper at depth 0, so that the value itself is checked as a child
    depth = 0
    while level:
        if depth > max_depth:
            return False
        below: list[Any] = []
        push = below.append
        for node in level:
            for child in node.values() if type(node) is dict else node:
                kind = type(child)
                if kind in scalars:
                    continue
                if kind is float:
                    # Also false for NaN and the infinities, which orjson writes as null.
                    if not (1e-4 <= abs(child) < 1e16 or child == 0.0):
                        return False
                elif kind is dict or kind is list:
                    push(child)
                else:
                    return False
        depth += 1
        level = below
    return True


def may_differ(text: str | bytes) -> bool:
    """Whether orjson may have read ``text`` (which it accepted) into another value than the standard library.

    It reads an int beyond 64 bits as a float where the standard library keeps the int; such a number is a
    run of 19 digits or more, so a text with such a run (a long digit string too) is decoded again.
    """
    data = text.encode() if type(text) is str else text
    if _SAMPLED_RUN not in data[::3].translate(_DIGITS_TABLE):
        return False
    return _LONG_DIGIT_RUN in data.translate(_DIGITS_TABLE)
