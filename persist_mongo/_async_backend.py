"""The asyncio Mongo backend: pymongo's ``AsyncMongoClient`` and ``redis.asyncio``, no thread hop per call (issue 10).

:class:`AsyncMongoBackend` runs the very operations of :class:`~persist_mongo.MongoBackend`
(:mod:`persist_mongo._operations`: the same documents, codec, value cache logic, key locks, first-write-wins
inserts and error translation) on the asyncio drivers; only the I/O differs (:mod:`persist_mongo._steps`).

It holds the sync :class:`~persist_mongo.MongoBackend` of the same URL for what is not on the hot path and
for what both faces share: its settings (deadline, Redis share, lock lease), its value cache's health and
counters (``cache_stats`` counts both faces), the indexes it creates at open, and the ownership leases (the
facade runs the owner's calls in the thread pool).

Deadline: every operation runs under the sync backend's ``timeout`` with ``pymongo.timeout``, which bounds
server selection, connection checkout and every socket read and write by the time left, on the async client
as on the sync one; a Redis command takes at most its share (``redis_socket_timeout``). A frozen server gives
:class:`~persist_core.errors.BackendTimeoutError`, and pymongo discards the connection that timed out.

Cancellation: a cancelled ``await`` of a read or of a one-command write makes pymongo (or redis-py) close the
connection in use, never reusing it; a MongoDB write is one command, applied whole or not at all. A write
under a key lock (soft-delete domains, and every write while the Redis cache holds its key's marker) runs on to
its end in a task of its own, as a thread-pool call does, so that its lock is taken and released in order
(:meth:`AsyncMongoBackend._run_whole`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from persist_core.async_backend import AsyncBackend
from persist_core.backend import PAGE_SIZE, ItemKey, Key, Record
from persist_core.domains import DOMAINS, DomainSpec
from persist_core.errors import ConfigurationError, PersistError
from persist_core.ownership import LeaseLog
from persist_core.units import Write
from persist_core.urls import scrub_chain
from persist_mongo import _operations as operations
from persist_mongo import _units as units
from persist_mongo._backend import MongoBackend
from persist_mongo._cache import CacheStats
from persist_mongo._deadline import deadline
from persist_mongo._errors import DRIVER_ERRORS
from persist_mongo._leases import LEASE_COLLECTION
from persist_mongo._operations import LOCK_COLLECTION, Handles
from persist_mongo._steps import Steps, run_async

__all__ = ["AsyncMongoBackend"]

_T = TypeVar("_T")


class _Opened(Handles):
    """The async driver objects, and the event loop they belong to."""

    __slots__ = ("loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop, *args: Any) -> None:
        super().__init__(*args)
        self.loop = loop


class AsyncMongoBackend(AsyncBackend):
    """Records in MongoDB on ``AsyncMongoClient``, copies cached in Redis on ``redis.asyncio``: the asyncio
    twin of :class:`~persist_mongo.MongoBackend`.

    It opens lazily, in the event loop of its first call (or :meth:`open`); used from another event loop (a
    second ``asyncio.run``) it opens new clients there, as the async drivers are bound to one loop.

    Args:
        url: the ``mongodb://`` URL; its password never appears in messages.
        sync: the sync backend of the same URL, opened by the caller and kept open while this one is used
            (``asetup`` passes the facade's own); its settings, value cache and leases are used, and it is not
            closed here. Without it the backend makes and closes one of its own from ``url`` and ``options``.
        options: keyword options of :class:`~persist_mongo.MongoBackend` (``redis_url``, ``timeout``,
            ``client_options``, ...); ignored when ``sync`` is given, which was built with them.
    """

    capabilities = MongoBackend.capabilities

    def __init__(self, url: str, *, sync: MongoBackend | None = None, **options: Any) -> None:
        self._owns_sync = sync is None
        if sync is None:
            sync = MongoBackend.from_url(url, **options)
        elif not isinstance(sync, MongoBackend):
            raise ConfigurationError(f"the asyncio Mongo backend needs a MongoBackend as sync=, not {sync!r}")
        self._sync = sync
        self.url = sync.url
        self.settings = sync.settings
        self._state: _Opened | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncMongoBackend:
        """Build (unopened) from a URL (the registry's async factory); keyword options as for the constructor."""
        return cls(url, **options)

    @property
    def timeout(self) -> float:
        """The deadline of every operation, in seconds (the sync backend's ``timeout``)."""
        return self.settings.timeout

    @property
    def cache_stats(self) -> CacheStats:
        """The value cache's counters, shared with the sync backend (see :class:`CacheStats`)."""
        return self._sync.cache_stats

    @property
    def client(self) -> Any:
        """The ``AsyncMongoClient`` of the current event loop (``None`` before opening), for tests and monitoring."""
        return None if self._state is None else self._state.client

    # ----------------------------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        # docstring inherited: the sync backend opens first (indexes, in a thread), then the async clients.
        try:
            await self._open()
        except PersistError as error:
            scrub_chain(error)
            raise

    async def _open(self) -> _Opened:
        from pymongo import AsyncMongoClient

        loop = asyncio.get_running_loop()
        state = self._state
        if state is not None and state.loop is loop:
            return state
        settings = self.settings
        with deadline(settings.timeout):
            if self._sync._state is None:
                await asyncio.to_thread(self._sync.open)  # creates the indexes, once per process and database
            if state is not None:  # the clients of another event loop: not usable from this one
                self._state = None
                _abandon(state)
            sync = self._sync
            try:
                client: Any = AsyncMongoClient(sync._client_url, **sync._client_options)
            except DRIVER_ERRORS as exc:
                raise settings.translate(exc, "opening") from exc
            cache = settings.cache
            redis = None if cache is None else cache.async_face()
            db = client[sync.database]
            collections = {name: db[settings.layout(spec).collection] for name, spec in DOMAINS.items()}
            state = _Opened(loop, client, collections, db[LOCK_COLLECTION], db[LEASE_COLLECTION], redis, asyncio.sleep)
            try:
                await client.admin.command("ping")  # fail fast (CONTRACTS.md 3.6)
                if cache is not None and redis is not None:  # a dead Redis is logged and counted, never fatal
                    await run_async(cache.ping(redis))
                await run_async(units.replay(settings, state))  # units whose writer died, before any write of ours
            except BaseException as exc:
                await _close(client, redis)
                if isinstance(exc, DRIVER_ERRORS):
                    raise settings.translate(exc, "opening") from exc
                raise
        current = self._state
        if current is not None and current.loop is loop:  # another coroutine opened it meanwhile: use that one
            await _close(client, redis)
            return current
        self._state = state
        return state

    async def close(self) -> None:
        # docstring inherited
        state, self._state = self._state, None
        if state is not None:
            if state.loop is asyncio.get_running_loop():
                with deadline(self.settings.timeout):  # ends the server sessions: a command to a maybe frozen server
                    await _close(state.client, state.redis)
            else:
                _abandon(state)
        if self._owns_sync:
            await asyncio.to_thread(self._sync.close)

    # ------------------------------------------------------------------------------------ plumbing

    async def _run(self, operation: Callable[..., Steps[_T]], *args: Any) -> _T:
        """Run one of :mod:`persist_mongo._operations` on the asyncio drivers, within the deadline."""
        try:
            with deadline(self.settings.timeout):
                state = self._state
                if state is None or state.loop is not asyncio.get_running_loop():
                    state = await self._open()
                return await run_async(operation(self.settings, state, *args))
        except PersistError as error:
            scrub_chain(error)
            raise

    async def _run_whole(self, operation: Callable[..., Steps[_T]], *args: Any) -> _T:
        """:meth:`_run` for a write under a key lock: a cancelled ``await`` returns at once, and the write runs on
        to its end (within its deadline) in a task of its own, as a thread-pool call does.

        Cancelled inside, its update could still reach the server after its lock was deleted (another
        connection) and race the next holder's read-modify-write on FerretDB, or the lock insert could land
        after its delete and block the key until its lease ends.
        """
        task = asyncio.ensure_future(self._run(operation, *args))
        task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    # ---------------------------------------------------------------------------------- operations
    # docstrings inherited from AsyncBackend; the bodies are MongoBackend's (persist_mongo._operations)

    async def get(self, domain: DomainSpec, key: Key) -> Record | None:
        return await self._run(operations.get, domain, key)

    async def scan(
        self, domain: DomainSpec, context: Key, start: ItemKey | None = None, stop: ItemKey | None = None
    ) -> list[tuple[ItemKey, Record]]:
        return await self._run(operations.scan, domain, context, start, stop)

    async def read_window(
        self, domain: DomainSpec, context: Key, start: int, stop: int, step: int
    ) -> list[tuple[ItemKey, Record]]:
        return await self._run(operations.read_window, domain, context, start, stop, step)

    # With the Redis cache every write holds its key's marker there (a lock), so it runs on to its end as a
    # locked write does; without it, only the soft-delete domains' writes hold a lock (MongoDB's).

    async def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        if domain.soft_delete or self.settings.cache is not None:
            await self._run_whole(operations.put, domain, key, record)
        else:
            await self._run(operations.put, domain, key, record)

    async def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        if domain.soft_delete or self.settings.cache is not None:
            await self._run_whole(operations.put_many, domain, items)
        else:
            await self._run(operations.put_many, domain, items)

    async def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        return await self._run(operations.insert_many, domain, items)

    async def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        await self._run_whole(operations.mark_removed, domain, key)

    async def list_contexts(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, int]]:
        return await self._run(operations.list_contexts, domain, after, limit)

    async def list_records(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, Record]]:
        return await self._run(operations.list_records, domain, after, limit)

    async def delete_records(self, domain: DomainSpec, keys: Sequence[Key]) -> int:
        return await self._run_whole(operations.delete_records, domain, keys)

    async def apply_unit(self, writes: Sequence[Write]) -> None:
        # Whole, as a locked write: a cancelled unit still ends with its journal deleted or left for replay.
        await self._run_whole(units.apply_unit, writes)

    def lease_log(self) -> LeaseLog:
        return self._sync.lease_log()

    def __repr__(self) -> str:
        return f"<AsyncMongoBackend {self.url}>"


async def _close(client: Any, redis: Any) -> None:
    """Close the async clients; a failure to say goodbye to a server is no error of the caller's."""
    with contextlib.suppress(*DRIVER_ERRORS, OSError):
        await client.close()
    if redis is not None:
        with contextlib.suppress(Exception):  # redis-py raises its own errors or OSError on a dead connection
            await redis.client.aclose()
        with contextlib.suppress(Exception):
            await redis.wire.close()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Fetch the outcome of a write whose caller was cancelled, so that asyncio does not report it as lost."""
    if not task.cancelled():
        task.exception()


def _abandon(state: _Opened) -> None:
    """Let go of the clients of another event loop: closed on their loop if it still runs, else dropped."""
    loop = state.loop
    if not loop.is_closed() and loop.is_running():
        asyncio.run_coroutine_threadsafe(_close(state.client, state.redis), loop)
