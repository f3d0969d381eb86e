"""Live ownership (CONTRACTS.md 3.7): one live process writes a backend's storage at a time.

The policy lives here, once, for every backend: a lease with an expiry, renewed by a heartbeat thread,
numbered by generation so that a takeover is an insert-if-absent (the one operation every backend can do
atomically, FerretDB included), and checked by the owner itself before every write (fencing). A backend
contributes only a :class:`LeaseLog`: three record operations on a numbered log of leases.

How a takeover works:

* The newest generation's lease names the owner. A contender may claim generation ``g + 1`` when the lease
  of ``g`` has expired, or at once when its holder ran on this host and that process is gone (a crashed bot
  restarting on the same machine takes over without waiting), or when the holder is this very process.
* Of two contenders, the one whose ``claim(g + 1)`` stores the record wins; the other gets an
  :class:`~persist_core.errors.OwnershipError` that names the holder.
* The owner renews its own generation's lease every ``ttl / 3`` and then checks that no newer generation
  exists; a newer one means it lost ownership, for good.
* Before every write the owner checks, on its monotonic clock, that its last successful renewal is younger
  than ``ttl - margin``. A process that was paused (SIGSTOP, a VM freeze) or cut off for longer fails that
  check when it resumes and must re-claim before writing, which fails if another process took over.

See docs/decisions.md ("Ownership") for why the granularity is the backend's storage and for the one
window a lease cannot close (a pause between the check and the write reaching the storage).
"""

from __future__ import annotations

import abc
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from persist_core.errors import BackendUnavailableError, OwnershipError

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "Lease",
    "LeaseLog",
    "Owner",
    "ProcessIdentity",
    "this_process",
]

log = logging.getLogger("persist.ownership")

#: How long a lease lasts without renewal: a crashed owner on another host is replaced after this long.
DEFAULT_LEASE_SECONDS = 10.0
#: The owner stops writing this fraction of the lease before it expires (clock drift, a slow renewal).
_SAFETY_FRACTION = 0.2


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """Which process holds a lease: host name, pid, and the process's start time where the OS tells it.

    The start time tells a live holder from an unrelated process that reuses its pid after a crash.
    """

    host: str
    pid: int
    started: str = ""

    def is_alive_here(self) -> bool:
        """Whether this process still runs, asked of the local OS (only meaningful on the same host)."""
        if self.started:
            return _process_start(self.pid) == self.started
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _process_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or ``""`` if unknown/gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: count the fields after the last ")".
    fields = stat.rsplit(b")", 1)[-1].split()
    return fields[19].decode() if len(fields) > 19 else ""


def this_process() -> ProcessIdentity:
    """The identity of the calling process."""
    pid = os.getpid()
    return ProcessIdentity(socket.gethostname(), pid, _process_start(pid))


@dataclass(frozen=True, slots=True)
class Lease:
    """One generation's claim of ownership.

    Attributes:
        holder: the owning process.
        since_ms: when the holder claimed this generation (wall clock, epoch ms).
        expires_ms: when the lease runs out unless renewed (wall clock, epoch ms); 0 once released.
    """

    holder: ProcessIdentity
    since_ms: int
    expires_ms: int

    def to_json(self) -> str:
        """The lease as compact JSON text, as a :class:`LeaseLog` stores it."""
        return json.dumps(
            {
                "host": self.holder.host,
                "pid": self.holder.pid,
                "started": self.holder.started,
                "since_ms": self.since_ms,
                "expires_ms": self.expires_ms,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Lease:
        """Parse :meth:`to_json`'s text; ``ValueError`` if it is not a lease."""
        data = json.loads(text)
        try:
            holder = ProcessIdentity(str(data["host"]), int(data["pid"]), str(data.get("started", "")))
            return cls(holder, int(data["since_ms"]), int(data["expires_ms"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a lease: {text[:200]!r}") from exc

    def describe(self) -> str:
        """``host H pid P since ISO-TIME``, for messages."""
        since = dt.datetime.fromtimestamp(self.since_ms / 1000, tz=dt.UTC).isoformat(timespec="seconds")
        return f"host {self.holder.host} pid {self.holder.pid} since {since}"


class LeaseLog(abc.ABC):
    """A backend's storage for ownership leases: a log of generations ``1, 2, 3, ...``, each with a lease.

    This is all a backend implements for ownership; :class:`Owner` builds the policy on top. The
    atomicity it needs is the same as :meth:`~persist_core.backend.Backend.insert_many`'s: of two
    concurrent ``claim`` calls for one generation, across processes, exactly one stores its lease.
    """

    @abc.abstractmethod
    def head(self) -> tuple[int, Lease] | None:
        """The newest generation and its lease, or ``None`` if no generation was ever claimed."""

    @abc.abstractmethod
    def claim(self, generation: int, lease: Lease) -> bool:
        """Store ``lease`` as ``generation`` if that generation is absent; return whether this call stored it."""

    @abc.abstractmethod
    def renew(self, generation: int, lease: Lease) -> None:
        """Replace the lease of an existing ``generation`` (only its holder calls this)."""

    def prune(self, below: int) -> None:  # noqa: B027 - optional hook, intentionally empty
        """Optionally forget generations older than ``below`` (they no longer decide anything)."""


class Owner:
    """Ownership of one backend's storage by this process, claimed on the first live write.

    :meth:`ensure` is called before every live write; it costs one clock read while the lease is fresh.
    Shared by every facade of this process on the same storage (see :func:`owner_for`).
    """

    def __init__(
        self,
        leases: LeaseLog,
        where: str,
        *,
        ttl_seconds: float = DEFAULT_LEASE_SECONDS,
        identity: ProcessIdentity | None = None,
        wall_ms: Callable[[], int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl_seconds > 0:
            raise ValueError("ttl_seconds must be positive")
        self._leases = leases
        self._where = where
        self._ttl_ms = int(ttl_seconds * 1000)
        self._identity = identity or this_process()
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self._monotonic = monotonic
        self._lock = threading.RLock()
        self._generation: int | None = None
        self._lease: Lease | None = None
        self._valid_until = float("-inf")
        self._lost: OwnershipError | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @property
    def generation(self) -> int | None:
        """The generation this process holds, or ``None``."""
        return self._generation

    @property
    def identity(self) -> ProcessIdentity:
        """Who this owner is."""
        return self._identity

    def rebind(self, leases: LeaseLog) -> None:
        """Go on with another lease log on the same storage (the backend of the first one is closing)."""
        with self._lock:
            self._leases = leases

    def is_fresh(self) -> bool:
        """Whether :meth:`ensure` would return at once: the lease is held and fresh (one clock read, no lock).

        The asyncio guard asks this on the event loop and runs :meth:`ensure` in the thread pool only when
        it is false (a first claim, a renewal that lapsed, or a lost lease to report).
        """
        return self._monotonic() < self._valid_until

    def ensure(self) -> None:
        """Make sure this process owns the storage before it writes.

        Raises:
            OwnershipError: another live process owns it, or this process lost ownership.
            BackendUnavailableError: the lease could not be read or written.
        """
        if self._monotonic() < self._valid_until:
            return
        with self._lock:
            if self._lost is not None:
                raise self._lost
            if self._monotonic() >= self._valid_until:
                self._claim()

    def _claim(self) -> None:
        # Caller holds the lock. Claims generation g + 1; used for the first claim and after a lapse.
        started = self._monotonic()
        now = self._wall_ms()
        head = self._leases.head()
        generation = 0 if head is None else head[0]
        if head is not None and self._generation is not None and head[0] != self._generation:
            raise self._lose(head[1])  # a newer generation exists: another process took over meanwhile
        if head is not None and head[0] != self._generation and not self._replaceable(head[1], now):
            raise OwnershipError(
                f"{self._where} is owned by another live process ({head[1].describe()}); it is refused "
                f"so that two bots never write one state. Stop that process, or wait until its lease "
                f"expires ({max(0, head[1].expires_ms - now) / 1000:.1f} s) if it has crashed on another host."
            )
        # Either nobody holds a valid lease, or the newest generation is ours but lapsed locally (paused, or
        # renewals failed): then a contender may be about to take over, and claiming the next generation
        # settles it atomically instead of renewing a lease that may already be spoken for.
        since = now if self._lease is None else self._lease.since_ms
        lease = Lease(self._identity, since, now + self._ttl_ms)
        if not self._leases.claim(generation + 1, lease):
            newest = self._leases.head()
            holder = newest[1].describe() if newest is not None else "an unknown process"
            if self._generation is not None and newest is not None:
                raise self._lose(newest[1])
            raise OwnershipError(f"{self._where} was just claimed by another live process ({holder})")
        previous = self._generation
        self._generation, self._lease = generation + 1, lease
        self._valid_until = started + self._ttl_ms / 1000 * (1 - _SAFETY_FRACTION)
        if previous is None:
            log.info("%s: this process (pid %d) owns the live state now", self._where, self._identity.pid)
            if head is not None and head[1].expires_ms > now and not self._mine(head[1]):
                log.warning("%s: took over from %s, which is no longer running", self._where, head[1].describe())
        self._start_heartbeat()
        if generation > 1:
            try:
                self._leases.prune(generation)
            except Exception as exc:  # old generations decide nothing; the claim has succeeded
                log.warning("%s: could not forget old lease generations: %s", self._where, exc)

    def _renew(self) -> None:
        # Caller holds the lock and holds a generation whose lease has not lapsed locally.
        if self._generation is None or self._lease is None:  # pragma: no cover - the heartbeat checks first
            return
        started = self._monotonic()
        lease = replace(self._lease, expires_ms=self._wall_ms() + self._ttl_ms)
        self._leases.renew(self._generation, lease)
        head = self._leases.head()
        if head is None or head[0] != self._generation:
            raise self._lose(head[1] if head is not None else None)
        self._lease = lease
        self._valid_until = started + self._ttl_ms / 1000 * (1 - _SAFETY_FRACTION)

    def _lose(self, holder: Lease | None) -> OwnershipError:
        who = holder.describe() if holder is not None else "another process"
        self._lost = OwnershipError(
            f"{self._where}: this process lost ownership of the live state to {who}; its writes are refused "
            "so that they cannot overwrite the new owner's (restart the process to claim it again)"
        )
        self._valid_until = float("-inf")
        self._stop.set()
        log.error("%s", self._lost)
        return self._lost

    def _mine(self, lease: Lease) -> bool:
        return lease.holder == self._identity

    def _replaceable(self, lease: Lease, now: int) -> bool:
        if self._mine(lease) or lease.expires_ms <= now:
            return True
        return lease.holder.host == self._identity.host and not lease.holder.is_alive_here()

    # ---------------------------------------------------------------------------------- heartbeat

    def _start_heartbeat(self) -> None:
        if self._heartbeat is not None and self._heartbeat.is_alive():
            return
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name=f"persist-lease {self._where}", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        interval = self._ttl_ms / 3000
        while not self._stop.wait(interval):
            with self._lock:
                if self._lost is not None or self._generation is None:
                    return
                try:
                    if self._monotonic() < self._valid_until:
                        self._renew()
                    else:
                        self._claim()
                except OwnershipError:
                    return
                except BackendUnavailableError as exc:
                    log.warning("%s: lease renewal failed, retrying: %s", self._where, exc)
                except Exception:  # pragma: no cover - keep renewing whatever a third-party log raises
                    log.exception("%s: lease renewal failed", self._where)

    def release(self) -> None:
        """Stop renewing and let the next owner take over at once. Idempotent; never raises."""
        self._stop.set()
        thread = self._heartbeat
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._ttl_ms / 1000)
        with self._lock:
            if self._generation is not None and self._lease is not None and self._lost is None:
                try:
                    self._leases.renew(self._generation, replace(self._lease, expires_ms=0))
                except Exception as exc:
                    log.warning("%s: could not release the lease (it expires by itself): %s", self._where, exc)
            self._generation, self._lease = None, None
            self._valid_until = float("-inf")
