"""Validation of keys and values (CONTRACTS.md section 4), shared by every backend.

Everything is checked before the first byte is written, so a bad batch writes nothing. Values are
encoded here too, once, into the canonical JSON text that backends store.

Value checking has three paths. First orjson (:mod:`persist_core.fast_json`), which vouches for the common
value with the very text the standard library writes, or declines; decoding likewise. Then the standard
library's fast path, which lets the C JSON encoder do the work: it encodes, checks that decoding would give
back an equal value (by a type walk for values of exact JSON types, by decoding and comparing for the rest),
and only looks deeper when the text shows something that may break a rule (an escaped NUL, a 19-digit
number, deep brackets, a lone surrogate). The precise path walks the value and raises with the JSONPath of
the problem. All accept exactly the same values, and the first two give the same text: the precise path
ends with the same round-trip comparison, and every error is named by it.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from persist_core import fast_json
from persist_core.domains import DomainSpec, FieldType, KeyField, Kind, ValueKind
from persist_core.errors import InvalidKeyError, InvalidValueError

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "MAX_DEPTH",
    "MAX_KEY_BYTES",
    "TIMESTAMP_LIMIT",
    "canonical_text",
    "check_context",
    "check_field",
    "check_stored",
    "check_value_kind",
    "decode_stored",
    "decode_value",
    "encode_value",
    "to_epoch_ms",
]

MAX_KEY_BYTES = 80
MAX_DEPTH = 64
DEFAULT_MAX_VALUE_BYTES = 8 * 1024 * 1024
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1
#: Candle timestamps are ints in ``[0, TIMESTAMP_LIMIT)``: exact in a double, so in every backend.
TIMESTAMP_LIMIT = 2**53

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A run of 19 digits can only come from an int of 19+ digits (float repr switches to exponent form at
# 1e16) or from digits inside a string: either way the precise path decides. The fast path looks for such
# runs and for deep nesting in one translated copy of the text, in which every ASCII digit byte becomes
# "0", "[" and "{" become "[", and every other byte a space (UTF-8 bytes of non-ASCII characters are
# >= 0x80, so they never read as digits or brackets). bytes.translate plus a substring search costs about
# a tenth of the regex [0-9]{19}, which re-scans every digit run from each position in it.
_SCAN_TABLE = bytes(0x30 if 0x30 <= b <= 0x39 else 0x5B if b in (0x5B, 0x7B) else 0x20 for b in range(256))
_LONG_DIGIT_RUN = b"0" * 19
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_encode = _ENCODER.encode
_decode = json.loads
# The encoder's own output is exactly one JSON document without surrounding whitespace, so the round-trip
# check can skip json.loads' whitespace and trailing-data handling: raw_decode gives the same value.
_raw_decode = json.JSONDecoder().raw_decode
_PLAIN_SCALARS = frozenset({str, int, float, bool, type(None)})


# --------------------------------------------------------------------------------------------- keys


def check_field(spec_field: KeyField, value: object) -> Any:
    """Validate one key field and return it; raise :class:`InvalidKeyError` if it is not valid."""
    name = spec_field.name
    if spec_field.type is FieldType.STR:
        if type(value) is not str:
            raise InvalidKeyError(name, f"must be a str, got {type(value).__name__}")
        if not value:
            if spec_field.may_be_empty:
                return value
            raise InvalidKeyError(name, "must not be empty")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidKeyError(name, "is not valid UTF-8 (lone surrogate)") from None
        if size > MAX_KEY_BYTES:
            raise InvalidKeyError(name, f"is {size} bytes of UTF-8, more than {MAX_KEY_BYTES}")
        if _CONTROL.search(value):
            raise InvalidKeyError(name, "contains a control character")
        if spec_field.choices is not None and value not in spec_field.choices:
            allowed = ", ".join(sorted(spec_field.choices))
            raise InvalidKeyError(name, f"{value!r} is not one of: {allowed}")
        return value
    if spec_field.type is FieldType.BOOL:
        if type(value) is not bool:
            raise InvalidKeyError(name, f"must be a bool, got {type(value).__name__}")
        return value
    if type(value) is not int:
        raise InvalidKeyError(name, f"must be an int, got {type(value).__name__}")
    if not 0 <= value < TIMESTAMP_LIMIT:
        raise InvalidKeyError(name, f"must be in [0, 2**53), got {value}")
    return value


def check_context(spec: DomainSpec, context: dict[str, object]) -> tuple[Any, ...]:
    """Validate the context fields of ``spec`` given as keywords; return them as a tuple in spec order."""
    names = [f.name for f in spec.context]
    extra = set(context) - set(names)
    missing = [n for n in names if n not in context]
    if extra or missing:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if extra:
            parts.append("unexpected " + ", ".join(sorted(extra)))
        raise InvalidKeyError(
            (missing or sorted(extra))[0],
            f"domain {spec.name!r} takes context fields ({', '.join(names)}): {'; '.join(parts)}",
        )
    return tuple(check_field(f, context[f.name]) for f in spec.context)


def to_epoch_ms(value: object, name: str = "when") -> int | None:
    """Convert ``when``/``as_of`` (int ms or timezone-aware datetime) to epoch milliseconds."""
    if value is None:
        return None
    if type(value) is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidValueError(name, "is outside the signed 64-bit range")
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidValueError(name, "a datetime must be timezone-aware")
        return math.floor(value.timestamp() * 1000)
    raise InvalidValueError(name, f"must be int milliseconds or an aware datetime, got {type(value).__name__}")


# ------------------------------------------------------------------------------------------- values


def encode_value(value: object, max_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> str:
    """Validate ``value`` and return its canonical JSON text.

    Raises:
        InvalidValueError: naming the JSONPath of the first problem found.
    """
    text = fast_json.fast_encode(value, max_bytes, MAX_DEPTH)
    if text is not None:
        return text
    return _encode_standard(value, max_bytes)


def _encode_standard(value: object, max_bytes: int) -> str:
    """:func:`encode_value` with the standard library alone: the reference the orjson path must equal."""
    try:
        text = _encode(value)
    except (TypeError, ValueError, RecursionError):
        _explain(value)
        raise InvalidValueError("$", "cannot be encoded as JSON") from None
    scan = text.encode("utf-8", "surrogatepass").translate(_SCAN_TABLE)
    suspicious = "\\u0000" in text or _LONG_DIGIT_RUN in scan or scan.count(b"[") > MAX_DEPTH
    if suspicious:
        _explain(value)
    if len(text) * 4 > max_bytes or not text.isascii():
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            _explain(value)
            raise InvalidValueError("$", "contains a lone surrogate") from None
        if size > max_bytes:
            raise InvalidValueError("$", f"encodes to {size} bytes, more than the limit of {max_bytes}")
    if not _is_plain(value) and _raw_decode(text)[0] != value:
        _explain(value)
        raise InvalidValueError("$", "does not survive a JSON round trip (a subclass or a non-str dict key?)")
    return text


def _is_plain(value: object) -> bool:
    """Whether ``value`` is built only of exact ``dict`` (``str`` keys), ``list``, ``str``, ``int``,
    ``float``, ``bool`` and ``None``.

    For such a value, once the encoder has accepted it, decoding the text gives back an equal value: ints
    and finite floats round-trip exactly through their repr, strings through their escapes, and distinct
    ``str`` keys stay distinct. The round-trip comparison can only fail for other types (tuples, non-str
    keys, subclasses), so only those pay for it; this walk costs about half of a decode and compare.
    """
    kind = type(value)
    if kind is not dict and kind is not list:
        return kind in _PLAIN_SCALARS
    scalars = _PLAIN_SCALARS
    stack: list[Any] = [value]
    push, pop = stack.append, stack.pop
    while stack:
        node = pop()
        if type(node) is dict:
            for key, child in node.items():
                if type(key) is not str:
                    return False
                kind = type(child)
                if kind is dict or kind is list:
                    push(child)
                elif kind not in scalars:
                    return False
        else:
            for child in node:
                kind = type(child)
                if kind is dict or kind is list:
                    push(child)
                elif kind not in scalars:
                    return False
    return True


def decode_value(text: str | bytes) -> Any:
    """Decode stored JSON text into a fresh Python value."""
    return _decode(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (NaN and Infinity are never stored)")


# json.loads accepts NaN, Infinity and -Infinity; a stored value must be what encode_value could have written.
# parse_constant is called only for those three words, so a prebuilt decoder costs what json.loads costs.
_STRICT_DECODE = json.JSONDecoder(parse_constant=_reject_constant).decode
# The kinds whose store writes None as a JSON null (a cleared slot or keyed map); candles and collection
# items are always objects.
_NULL_KINDS = frozenset({Kind.SLOT, Kind.KEYED, Kind.BUCKET})


def decode_stored(spec: DomainSpec, text: str | bytes) -> Any:
    """Decode a stored payload of ``spec`` into a fresh value; raise ``ValueError`` if it is not one.

    The one rule for "this record is readable", used by the stores on every read and by the file backend's
    start-up sweep: valid JSON without NaN/Infinity, of the domain's value kind (an object where the domain
    stores objects; ``null`` only where a store writes it).
    """
    if _handover.waiting:
        kept = _handover.take(spec, text)
        if kept is not _NOTHING:
            return kept
    try:
        value = _fast_loads(text)
    except ValueError:  # orjson.JSONDecodeError: the standard library decides, and words the error
        value = _decode_standard(text)
    else:
        if _may_differ(text):
            value = _decode_standard(text)
    if type(value) is not dict:  # a dict is of every value kind
        check_value_kind(spec, value)
    return value


def check_stored(spec: DomainSpec, text: str) -> None:
    """Raise ``ValueError`` if ``text`` is not a readable payload of ``spec`` (:func:`decode_stored`'s rule).

    For a backend that verifies what it reads, as the file backend does so that it can quarantine a damaged
    record: the decoded value is handed over to the next :func:`decode_stored` of this very string object
    (the store's, for the record the backend returns), which then does not decode again. It is handed over
    once, so each read still gets a fresh value. Values wait in arrival order, the oldest dropped beyond
    4,096 values or 2**20 characters of text: enough for a window of candles, bounded for the records a
    caller reads without decoding them (an export, a soft delete's read-modify-write).
    """
    _handover.keep(text, spec, decode_stored(spec, text))


class _Handover:
    """Values decoded by :func:`check_stored`, waiting for the store's :func:`decode_stored`, by ``id`` of
    their text (the entry holds the text, so no other live object has that id).

    A lock, not a per-thread map: the asyncio face reads in a worker thread and decodes on the loop.
    """

    slots = 4096
    chars = 1 << 20

    def __init__(self) -> None:
        self.waiting: dict[int, tuple[str, DomainSpec, Any]] = {}
        self.held = 0  # characters of the texts in waiting
        self.lock = threading.Lock()

    def keep(self, text: str, spec: DomainSpec, value: Any) -> None:
        size = len(text)
        if size > self.chars:
            return
        with self.lock:
            waiting = self.waiting
            again = waiting.pop(id(text), None)  # the same object checked twice (CPython shares 1-char texts)
            if again is not None:
                self.held -= len(again[0])
            while waiting and (len(waiting) >= self.slots or self.held + size > self.chars):
                self.held -= len(waiting.pop(next(iter(waiting)))[0])
            waiting[id(text)] = (text, spec, value)
            self.held += size

    def take(self, spec: DomainSpec, text: str | bytes) -> Any:
        """The value kept for this very ``text`` object and ``spec`` (removed), or :data:`_NOTHING`."""
        with self.lock:
            kept = self.waiting.pop(id(text), None)
            if kept is not None:
                self.held -= len(kept[0])
        if kept is not None and kept[0] is text and kept[1] is spec:
            return kept[2]
        return _NOTHING


_handover = _Handover()
_NOTHING: Any = object()


def _decode_standard(text: str | bytes) -> Any:
    """The JSON decode of :func:`decode_stored` with the standard library alone (the orjson path's reference)."""
    return _STRICT_DECODE(text.decode("utf-8") if isinstance(text, bytes) else text)


_fast_loads: Callable[[str | bytes], Any] = _decode_standard if fast_json.loads is None else fast_json.loads
_may_differ: Callable[[str | bytes], bool] = (lambda text: False) if fast_json.loads is None else fast_json.may_differ


def check_value_kind(spec: DomainSpec, value: object) -> None:
    """Raise ``ValueError`` if ``value`` is not of ``spec``'s value kind (an object where the domain stores
    objects; ``null`` only where a store writes it)."""
    wrong_kind = spec.value_kind is ValueKind.OBJECT and type(value) is not dict
    if wrong_kind and (value is not None or spec.kind not in _NULL_KINDS):
        raise ValueError(f"a {spec.name} value must be a JSON object, not {type(value).__name__}")


def _plain_float(text: str) -> float:
    return float(text) + 0.0  # -0.0 + 0.0 is 0.0: a backend may give -0.0 back as 0.0 (CONTRACTS.md 4)


_CANONICAL = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True)


def canonical_text(text: str | bytes) -> str:
    """One spelling of a stored payload for comparing storages: decoded, then encoded compactly with dict keys
    sorted and ``-0.0`` as ``0.0``.

    Two backends may spell one value differently (a document store may reorder keys, a server re-serialise
    the text); equal values have equal canonical texts, and values that read back differently never do.
    """
    return _CANONICAL.encode(json.loads(text, parse_float=_plain_float))


def _explain(value: object) -> None:
    """Walk ``value`` and raise :class:`InvalidValueError` at the first rule it breaks.

    Returns normally when nothing is wrong (the fast path's check was a false alarm).
    """
    stack: list[tuple[object, str, int]] = [(value, "$", 1)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_DEPTH and isinstance(node, (dict, list)):
            # A reference cycle ends up here too: it nests without end.
            raise InvalidValueError(path, f"nesting is deeper than {MAX_DEPTH} levels (or a reference cycle)")
        if node is None or isinstance(node, bool):
            continue
        if isinstance(node, str):
            _check_string(node, path)
        elif isinstance(node, int):
            if not _INT_MIN <= node <= _INT_MAX:
                raise InvalidValueError(path, "int is outside the signed 64-bit range")
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise InvalidValueError(path, f"float {node!r} is not finite (NaN and Infinity are not JSON)")
        elif isinstance(node, (dict, list)):
            if isinstance(node, dict):
                for key, child in reversed(list(node.items())):
                    if not isinstance(key, str):
                        raise InvalidValueError(path, f"dict key {key!r} is a {type(key).__name__}, not a str")
                    try:
                        _check_string(key, path)
                    except InvalidValueError as exc:
                        raise InvalidValueError(path, f"dict key {key!r}: {exc.reason}") from None
                    stack.append((child, _child_path(path, key), depth + 1))
            else:
                for index in range(len(node) - 1, -1, -1):
                    stack.append((node[index], f"{path}[{index}]", depth + 1))
        else:
            raise InvalidValueError(path, f"{type(node).__name__} is not a JSON type")


def _check_string(text: str, path: str) -> None:
    if "\x00" in text:
        raise InvalidValueError(path, "string contains NUL")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValueError(path, "string contains a lone surrogate") from None


def _child_path(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"
