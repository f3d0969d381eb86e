"""Running the kit's clauses on the asyncio face: a sync view of an async store.

The clauses are written against the sync store API. :func:`sync_view` wraps an asyncio store so that each
of its coroutine methods runs to completion on a private event loop in a background thread and returns its
result (an async iterator is collected into a list first), so the very same clause exercises the async
store classes and the async backend under them.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run", "sync_view"]

_T = TypeVar("_T")
#: No clause waits this long for one store call; a hang fails instead of blocking the run.
_CALL_TIMEOUT = 120.0

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _running_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="persist-kit-loop", daemon=True).start()
            _loop = loop
        return _loop


def run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coroutine`` on the kit's event loop thread and return its result (or raise its error)."""
    return asyncio.run_coroutine_threadsafe(coroutine, _running_loop()).result(timeout=_CALL_TIMEOUT)


async def _collect(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


class _SyncView:
    """An asyncio store seen through the sync store API."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not callable(attribute) or not (
            inspect.iscoroutinefunction(attribute) or inspect.isasyncgenfunction(attribute)
        ):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if inspect.isasyncgen(result):
                return iter(run(_collect(result)))
            return run(result)

        return call

    def __repr__(self) -> str:
        return f"<sync view of {self._store!r}>"


def sync_view(store: _T) -> Any:
    """``store`` (an asyncio store) behind the sync store API."""
    return _SyncView(store)
