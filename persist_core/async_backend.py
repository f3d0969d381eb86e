"""The backend surface of the asyncio face (CONTRACTS.md 3.9).

:class:`AsyncBackend` has the operations of :class:`~persist_core.backend.Backend`, as coroutines, with the
same contracts (documented once, on :class:`~persist_core.backend.Backend`). An adapter author does not have
to write one: :class:`ThreadedAsyncBackend` runs any sync backend on the asyncio face through a bounded
thread pool, so a blocking call (an fsync, a SQLite lock wait) never runs on the event loop. A backend with a
native asyncio driver implements this class directly.

Cancellation: an ``await`` that is cancelled while the thread pool runs the operation returns at once, and
the operation itself runs to its end in its thread, so it is stored whole or not at all (every backend
operation is atomic); it never leaves a half-written record or a connection in an unknown state.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import functools
import os
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, TypeVar

from persist_core.backend import PAGE_SIZE, Backend, Capabilities, ItemKey, Key, Record
from persist_core.domains import DomainSpec

if TYPE_CHECKING:
    from persist_core.ownership import LeaseLog
    from persist_core.units import Write

__all__ = ["DEFAULT_THREADS", "AsyncBackend", "ThreadedAsyncBackend", "shared_executor"]

_T = TypeVar("_T")

#: The threads of the shared pool: enough to overlap fsyncs and lock waits, bounded so that a storm of
#: coroutines cannot start hundreds of threads.
DEFAULT_THREADS = min(32, (os.cpu_count() or 1) + 4)

_executor: concurrent.futures.ThreadPoolExecutor | None = None


def shared_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The process-wide bounded pool in which sync backends run for the asyncio face."""
    global _executor
    if _executor is None:
        _executor = concurrent.futures.ThreadPoolExecutor(DEFAULT_THREADS, thread_name_prefix="persist-io")
    return _executor


class AsyncBackend(abc.ABC):
    """A backend on the asyncio face: :class:`~persist_core.backend.Backend`'s operations as coroutines."""

    capabilities: ClassVar[Capabilities] = Capabilities()
    url: str = ""

    async def open(self) -> None:  # noqa: B027 - optional hook, intentionally empty
        """See :meth:`persist_core.backend.Backend.open`."""

    async def close(self) -> None:  # noqa: B027 - optional hook, intentionally empty
        """See :meth:`persist_core.backend.Backend.close`."""

    @abc.abstractmethod
    async def get(self, domain: DomainSpec, key: Key) -> Record | None:
        """See :meth:`persist_core.backend.Backend.get`."""

    @abc.abstractmethod
    async def scan(
        self, domain: DomainSpec, context: Key, start: ItemKey | None = None, stop: ItemKey | None = None
    ) -> list[tuple[ItemKey, Record]]:
        """See :meth:`persist_core.backend.Backend.scan`."""

    async def read_window(
        self, domain: DomainSpec, context: Key, start: int, stop: int, step: int
    ) -> list[tuple[ItemKey, Record]]:
        """See :meth:`persist_core.backend.Backend.read_window`."""
        rows = await self.scan(domain, context, start, stop)
        return [(item, rec) for item, rec in rows if (item - start) % step == 0]

    @abc.abstractmethod
    async def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        """See :meth:`persist_core.backend.Backend.put`."""

    async def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        """See :meth:`persist_core.backend.Backend.put_many`."""
        for key, record in items:
            await self.put(domain, key, record)

    @abc.abstractmethod
    async def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        """See :meth:`persist_core.backend.Backend.insert_many`."""

    @abc.abstractmethod
    async def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        """See :meth:`persist_core.backend.Backend.mark_removed`."""

    async def apply_unit(self, writes: Sequence[Write]) -> None:
        """See :meth:`persist_core.backend.Backend.apply_unit`; the default is as not atomic as the sync one."""
        from persist_core.units import calls  # units imports persist_core.backend

        for name, args in calls(writes):
            await getattr(self, name)(*args)

    async def list_contexts(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, int]]:
        """See :meth:`persist_core.backend.Backend.list_contexts`."""
        raise NotImplementedError(f"{type(self).__name__} cannot list contexts (capabilities.listing is False)")

    async def list_records(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, Record]]:
        """See :meth:`persist_core.backend.Backend.list_records`."""
        raise NotImplementedError(f"{type(self).__name__} cannot list records (capabilities.listing is False)")

    async def delete_records(self, domain: DomainSpec, keys: Sequence[Key]) -> int:
        """See :meth:`persist_core.backend.Backend.delete_records`."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete records (capabilities.deletion is False)")

    def lease_log(self) -> LeaseLog:
        """See :meth:`persist_core.backend.Backend.lease_log`; the log's calls block, the facade runs them in
        the thread pool."""
        raise NotImplementedError(f"{type(self).__name__} keeps no ownership leases")

    async def __aenter__(self) -> AsyncBackend:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


class ThreadedAsyncBackend(AsyncBackend):
    """A sync :class:`~persist_core.backend.Backend` on the asyncio face, each call in a bounded thread pool.

    A backend that declares ``Capabilities(blocks=False)`` (memory) is called on the event loop instead: its
    operations are shorter than the hop to a pool thread, and a pool thread holding the GIL for them would
    keep the loop waiting longer than the call itself. Each call still yields to the loop once, as an I/O call
    would, so that a loop of writes does not starve other tasks.
    """

    def __init__(self, inner: Backend, executor: concurrent.futures.Executor | None = None) -> None:
        self.inner = inner
        self.url = inner.url
        self.capabilities = inner.capabilities  # type: ignore[misc]
        self._executor = executor

    async def _call(self, function: Callable[..., _T], *args: object) -> _T:
        if not self.capabilities.blocks:
            # Yield once, as an awaited I/O call would: a loop of writes must not keep other tasks waiting.
            await asyncio.sleep(0)
            return function(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor or shared_executor(), functools.partial(function, *args))

    # docstrings inherited from AsyncBackend

    async def open(self) -> None:
        await self._call(self.inner.open)

    async def close(self) -> None:
        await self._call(self.inner.close)

    async def get(self, domain: DomainSpec, key: Key) -> Record | None:
        return await self._call(self.inner.get, domain, key)

    async def scan(
        self, domain: DomainSpec, context: Key, start: ItemKey | None = None, stop: ItemKey | None = None
    ) -> list[tuple[ItemKey, Record]]:
        return await self._call(self.inner.scan, domain, context, start, stop)

    async def read_window(
        self, domain: DomainSpec, context: Key, start: int, stop: int, step: int
    ) -> list[tuple[ItemKey, Record]]:
        return await self._call(self.inner.read_window, domain, context, start, stop, step)

    async def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        await self._call(self.inner.put, domain, key, record)

    async def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        await self._call(self.inner.put_many, domain, items)

    async def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        return await self._call(self.inner.insert_many, domain, items)

    async def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        await self._call(self.inner.mark_removed, domain, key)

    async def apply_unit(self, writes: Sequence[Write]) -> None:
        await self._call(self.inner.apply_unit, writes)

    async def list_contexts(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, int]]:
        return await self._call(functools.partial(self.inner.list_contexts, domain, after=after, limit=limit))

    async def list_records(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, Record]]:
        return await self._call(functools.partial(self.inner.list_records, domain, after=after, limit=limit))

    async def delete_records(self, domain: DomainSpec, keys: Sequence[Key]) -> int:
        return await self._call(self.inner.delete_records, domain, keys)

    def lease_log(self) -> LeaseLog:
        return self.inner.lease_log()

    def __repr__(self) -> str:
        return f"<threaded {self.inner!r}>"
