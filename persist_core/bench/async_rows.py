"""What the asyncio face's benchmark rows share: one event loop of their own, and the thread-pool face of a store.

The harness times sync callables, so each side of an asyncio pair drives its coroutine with
``loop.run_until_complete`` on the rows' one event loop: both sides pay the same loop overhead.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import Any, cast

from persist_core.async_backend import ThreadedAsyncBackend
from persist_core.async_persist import AsyncPersist
from persist_core.async_stores import AsyncObjectSlotStore, AsyncSlotStore, make_async_store
from persist_core.domains import DOMAINS

__all__ = ["LoopRows", "threaded_signal"]


class LoopRows:
    """Benchmark rows on an event loop of their own: :meth:`setup` makes it and runs :meth:`_setup` on it,
    :meth:`teardown` runs :meth:`_teardown` and closes it."""

    loop: Any = None

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        if self.loop is None:  # pragma: no cover - setup() makes it
            raise RuntimeError("setup() first")
        return self.loop.run_until_complete(coroutine)

    def setup(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self._run(self._setup())

    def teardown(self) -> None:
        if self.loop is None:
            return
        try:
            self._run(self._teardown())
        finally:
            self.loop.close()
            self.loop = None

    async def _setup(self) -> None:
        """Open the facades and raw clients (on the rows' loop)."""

    async def _teardown(self) -> None:
        """Close them and delete what the rows wrote."""


def threaded_signal(persist: AsyncPersist, context: Mapping[str, str]) -> AsyncObjectSlotStore:
    """The live signal store of ``context`` on the thread-pool face of ``persist``'s sync backend, for comparison."""
    store = make_async_store(
        ThreadedAsyncBackend(persist.sync.store_backend("live", "signal")), DOMAINS["signal"], dict(context)
    )
    if not isinstance(store, AsyncSlotStore):  # pragma: no cover - signal is a slot domain
        raise TypeError(f"expected a slot store, got {store!r}")
    return cast(AsyncObjectSlotStore, store)
