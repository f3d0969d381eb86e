"""A facade's view of a backend: refused once the facade is closed; live writes first make sure of ownership.

:class:`OpenBackend` wraps a backend for the stores of a :class:`~persist_core.persist.Persist`, so that they
refuse every call once the facade is closed; :class:`OwnedBackend` also claims ownership for its live stores
(:class:`AsyncOwnedBackend` a native asyncio backend for those of an ``AsyncPersist``);
backtest stores use the bare backend and take no ownership (CONTRACTS.md 3.7). One :class:`Owner` serves
every facade of a process on the same storage, so two ``setup()`` calls in one bot do not refuse each other.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from persist_core.async_backend import AsyncBackend, shared_executor
from persist_core.backend import PAGE_SIZE, Backend, ItemKey, Key, Record
from persist_core.config import storage_identity
from persist_core.domains import DomainSpec
from persist_core.errors import ClosedError
from persist_core.ownership import DEFAULT_LEASE_SECONDS, LeaseLog, Owner
from persist_core.units import Write

__all__ = [
    "ALWAYS_OPEN",
    "AsyncOpenBackend",
    "AsyncOwnedBackend",
    "Lifecycle",
    "OpenBackend",
    "OwnedBackend",
    "acquire_owner",
    "release_owner",
]

_owners: dict[tuple[str, ...], tuple[Owner, list[Backend]]] = {}
_owners_lock = threading.Lock()


def acquire_owner(backend: Backend, ttl_seconds: float = DEFAULT_LEASE_SECONDS) -> Owner:
    """The process-wide :class:`Owner` of ``backend``'s storage; pair with :func:`release_owner`.

    One owner serves every facade of the process on one storage, however its URL is spelled. Nothing is
    claimed yet: the first live write claims.
    """
    identity = storage_identity(backend.url)
    with _owners_lock:
        owner, users = _owners.get(identity, (None, []))
        if owner is None:
            owner = Owner(backend.lease_log(), backend.url, ttl_seconds=ttl_seconds)
        _owners[identity] = (owner, [*users, backend])
        return owner


def release_owner(backend: Backend) -> None:
    """Drop ``backend`` from its storage's owner; the last one releases the lease so a successor takes over at once."""
    identity = storage_identity(backend.url)
    with _owners_lock:
        owner, users = _owners.get(identity, (None, []))
        if owner is None or backend not in users:
            return
        remaining = [user for user in users if user is not backend]
        if remaining:
            _owners[identity] = (owner, remaining)
            # The owner may be reading leases through the backend that is about to close.
            owner.rebind(remaining[0].lease_log())
            return
        del _owners[identity]
    owner.release()


class Lifecycle:
    """Whether a facade is still open; the :class:`OpenBackend` guards of its stores read it on every call.

    Attributes:
        closed: why the facade was closed (the :class:`ClosedError` message), ``None`` while it is open.
    """

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed: str | None = None

    def check(self) -> None:
        """Raise :class:`ClosedError` once the facade is closed."""
        if self.closed is not None:
            raise ClosedError(self.closed)

    def close(self, reason: str) -> None:
        """Mark the facade closed with ``reason``, unless it already is (the first reason stays)."""
        if self.closed is None:
            self.closed = reason


#: The lifecycle of a backend that belongs to no facade: always open.
ALWAYS_OPEN = Lifecycle()


class OpenBackend(Backend):
    """``inner`` as a facade's stores see it: every call first checks that the facade is still open.

    A closed backend would otherwise reopen on the next call (its files, a new connection) and write behind
    the back of the facade that replaced it (docs/decisions.md).
    """

    def __init__(self, inner: Backend, lifecycle: Lifecycle = ALWAYS_OPEN) -> None:
        self.inner = inner
        self.lifecycle = lifecycle
        self.url = inner.url
        self.capabilities = inner.capabilities  # type: ignore[misc]

    def _before_write(self) -> None:
        self.lifecycle.check()

    # docstrings inherited from Backend

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def get(self, domain: DomainSpec, key: Key) -> Record | None:
        self.lifecycle.check()
        return self.inner.get(domain, key)

    def scan(
        self, domain: DomainSpec, context: Key, start: ItemKey | None = None, stop: ItemKey | None = None
    ) -> list[tuple[ItemKey, Record]]:
        self.lifecycle.check()
        return self.inner.scan(domain, context, start, stop)

    def read_window(
        self, domain: DomainSpec, context: Key, start: int, stop: int, step: int
    ) -> list[tuple[ItemKey, Record]]:
        self.lifecycle.check()
        return self.inner.read_window(domain, context, start, stop, step)

    def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        self._before_write()
        self.inner.put(domain, key, record)

    def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        self._before_write()
        self.inner.put_many(domain, items)

    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        self._before_write()
        return self.inner.insert_many(domain, items)

    def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        self._before_write()
        self.inner.mark_removed(domain, key)

    def apply_unit(self, writes: Sequence[Write]) -> None:
        self._before_write()
        self.inner.apply_unit(writes)

    def list_contexts(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, int]]:
        self.lifecycle.check()
        return self.inner.list_contexts(domain, after=after, limit=limit)

    def list_records(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, Record]]:
        self.lifecycle.check()
        return self.inner.list_records(domain, after=after, limit=limit)

    def delete_records(self, domain: DomainSpec, keys: Sequence[Key]) -> int:
        self._before_write()
        return self.inner.delete_records(domain, keys)

    def lease_log(self) -> LeaseLog:
        return self.inner.lease_log()

    def __repr__(self) -> str:
        return f"<open {self.inner!r}>"


class OwnedBackend(OpenBackend):
    """``inner`` with :meth:`Owner.ensure` before every write (and the facade's open check before every call)."""

    def __init__(self, inner: Backend, owner: Owner, lifecycle: Lifecycle = ALWAYS_OPEN) -> None:
        super().__init__(inner, lifecycle)
        self.owner = owner

    def _before_write(self) -> None:
        self.lifecycle.check()
        self.owner.ensure()

    def __repr__(self) -> str:
        return f"<owned {self.inner!r}>"


class AsyncOpenBackend(AsyncBackend):
    """A native asyncio backend as a facade's stores see it: every call first checks that the facade is open
    (see :class:`OpenBackend`)."""

    def __init__(self, inner: AsyncBackend, lifecycle: Lifecycle = ALWAYS_OPEN) -> None:
        self.inner = inner
        self.lifecycle = lifecycle
        self.url = inner.url
        self.capabilities = inner.capabilities  # type: ignore[misc]

    async def _before_write(self) -> None:
        self.lifecycle.check()

    # docstrings inherited from AsyncBackend

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def get(self, domain: DomainSpec, key: Key) -> Record | None:
        self.lifecycle.check()
        return await self.inner.get(domain, key)

    async def scan(
        self, domain: DomainSpec, context: Key, start: ItemKey | None = None, stop: ItemKey | None = None
    ) -> list[tuple[ItemKey, Record]]:
        self.lifecycle.check()
        return await self.inner.scan(domain, context, start, stop)

    async def read_window(
        self, domain: DomainSpec, context: Key, start: int, stop: int, step: int
    ) -> list[tuple[ItemKey, Record]]:
        self.lifecycle.check()
        return await self.inner.read_window(domain, context, start, stop, step)

    async def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        await self._before_write()
        await self.inner.put(domain, key, record)

    async def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        await self._before_write()
        await self.inner.put_many(domain, items)

    async def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        await self._before_write()
        return await self.inner.insert_many(domain, items)

    async def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        await self._before_write()
        await self.inner.mark_removed(domain, key)

    async def apply_unit(self, writes: Sequence[Write]) -> None:
        await self._before_write()
        await self.inner.apply_unit(writes)

    async def list_contexts(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, int]]:
        self.lifecycle.check()
        return await self.inner.list_contexts(domain, after=after, limit=limit)

    async def list_records(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, Record]]:
        self.lifecycle.check()
        return await self.inner.list_records(domain, after=after, limit=limit)

    async def delete_records(self, domain: DomainSpec, keys: Sequence[Key]) -> int:
        await self._before_write()
        return await self.inner.delete_records(domain, keys)

    def lease_log(self) -> LeaseLog:
        return self.inner.lease_log()

    def __repr__(self) -> str:
        return f"<open {self.inner!r}>"


class AsyncOwnedBackend(AsyncOpenBackend):
    """A native asyncio backend with the ownership check of :class:`OwnedBackend` before every write.

    While the lease is fresh the check is :meth:`Owner.is_fresh`, a clock read on the event loop; only a
    first claim, a lapsed lease or a lost one runs :meth:`Owner.ensure` (which reads and writes the lease
    log, blocking) in the thread pool. Reads pass straight through.
    """

    def __init__(self, inner: AsyncBackend, owner: Owner, lifecycle: Lifecycle = ALWAYS_OPEN) -> None:
        super().__init__(inner, lifecycle)
        self.owner = owner

    async def _before_write(self) -> None:
        self.lifecycle.check()
        if not self.owner.is_fresh():
            await asyncio.get_running_loop().run_in_executor(shared_executor(), self.owner.ensure)

    def __repr__(self) -> str:
        return f"<owned {self.inner!r}>"
