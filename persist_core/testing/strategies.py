"""Hypothesis strategies for keys and values, valid and invalid."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from persist_core.testing.samples import HOSTILE_KEYS, INVALID_VALUES

__all__ = ["invalid_values", "json_values", "key_strings"]

_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)


def json_values(object_only: bool = False) -> st.SearchStrategy[Any]:
    """Valid JSON documents (CONTRACTS.md 4); with ``object_only`` the top level is a dict."""
    tree = st.recursive(
        _SCALARS,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
        max_leaves=12,
    )
    if object_only:
        return st.dictionaries(_TEXT, tree, max_size=4)
    return tree


def key_strings() -> st.SearchStrategy[str]:
    """Valid key strings: 1 to 80 bytes of UTF-8, no control characters, hostile ones favoured."""
    generated = st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=20).filter(
        lambda s: len(s.encode()) <= 80
    )
    return st.sampled_from(HOSTILE_KEYS) | generated


def invalid_values() -> st.SearchStrategy[Any]:
    """Values every domain rejects: the kit's samples, also hidden inside otherwise valid documents."""
    bad = st.sampled_from([value for _, value, _ in INVALID_VALUES])
    return bad | st.builds(lambda good, b: {"ok": good, "bad": [good, b]}, json_values(), bad)
