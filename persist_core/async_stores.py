"""The typed domain stores of the asyncio face (CONTRACTS.md 3.9).

Same names, arguments and contracts as :mod:`persist_core.stores`, as coroutines; ``entries()`` is an async
iterator. The rules are :mod:`persist_core.store_rules`', shared with the sync face; these classes only await
the backend. Everything a call validates is validated before its first ``await``, so bad input raises before
anything is sent, and a cancelled call leaves the record as the backend's atomic operation left it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeAlias

from persist_core.async_backend import AsyncBackend
from persist_core.domains import DomainSpec, Kind
from persist_core.json_types import JsonLike, JsonObject, JsonObjectLike, JsonValue
from persist_core.store_rules import (
    BucketRules,
    CandleRules,
    Clock,
    CollectionRules,
    KeyedRules,
    R,
    SlotRules,
    StoreRules,
    W,
    WhenLike,
    wall_clock_ms,
)
from persist_core.validation import DEFAULT_MAX_VALUE_BYTES, check_context, to_epoch_ms

__all__ = [
    "AsyncBucketStore",
    "AsyncCandleStore",
    "AsyncCollectionStore",
    "AsyncKeyedStore",
    "AsyncMappingSlotStore",
    "AsyncObjectSlotStore",
    "AsyncSlotStore",
    "AsyncStore",
    "AsyncValueSlotStore",
    "make_async_store",
]


class AsyncStore(StoreRules[AsyncBackend]):
    """Base of the typed stores of the asyncio face."""

    __slots__ = ()


class AsyncSlotStore(SlotRules[AsyncBackend, W, R], AsyncStore):
    """See :class:`persist_core.stores.SlotStore`."""

    __slots__ = ()

    async def read(self, as_of: WhenLike = None) -> R:
        """See :meth:`persist_core.stores.SlotStore.read`."""
        limit = to_epoch_ms(as_of, "as_of")
        return self._slot_value(await self._backend.get(self._spec, self._context), limit)

    async def write(self, value: W, when: WhenLike = None) -> None:
        """See :meth:`persist_core.stores.SlotStore.write`."""
        await self._backend.put(self._spec, self._context, self._record(value, when))


#: See :data:`persist_core.stores.ObjectSlotStore`.
AsyncObjectSlotStore: TypeAlias = AsyncSlotStore[JsonObjectLike | None, JsonObject | None]
#: See :data:`persist_core.stores.MappingSlotStore`.
AsyncMappingSlotStore: TypeAlias = AsyncSlotStore[JsonObjectLike | None, JsonObject]
#: See :data:`persist_core.stores.ValueSlotStore`.
AsyncValueSlotStore: TypeAlias = AsyncSlotStore[JsonLike, JsonValue]


class AsyncKeyedStore(KeyedRules[AsyncBackend], AsyncStore):
    """See :class:`persist_core.stores.KeyedStore`."""

    __slots__ = ()

    async def read(self, signal_id: str, as_of: WhenLike = None) -> JsonObject:
        """See :meth:`persist_core.stores.KeyedStore.read`."""
        key = self._item(signal_id)
        limit = to_epoch_ms(as_of, "as_of")
        return self._mapping_value(await self._backend.get(self._spec, key), key, limit)

    async def write(self, signal_id: str, value: JsonObjectLike | None, when: WhenLike = None) -> None:
        """See :meth:`persist_core.stores.KeyedStore.write`."""
        key = self._item(signal_id)
        await self._backend.put(self._spec, key, self._record(value, when))


class AsyncCandleStore(CandleRules[AsyncBackend], AsyncStore):
    """See :class:`persist_core.stores.CandleStore`."""

    __slots__ = ()

    async def write(self, candles: Sequence[JsonObjectLike]) -> int:
        """See :meth:`persist_core.stores.CandleStore.write`."""
        items = self._candle_batch(candles)
        return await self._backend.insert_many(self._spec, items) if items else 0

    async def read(self, limit: int, since: int) -> list[JsonObject] | None:
        """See :meth:`persist_core.stores.CandleStore.read`."""
        start, stop = self._window(limit, since)
        found = await self._backend.read_window(self._spec, self._context, start, stop, self._step)
        return self._window_values(found, start, stop)


class AsyncCollectionStore(CollectionRules[AsyncBackend], AsyncStore):
    """See :class:`persist_core.stores.CollectionStore`."""

    __slots__ = ()

    async def read(self) -> list[JsonObject]:
        """See :meth:`persist_core.stores.CollectionStore.read`."""
        return self._items(await self._backend.scan(self._spec, self._context))

    async def write(self, items: Sequence[JsonObjectLike]) -> None:
        """See :meth:`persist_core.stores.CollectionStore.write`."""
        pairs = self._collection_batch(items)
        if not pairs:
            return
        if self._spec.first_write_wins:
            await self._backend.insert_many(self._spec, pairs)
        else:
            await self._backend.put_many(self._spec, pairs)


class AsyncBucketStore(BucketRules[AsyncBackend], AsyncStore):
    """See :class:`persist_core.stores.BucketStore`."""

    __slots__ = ()

    async def read(self, key: str, as_of: WhenLike = None) -> JsonValue:
        """See :meth:`persist_core.stores.BucketStore.read`."""
        full = self._item(key)
        limit = to_epoch_ms(as_of, "as_of")
        return self._bucket_value(await self._backend.get(self._spec, full), full, limit)

    async def write(self, key: str, value: JsonLike, when: WhenLike = None) -> None:
        """See :meth:`persist_core.stores.BucketStore.write`."""
        full = self._item(key)
        await self._backend.put(self._spec, full, self._bucket_record(value, when))

    async def remove(self, key: str) -> None:
        """See :meth:`persist_core.stores.BucketStore.remove`."""
        await self._backend.mark_removed(self._spec, self._item(key))

    async def has(self, key: str, as_of: WhenLike = None) -> bool:
        """See :meth:`persist_core.stores.BucketStore.has`."""
        full = self._item(key)
        limit = to_epoch_ms(as_of, "as_of")
        return self._visible(await self._backend.get(self._spec, full), limit) is not None

    async def keys(self, as_of: WhenLike = None) -> list[str]:
        """See :meth:`persist_core.stores.BucketStore.keys`."""
        to_epoch_ms(as_of, "as_of")
        return self._keys(await self._backend.scan(self._spec, self._context), as_of)

    async def entries(self, as_of: WhenLike = None) -> AsyncIterator[tuple[str, JsonValue]]:
        """See :meth:`persist_core.stores.BucketStore.entries`; use it with ``async for``."""
        to_epoch_ms(as_of, "as_of")
        for entry in self._entries(await self._backend.scan(self._spec, self._context), as_of):
            yield entry


_STORE_CLASSES: dict[Kind, type[AsyncStore]] = {
    Kind.SLOT: AsyncSlotStore,
    Kind.KEYED: AsyncKeyedStore,
    Kind.CANDLE: AsyncCandleStore,
    Kind.COLLECTION: AsyncCollectionStore,
    Kind.BUCKET: AsyncBucketStore,
}


def make_async_store(
    backend: AsyncBackend,
    spec: DomainSpec,
    context: dict[str, Any],
    *,
    clock: Clock = wall_clock_ms,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
) -> AsyncStore:
    """Validate ``context`` and return the asyncio store of ``spec`` on ``backend``."""
    values = check_context(spec, context)
    if spec.kind is Kind.CANDLE:
        return AsyncCandleStore(backend, spec, values, max_value_bytes=max_value_bytes, clock=clock)
    return _STORE_CLASSES[spec.kind](backend, spec, values, max_value_bytes=max_value_bytes)
