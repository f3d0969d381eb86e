"""Contract clauses of ownership (CONTRACTS.md 3.7), for backends that declare ``Capabilities.ownership``.

The clauses drive the backend's :class:`~persist_core.ownership.LeaseLog` directly and through
:class:`~persist_core.ownership.Owner` objects with made-up process identities and clocks, so that
"another process", "a crashed holder" and "a lease that expired" happen in one test process, quickly.
The tests of this repository also run the same rules with real processes (SIGKILL, SIGSTOP).
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from persist_core.backend import Backend
from persist_core.errors import OwnershipError
from persist_core.ownership import Lease, LeaseLog, Owner, ProcessIdentity, this_process

__all__ = ["OwnershipClauses"]

_NOW_MS = 1_800_000_000_000
_F = TypeVar("_F", bound=Callable[..., Any])


def _NEEDS_OWNERSHIP(clause: _F) -> _F:  # noqa: N802 - used as a decorator, like a pytest mark
    """Deselected in a class whose declared capabilities lack ownership (skipped otherwise), and on the asyncio
    face (the leases are the backend's: one face checks them)."""
    marked: _F = pytest.mark.persist_backend_level(pytest.mark.persist_capabilities(ownership=True)(clause))
    return marked


#: A pid no process has (Linux pids stay below 2**22).
_NO_SUCH_PID = 2**30


def _lease(host: str, expires_ms: int = _NOW_MS + 60_000, pid: int = 1) -> Lease:
    return Lease(ProcessIdentity(host, pid, "kit"), _NOW_MS, expires_ms)


def _next_generation(leases: LeaseLog) -> int:
    head = leases.head()
    return 1 if head is None else head[0] + 1


class _Clock:
    """A settable wall clock (ms) and monotonic clock (s) for one Owner."""

    def __init__(self) -> None:
        self.wall = _NOW_MS
        self.mono = 1000.0

    def wall_ms(self) -> int:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += int(seconds * 1000)
        self.mono += seconds


def _owner(leases: LeaseLog, host: str, pid: int, clock: _Clock, ttl: float = 10.0) -> Owner:
    """An owner that pretends to be process ``pid`` on ``host``, on ``clock``."""
    identity = ProcessIdentity(host, pid, host[-1])
    return Owner(leases, "kit", ttl_seconds=ttl, identity=identity, wall_ms=clock.wall_ms, monotonic=clock.monotonic)


def _claim_in_child(factory: Callable[[], Backend], generation: int, who: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    backend = factory()
    backend.open()
    try:
        results.put((who, backend.lease_log().claim(generation, _lease(f"process-{who}"))))
    finally:
        backend.close()


class OwnershipClauses:
    """Mixed into :class:`~persist_core.testing.BackendContractTests`; skipped unless the backend declares
    ``ownership``."""

    @pytest.fixture
    def leases(self, backend: Backend) -> LeaseLog:
        """The lease log of the opened backend under test (skips unless it declares ``ownership``)."""
        if not backend.capabilities.ownership:
            pytest.skip("the backend declares ownership=False")
        return backend.lease_log()

    @pytest.fixture
    def second_backend(self, backend_factory: Callable[[], Backend], leases: LeaseLog) -> Iterator[Backend]:
        """Another instance on the same storage, as another process would open it."""
        other = backend_factory()
        other.open()
        yield other
        other.close()

    @_NEEDS_OWNERSHIP
    def test_ownership_claim_stores_once_and_head_is_the_newest(self, leases: LeaseLog) -> None:
        generation = _next_generation(leases)
        assert leases.claim(generation, _lease("first"))
        assert not leases.claim(generation, _lease("second"))
        head = leases.head()
        assert head is not None
        assert head == (generation, _lease("first"))
        assert leases.claim(generation + 1, _lease("third"))
        assert leases.head() == (generation + 1, _lease("third"))

    @_NEEDS_OWNERSHIP
    def test_ownership_claim_has_one_winner_across_threads(self, leases: LeaseLog) -> None:
        generation = _next_generation(leases)
        racers = 6
        barrier = threading.Barrier(racers, timeout=30)
        wins: list[int] = []
        errors: list[BaseException] = []

        def race(who: int) -> None:
            try:
                barrier.wait()
                if leases.claim(generation, _lease(f"thread-{who}")):
                    wins.append(who)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=race, args=(who,)) for who in range(racers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        assert len(wins) == 1, wins
        assert leases.head() == (generation, _lease(f"thread-{wins[0]}"))

    @_NEEDS_OWNERSHIP
    def test_ownership_claim_has_one_winner_across_processes(
        self, backend_factory: Callable[[], Backend], leases: LeaseLog, backend: Backend
    ) -> None:
        if not backend.capabilities.shared_between_processes:
            pytest.skip("the backend declares shared_between_processes=False")
        generation = _next_generation(leases)
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_claim_in_child, args=(backend_factory, generation, who, results)) for who in range(3)
        ]
        for proc in procs:
            proc.start()
        outcomes = []
        try:
            for _ in procs:
                outcomes.append(results.get(timeout=120))
        except queue_module.Empty:
            codes = [proc.exitcode for proc in procs]
            raise AssertionError(f"a claiming process reported nothing (exit codes {codes})") from None
        finally:
            for proc in procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()
        winners = [who for who, won in outcomes if won]
        assert len(winners) == 1, outcomes
        assert leases.head() == (generation, _lease(f"process-{winners[0]}"))

    @_NEEDS_OWNERSHIP
    def test_ownership_renewal_is_seen_by_another_instance(self, leases: LeaseLog, second_backend: Backend) -> None:
        generation = _next_generation(leases)
        assert leases.claim(generation, _lease("owner", expires_ms=_NOW_MS + 1))
        leases.renew(generation, _lease("owner", expires_ms=_NOW_MS + 99_000))
        assert second_backend.lease_log().head() == (generation, _lease("owner", expires_ms=_NOW_MS + 99_000))

    @_NEEDS_OWNERSHIP
    def test_ownership_second_owner_is_refused_naming_the_holder(
        self, leases: LeaseLog, second_backend: Backend
    ) -> None:
        clock = _Clock()
        first = _owner(leases, "host-a", 101, clock)
        second = _owner(second_backend.lease_log(), "host-b", 202, clock)
        try:
            first.ensure()
            with pytest.raises(OwnershipError, match=r"host host-a pid 101 since"):
                second.ensure()
            first.ensure()  # the refusal changed nothing for the owner
        finally:
            first.release()
            second.release()

    @_NEEDS_OWNERSHIP
    def test_ownership_released_lease_is_taken_over_at_once(self, leases: LeaseLog, second_backend: Backend) -> None:
        clock = _Clock()
        first = _owner(leases, "host-a", 101, clock)
        second = _owner(second_backend.lease_log(), "host-b", 202, clock)
        try:
            first.ensure()
            first.release()
            second.ensure()
        finally:
            second.release()

    @_NEEDS_OWNERSHIP
    def test_ownership_expired_lease_is_taken_over_and_the_old_owner_is_fenced(
        self, leases: LeaseLog, second_backend: Backend
    ) -> None:
        old_clock, new_clock = _Clock(), _Clock()
        old = _owner(leases, "host-a", 101, old_clock, ttl=5)
        new = _owner(second_backend.lease_log(), "host-b", 202, new_clock, ttl=5)
        try:
            old.ensure()
            new_clock.advance(5.1)  # the old owner was paused past its lease
            new.ensure()
            old_clock.advance(5.1)  # ... and resumes
            with pytest.raises(OwnershipError, match=r"lost ownership .* host host-b pid 202"):
                old.ensure()
            with pytest.raises(OwnershipError, match="lost ownership"):
                old.ensure()  # for good
            new.ensure()
        finally:
            old.release()
            new.release()

    @_NEEDS_OWNERSHIP
    def test_ownership_renewing_owner_detects_a_takeover(self, leases: LeaseLog, second_backend: Backend) -> None:
        clock = _Clock()
        owner = _owner(leases, "host-a", 101, clock)
        try:
            owner.ensure()
            generation = owner.generation
            assert generation is not None
            # Another process claims the next generation behind the owner's back (its lease looked expired there).
            assert second_backend.lease_log().claim(generation + 1, _lease("usurper"))
            clock.advance(4.5)  # past the local safety margin of a 5 s... here 10 s lease: renewal time
            clock.advance(4.0)
            with pytest.raises(OwnershipError, match="usurper"):
                owner.ensure()
        finally:
            owner.release()

    @_NEEDS_OWNERSHIP
    def test_ownership_dead_holder_on_this_host_is_replaced_at_once(
        self, leases: LeaseLog, second_backend: Backend
    ) -> None:
        me = this_process()
        crashed = ProcessIdentity(me.host, _NO_SUCH_PID, "gone")
        assert leases.claim(_next_generation(leases), Lease(crashed, _NOW_MS, _NOW_MS + 3_600_000))
        clock = _Clock()
        successor = Owner(
            second_backend.lease_log(), "kit", identity=me, wall_ms=clock.wall_ms, monotonic=clock.monotonic
        )
        try:
            successor.ensure()
        finally:
            successor.release()
