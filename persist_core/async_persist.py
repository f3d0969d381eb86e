"""``asetup()`` and the asyncio facade (CONTRACTS.md 3.9).

:class:`AsyncPersist` has the same stores, names, routing, options, mode isolation and ownership as
:class:`~persist_core.persist.Persist`, with coroutine methods. It is built on a sync ``Persist`` that does
the configuration: opening, schema checks and connecting run in the bounded thread pool, never on the event
loop. A backend whose URL scheme has a native asyncio backend (PostgreSQL and MariaDB/MySQL, MongoDB + Redis:
:func:`persist_core.registry.create_async_backend`) is served by it, beside the sync one that keeps the
schema check and the ownership leases; its live stores go through :class:`AsyncOwnedBackend`, which runs the
owner's check in the thread pool only when the lease needs claiming or renewing. Every other backend's calls
are awaited through :class:`ThreadedAsyncBackend` (the live stores' calls go through the ownership guard in
that thread too).
"""

from __future__ import annotations

import asyncio
import functools
from types import TracebackType
from typing import Any, Unpack, cast

from persist_core.async_backend import AsyncBackend, ThreadedAsyncBackend, shared_executor
from persist_core.async_stores import (
    AsyncBucketStore,
    AsyncCandleStore,
    AsyncCollectionStore,
    AsyncKeyedStore,
    AsyncMappingSlotStore,
    AsyncObjectSlotStore,
    AsyncValueSlotStore,
    make_async_store,
)
from persist_core.backend import Backend
from persist_core.collecting import AsyncCollectingBackend
from persist_core.domains import DomainSpec
from persist_core.errors import ConfigurationError
from persist_core.guarded import AsyncOpenBackend, AsyncOwnedBackend, OwnedBackend
from persist_core.persist import Persist, SetupOptions, _Stores, build_persist
from persist_core.registry import create_async_backend
from persist_core.units import PendingWrites, note_non_atomic, raise_incomplete
from persist_core.urls import UrlLike

__all__ = ["AsyncModeStores", "AsyncPersist", "AsyncUnit", "asetup"]


#: The accessors of the asyncio face, typed with its store classes (the base of its mode stores and units).
_AsyncStores = _Stores[
    AsyncObjectSlotStore,
    AsyncMappingSlotStore,
    AsyncValueSlotStore,
    AsyncKeyedStore,
    AsyncCandleStore,
    AsyncCollectionStore,
    AsyncBucketStore,
]


class AsyncModeStores(_AsyncStores):
    """The 16 typed stores of one mode on the asyncio face (``persist.live`` / ``persist.backtest``)."""

    def unit(self) -> AsyncUnit:
        """A unit of work of this mode, applied at the end of its ``async with`` block; the same contract as
        :meth:`persist_core.persist.ModeStores.unit`::

            async with persist.live.unit() as unit:
                await unit.signal(symbol=s, strategy_name=n, exchange_name=x).write(opened)
                await unit.log().write([entry])
        """
        if self._unit is None:  # pragma: no cover - every facade passes its unit factory
            raise ConfigurationError("these stores belong to no facade that can make units of work")
        return cast(AsyncUnit, self._unit())


class AsyncUnit(_AsyncStores):
    """A unit of work of the asyncio face; see :meth:`persist_core.persist.ModeStores.unit`.

    Its stores' writes are coroutines that only collect (nothing is sent before the commit).
    """

    def __init__(self, persist: AsyncPersist, mode: str) -> None:
        super().__init__(self._collect_into, mode)
        self._persist = persist
        self._pending: PendingWrites[AsyncBackend] = PendingWrites(mode)
        self._collectors: dict[int, AsyncCollectingBackend] = {}

    def _collect_into(self, mode: str, spec: DomainSpec, context: dict[str, Any]) -> Any:
        target = self._persist._store_face(mode, spec.name)
        collector = self._collectors.get(id(target))
        if collector is None:
            collector = self._collectors.setdefault(id(target), AsyncCollectingBackend(target, self._pending))
        sync = self._persist.sync
        return make_async_store(collector, spec, context, clock=sync.clock, max_value_bytes=sync.max_value_bytes)

    def __len__(self) -> int:
        """See :meth:`persist_core.persist.Unit.__len__`."""
        return len(self._pending)

    async def commit(self) -> None:
        """See :meth:`persist_core.persist.Unit.commit`.

        Cancelled while a group is being applied, the group still runs to its end (as any backend call does):
        it is stored whole or not at all.
        """
        parts = self._pending.take()
        for index, (target, writes) in enumerate(parts):
            note_non_atomic(target, len(writes))
            try:
                await target.apply_unit(writes)
            except Exception as exc:
                raise_incomplete([t.url for t, _ in parts], index, exc)

    def discard(self) -> None:
        """See :meth:`persist_core.persist.Unit.discard`."""
        self._pending.discard()

    async def __aenter__(self) -> AsyncUnit:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            await self.commit()
        else:
            self.discard()


class AsyncPersist:
    """The configured persistence layer on the asyncio face; obtain one with :func:`asetup`.

    An async context manager: ``async with await asetup(...) as persist:`` (or ``await persist.close()``).
    """

    def __init__(self, persist: Persist) -> None:
        self._persist = persist
        self._faces: dict[int, AsyncBackend] = {}
        #: The native asyncio backend of each URL that has one (None: the thread pool serves it).
        self._natives: dict[str, AsyncBackend | None] = {}
        self.live = AsyncModeStores(self._make_store, "live", lambda: AsyncUnit(self, "live"))
        self.backtest = AsyncModeStores(self._make_store, "backtest", lambda: AsyncUnit(self, "backtest"))

    @property
    def sync(self) -> Persist:
        """The sync facade underneath, for tools that are not on the event loop."""
        return self._persist

    def mode(self, mode: str) -> AsyncModeStores:
        """The stores of ``mode`` (``"live"`` or ``"backtest"``)."""
        self._persist.mode(mode)
        return self.live if mode == "live" else self.backtest

    def routes(self) -> list[tuple[str, str, str]]:
        """See :meth:`persist_core.persist.Persist.routes`."""
        return self._persist.routes()

    async def claim_ownership(self) -> None:
        """See :meth:`persist_core.persist.Persist.claim_ownership`; runs in the thread pool."""
        await _in_thread(self._persist.claim_ownership)

    def _face(self, backend: Backend, native: AsyncBackend | None = None) -> AsyncBackend:
        """The asyncio face of ``backend`` (a store backend of the sync facade: bare or ownership-guarded)."""
        face = self._faces.get(id(backend))
        if face is None:
            if native is None:
                face = ThreadedAsyncBackend(backend)  # through the sync guard: the open check, ownership
            elif isinstance(backend, OwnedBackend):
                face = AsyncOwnedBackend(native, backend.owner, backend.lifecycle)
            else:
                face = AsyncOpenBackend(native, self._persist.lifecycle)
            face = self._faces.setdefault(id(backend), face)
        return face

    def _native(self, mode: str, domain_name: str) -> AsyncBackend | None:
        url, options = self._persist.route(mode, domain_name)
        if url not in self._natives:
            bare = self._persist.backend(mode, domain_name)
            self._natives[url] = create_async_backend(url, sync=bare, **options)
        return self._natives[url]

    def _store_face(self, mode: str, domain_name: str) -> AsyncBackend:
        """The asyncio backend the stores of ``domain_name`` in ``mode`` write through (guarded as on the sync face)."""
        native = self._native(mode, domain_name)
        return self._face(self._persist.store_backend(mode, domain_name), native)

    def _make_store(self, mode: str, spec: DomainSpec, context: dict[str, Any]) -> Any:
        return make_async_store(
            self._store_face(mode, spec.name),
            spec,
            context,
            clock=self._persist.clock,
            max_value_bytes=self._persist.max_value_bytes,
        )

    async def _open_natives(self) -> None:
        """Build and open the native asyncio backends of every route, in this event loop (fail fast)."""
        for mode, name, _ in self._persist.routes():
            native = self._native(mode, name)
            if native is not None:
                await native.open()

    async def close(self) -> None:
        """Close the native asyncio backends, then release ownership and close every backend (in the thread
        pool). Idempotent."""
        # Closed before anything is released: a store call from now on would reopen what is being closed.
        self._persist.lifecycle.close("this AsyncPersist is closed (close() or the end of its async with block)")
        natives = [native for native in self._natives.values() if native is not None]
        self._natives.clear()
        self._faces.clear()
        try:
            for native in natives:
                await native.close()
        finally:
            await _in_thread(self._persist.close)

    async def __aenter__(self) -> AsyncPersist:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def _in_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(shared_executor(), functools.partial(function, *args, **kwargs))


async def asetup(url: UrlLike | None = None, **options: Unpack[SetupOptions]) -> AsyncPersist:
    """The asyncio face of :func:`persist_core.setup`: same arguments, same routing, same errors.

    Opening the backends (connecting, checking schemas, sweeping folders) runs in the thread pool, so the
    event loop keeps running meanwhile; native asyncio backends (PostgreSQL) then connect on the loop.
    Unlike ``setup()`` it does not replace the facade that :func:`persist_core.get_persist` returns.
    """
    persist: Persist = await _in_thread(build_persist, url, **options)
    facade = AsyncPersist(persist)
    try:
        await facade._open_natives()
    except BaseException:
        await facade.close()
        raise
    return facade
