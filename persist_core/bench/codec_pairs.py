"""Benchmark pairs of the value codec alone (issue 13.3): the bench's 1 KB row, no I/O.

- validate+encode: :func:`~persist_core.validation.encode_value` (every rule of CONTRACTS.md 4 checked, the
  canonical text returned) against ``json.dumps`` of the same value with the same separators, which checks
  nothing beyond what the encoder refuses, and against ``orjson.dumps`` (bytes, nothing checked);
- decode: :func:`~persist_core.validation.decode_stored` (strict JSON, the domain's value kind) against
  ``json.loads`` and ``orjson.loads`` of the same text.

Issue 13's limits are absolute: validate+encode <= 6 us and decode <= 3 us; read them in the ``p50 us``
column of ours. The orjson rows are left out where orjson is not installed.
"""

from __future__ import annotations

import json
from typing import Any

from persist_core import fast_json
from persist_core.bench.core_pairs import sample_value
from persist_core.bench.harness import Pair
from persist_core.domains import DOMAINS
from persist_core.validation import decode_stored, encode_value

__all__ = ["bench_pairs"]


class _CodecRows:
    """The 1 KB signal row, its canonical text, and the calls each side times."""

    def __init__(self) -> None:
        self.spec = DOMAINS["signal"]
        self.value = sample_value()
        self.text = encode_value(self.value)

    def ours_encode(self, i: int) -> str:
        return encode_value(self.value)

    def json_encode(self, i: int) -> str:
        return json.dumps(self.value, ensure_ascii=False, separators=(",", ":"))

    def ours_decode(self, i: int) -> Any:
        return decode_stored(self.spec, self.text)

    def json_decode(self, i: int) -> Any:
        return json.loads(self.text)


def bench_pairs(quick: bool) -> list[Pair]:
    """The codec rows; ``quick`` runs fewer operations."""
    n = 2000 if quick else 20000
    rows = _CodecRows()
    pairs = [
        Pair("codec", "validate+encode 1 KB", rows.ours_encode, rows.json_encode, "json.dumps (no checks)", n=n),
        Pair("codec", "decode 1 KB", rows.ours_decode, rows.json_decode, "json.loads", n=n),
    ]
    if fast_json.AVAILABLE:
        import orjson

        value, text = rows.value, rows.text
        pairs += [
            Pair(
                "codec", "validate+encode 1 KB vs orjson", rows.ours_encode, lambda i: orjson.dumps(value),
                "orjson.dumps (no checks)", n=n,
            ),
            Pair("codec", "decode 1 KB vs orjson", rows.ours_decode, lambda i: orjson.loads(text), "orjson.loads", n=n),
        ]  # fmt: skip
    return pairs
