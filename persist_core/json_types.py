"""The static types of stored values, for users' type checkers (``mypy --strict`` on a bot).

Reads return concrete types (:data:`JsonValue`, :data:`JsonObject`): a value comes back as fresh ``dict`` and
``list`` objects. Writes accept the read-only forms (:data:`JsonLike`, :data:`JsonObjectLike`) so that a
``dict[str, int]`` or a ``list[float]`` the user already has is accepted: ``dict`` and ``list`` are invariant,
``Mapping`` and :class:`JsonArrayLike` are covariant. The run-time rules stay in
:mod:`persist_core.validation`; these types only let a checker catch the same mistakes earlier.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol, TypeAlias, TypeVar

__all__ = ["JsonArrayLike", "JsonLike", "JsonObject", "JsonObjectLike", "JsonValue"]

_T_co = TypeVar("_T_co", covariant=True)


class JsonArrayLike(Protocol[_T_co]):
    """A ``list`` of any item type, matched covariantly (``list[float]`` is a ``JsonArrayLike[JsonLike]``).

    ``copy()`` is what tells a list from a tuple, which the run-time check rejects (CONTRACTS.md 4);
    ``Sequence`` would accept tuples and ``str``.
    """

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[_T_co]: ...

    def copy(self) -> Sequence[_T_co]: ...


#: A JSON document as a read returns it: fresh ``dict``s (``str`` keys) and ``list``s all the way down.
JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
#: A JSON object as a read returns it.
JsonObject: TypeAlias = dict[str, JsonValue]
#: What a write accepts as a JSON document: any mapping with ``str`` keys, any list, JSON scalars.
JsonLike: TypeAlias = bool | int | float | str | JsonArrayLike["JsonLike"] | Mapping[str, "JsonLike"] | None
#: What a write accepts as a JSON object.
JsonObjectLike: TypeAlias = Mapping[str, JsonLike]
