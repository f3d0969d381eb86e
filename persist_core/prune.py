"""Retention for the domains that only grow (CONTRACTS.md 3.8): what ``backtest-persist prune`` does, as a
Python API.

Three rules, each for the domains it concerns (docs/decisions.md, "Prune"):

- ``candles_before``: candles whose open time (their ``timestamp`` key) is before a time.
- ``keep_last`` / ``older_than``: log, notification and storage items beyond the newest N of their context,
  or older than a duration, by the time the item itself carries (:data:`ITEM_TIME_FIELDS`).
- ``purge_removed_older_than``: soft-deleted measure, interval and memory entries whose ``when`` is older
  than a duration. Only when asked: by default the audit trail stays.

The walk pages through :meth:`~persist_core.backend.Backend.list_records` in key order and deletes in
batches (of the backend's ``Capabilities.deletion_batch`` keys), so memory stays flat in the number of records
(a ``keep_last`` of N holds N keys per context).
Deleting behind the cursor never disturbs the listing, so a dry run counts exactly what a real run deletes.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, Unpack

from persist_core.backend import PAGE_SIZE, Backend, Key, Record
from persist_core.domains import DOMAINS, DomainSpec
from persist_core.errors import ConfigurationError, CorruptRecordError
from persist_core.guarded import OwnedBackend, acquire_owner, release_owner
from persist_core.urls import mask_url
from persist_core.validation import decode_stored

__all__ = [
    "ITEM_TIME_FIELDS",
    "DomainReport",
    "Progress",
    "PrunePolicy",
    "PruneReport",
    "PruneRules",
    "parse_duration",
    "parse_time",
    "prune",
    "prune_storages",
]

#: The domains each rule concerns.
CANDLE_DOMAINS = ("candle",)
COLLECTION_DOMAINS = ("log", "notification", "storage")
SOFT_DELETE_DOMAINS = ("measure", "interval", "memory")
#: The fields of an item that carry its time, first found wins: epoch ms (int or float) or an ISO 8601
#: string (upstream's log entries carry ``timestamp`` and ``createdAt``, notifications ``createdAt`` and
#: ``timestamp``, storage rows ``updatedAt`` and ``createdAt``). An item with none of them is undated: kept.
ITEM_TIME_FIELDS: Mapping[str, tuple[str, ...]] = {
    "log": ("timestamp", "createdAt"),
    "notification": ("createdAt", "timestamp"),
    "storage": ("updatedAt", "createdAt", "timestamp"),
}
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_DURATION = re.compile(r"\s*(\d+)\s*(ms|s|m|h|d|w)\s*")


class PruneRules(TypedDict, total=False):
    """The retention rules, as :func:`prune` and :meth:`Persist.prune <persist_core.persist.Persist.prune>` take
    them (see :func:`prune`)."""

    candles_before: str | int | datetime | None
    keep_last: int | None
    older_than: str | int | timedelta | None
    purge_removed_older_than: str | int | timedelta | None
    domains: Sequence[str] | None


#: Called after every page with (domain, records examined, records deleted so far) of that domain.
Progress = Callable[[str, int, int], None]


def parse_duration(value: str | int | timedelta, name: str) -> int:
    """A duration in milliseconds from ``"30d"`` (units ms s m h d w), a ``timedelta`` or int milliseconds.

    Raises:
        ConfigurationError: anything else, or a negative duration.
    """
    if isinstance(value, timedelta):
        ms = int(value / timedelta(milliseconds=1))
    elif type(value) is int:
        ms = value
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        ms = int(match.group(1)) * _UNITS_MS[match.group(2)]
    else:
        raise ConfigurationError(
            f"{name} must be a duration such as 90d, 12h or 30m (units ms s m h d w), not {value!r}"
        )
    if ms < 0:
        raise ConfigurationError(f"{name} must not be negative, not {value!r}")
    return ms


def parse_time(value: str | int | datetime, name: str) -> int:
    """Epoch milliseconds from an int, a digit string, a timezone-aware datetime or an ISO 8601 text.

    An ISO text without a zone is read as UTC (``2024-01-01`` is midnight UTC).

    Raises:
        ConfigurationError: anything else.
    """
    if type(value) is int:
        return value
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ConfigurationError(f"{name} must be timezone-aware, not {value!r}")
        return int(value.timestamp() * 1000)
    if isinstance(value, str):
        if value.strip().isdigit():
            return int(value)
        parsed = _iso_ms(value)
        if parsed is not None:
            return parsed
    raise ConfigurationError(
        f"{name} must be an ISO date or time (2024-01-31, 2024-01-31T12:00Z) or epoch ms, not {value!r}"
    )


def _iso_ms(text: str) -> int | None:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def item_time(spec: DomainSpec, value: Any) -> int | None:
    """The time an item of a collection carries (:data:`ITEM_TIME_FIELDS`), in epoch ms, or ``None``."""
    if not isinstance(value, dict):
        return None
    for name in ITEM_TIME_FIELDS.get(spec.name, ()):
        found = value.get(name)
        if isinstance(found, bool):
            continue
        if isinstance(found, int | float):
            return int(found)
        if isinstance(found, str) and (parsed := _iso_ms(found)) is not None:
            return parsed
    return None


@dataclass(frozen=True)
class PrunePolicy:
    """What goes; every time in epoch milliseconds. Build one with :meth:`build`."""

    candles_before: int | None = None
    keep_last: int | None = None
    older_than_ms: int | None = None
    purge_removed_older_than_ms: int | None = None
    domains: tuple[str, ...] = ()
    now_ms: int = 0

    @classmethod
    def build(cls, now_ms: int | None = None, **rules: Unpack[PruneRules]) -> PrunePolicy:
        """Validate the rules and pick the domains they concern (all of them, or those of ``domains``).

        Raises:
            ConfigurationError: no rule, a bad value, an unknown domain, or a domain no given rule concerns.
        """
        candles_before, keep_last = rules.get("candles_before"), rules.get("keep_last")
        older_than, purge_removed_older_than = rules.get("older_than"), rules.get("purge_removed_older_than")
        domains = rules.get("domains")
        if keep_last is not None and (type(keep_last) is not int or keep_last < 1):
            raise ConfigurationError(f"keep_last must be a positive int, not {keep_last!r}")
        policy = cls(
            candles_before=None if candles_before is None else parse_time(candles_before, "candles_before"),
            keep_last=keep_last,
            older_than_ms=None if older_than is None else parse_duration(older_than, "older_than"),
            purge_removed_older_than_ms=(
                None
                if purge_removed_older_than is None
                else parse_duration(purge_removed_older_than, "purge_removed_older_than")
            ),
            now_ms=time.time_ns() // 1_000_000 if now_ms is None else now_ms,
        )
        concerned = policy._concerned()
        if not concerned:
            raise ConfigurationError(
                "prune needs a rule: candles_before, keep_last, older_than or purge_removed_older_than"
            )
        for name in domains or ():
            if name not in DOMAINS:
                raise ConfigurationError(f"unknown domain {name!r}; known: {', '.join(DOMAINS)}")
            if name not in concerned:
                raise ConfigurationError(
                    f"no given rule prunes the {name} domain (the rules given prune: {', '.join(concerned)})"
                )
        chosen = tuple(n for n in concerned if not domains or n in domains)
        return cls(**{**policy.__dict__, "domains": chosen})

    def _concerned(self) -> tuple[str, ...]:
        names: list[str] = []
        if self.candles_before is not None:
            names += CANDLE_DOMAINS
        if self.keep_last is not None or self.older_than_ms is not None:
            names += COLLECTION_DOMAINS
        if self.purge_removed_older_than_ms is not None:
            names += SOFT_DELETE_DOMAINS
        return tuple(names)


@dataclass
class DomainReport:
    """What prune did (or, in a dry run, would do) to one domain in one storage."""

    domain: str
    url: str  #: password masked
    examined: int = 0
    deleted: int = 0  #: in a dry run: would be deleted
    undated: int = 0  #: kept because they carry no time (collections: no time field; removed entries: no when)


@dataclass
class PruneReport:
    """The result of :func:`prune`: one :class:`DomainReport` per pruned domain and storage."""

    dry_run: bool
    domains: list[DomainReport] = field(default_factory=list)

    @property
    def deleted(self) -> int:
        """Records deleted (or, in a dry run, that would be) in all domains."""
        return sum(d.deleted for d in self.domains)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``prune --json`` prints)."""
        return {
            "dry_run": self.dry_run,
            "deleted": self.deleted,
            "domains": [vars(d).copy() for d in self.domains],
        }


class _Deleter:
    """Collects keys to delete and deletes them in batches (or only counts them in a dry run)."""

    def __init__(self, backend: Backend, spec: DomainSpec, report: DomainReport, dry_run: bool) -> None:
        self._backend, self._spec, self._report, self._dry_run = backend, spec, report, dry_run
        self._keys: list[Key] = []
        self._recheck = spec.soft_delete
        self._batch = max(1, backend.capabilities.deletion_batch)

    def add(self, key: Key) -> None:
        self._keys.append(key)
        if len(self._keys) >= self._batch:
            self.flush()

    def flush(self) -> None:
        keys, self._keys = self._keys, []
        if not keys:
            return
        if self._dry_run:
            self._report.deleted += len(keys)
            return
        if self._recheck:
            # An entry revived (written again) since the listing read it must stay: narrow the window to
            # one get per entry (docs/decisions.md, "Prune": a conditional delete would close it).
            keys = [k for k in keys if (r := self._backend.get(self._spec, k)) is not None and r.removed]
        self._report.deleted += self._backend.delete_records(self._spec, keys)


@dataclass
class _Job:
    """One domain of one storage being pruned: where, what is counted, and how it is reported."""

    backend: Backend
    spec: DomainSpec
    report: DomainReport
    deleter: _Deleter
    progress: Progress | None

    def page_done(self) -> None:
        if self.progress:
            self.progress(self.spec.name, self.report.examined, self.report.deleted)


def _pages(backend: Backend, spec: DomainSpec) -> Iterator[list[tuple[Key, Record]]]:
    """Pages of ``spec``'s records in key order."""
    after: Key | None = None
    while True:
        page = backend.list_records(spec, after=after, limit=PAGE_SIZE)
        if page:
            yield page
        if len(page) < PAGE_SIZE:
            return
        after = page[-1][0]


def _prune_candles(job: _Job, before: int) -> None:
    backend, spec, report, deleter = job.backend, job.spec, job.report, job.deleter
    after: Key | None = None
    while True:
        page = backend.list_records(spec, after=after, limit=PAGE_SIZE)
        after, skipped = (page[-1][0] if page else None), False
        for key, _record in page:
            report.examined += 1
            if key[-1] >= before:
                # The rest of this context is newer: a prefix cursor skips it, later contexts are listed again.
                after, skipped = key[:-1], True
                break
            deleter.add(key)
        job.page_done()
        if not skipped and len(page) < PAGE_SIZE:
            return


def _prune_collection(job: _Job, policy: PrunePolicy) -> None:
    backend, spec, report, deleter = job.backend, job.spec, job.report, job.deleter
    cutoff = None if policy.older_than_ms is None else policy.now_ms - policy.older_than_ms
    width = len(spec.context)
    context: Key | None = None
    newest: list[tuple[int, Key]] = []  # a min-heap of the newest keep_last dated items of the context
    for page in _pages(backend, spec):
        for key, record in page:
            report.examined += 1
            if key[:width] != context:
                context, newest = key[:width], []
            try:
                when = item_time(spec, decode_stored(spec, record.payload))
            except ValueError as exc:
                raise CorruptRecordError(f"{spec.name} record {key!r} on {backend.url} is unreadable: {exc}") from exc
            if when is None:
                report.undated += 1
            elif cutoff is not None and when < cutoff:
                deleter.add(key)
            elif policy.keep_last is not None:
                # Whatever leaves the heap is older than keep_last items of its context seen so far, so it
                # is not among the newest keep_last of the whole context either: it can go at once.
                dropped = heapq.heappushpop(newest, (when, key)) if len(newest) == policy.keep_last else None
                if dropped is None:
                    heapq.heappush(newest, (when, key))
                else:
                    deleter.add(dropped[1])
        job.page_done()


def _purge_removed(job: _Job, policy: PrunePolicy) -> None:
    backend, spec, report, deleter = job.backend, job.spec, job.report, job.deleter
    age = policy.purge_removed_older_than_ms or 0
    cutoff = policy.now_ms - age
    for page in _pages(backend, spec):
        for key, record in page:
            report.examined += 1
            if not record.removed:
                continue
            if age == 0 or (record.when is not None and record.when < cutoff):
                deleter.add(key)  # an age of 0 means every removed entry, whatever its when says
            elif record.when is None:
                report.undated += 1
        job.page_done()


def _require(backend: Backend, spec: DomainSpec) -> None:
    caps = backend.capabilities
    if not (caps.listing and caps.deletion):
        missing = " and ".join(n for n, ok in (("list", caps.listing), ("delete", caps.deletion)) if not ok)
        raise ConfigurationError(
            f"cannot prune the {spec.name} domain on {backend.url}: the backend cannot {missing} records "
            "(Capabilities.listing/deletion)"
        )


def prune_storages(
    storages: Iterable[tuple[Backend, Sequence[str]]],
    policy: PrunePolicy,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PruneReport:
    """Apply ``policy`` to the given ``(backend, domain names)``; writes go through whatever guard ``backend`` is.

    Every backend is checked for listing and deletion before anything is deleted.
    """
    work = [(backend, DOMAINS[n]) for backend, names in storages for n in names if n in policy.domains]
    for backend, spec in work:
        _require(backend, spec)
    report = PruneReport(dry_run)
    for backend, spec in work:
        part = DomainReport(spec.name, mask_url(backend.url))
        report.domains.append(part)
        job = _Job(backend, spec, part, _Deleter(backend, spec, part, dry_run), progress)
        if spec.name in CANDLE_DOMAINS:
            _prune_candles(job, policy.candles_before or 0)
        elif spec.name in COLLECTION_DOMAINS:
            _prune_collection(job, policy)
        else:
            _purge_removed(job, policy)
        job.deleter.flush()
        job.page_done()
    return report


@contextmanager
def _owned(
    storages: Mapping[str, tuple[Backend, list[str]]], dry_run: bool
) -> Iterator[list[tuple[Backend, list[str]]]]:
    """The storages, each behind this process's ownership guard when it keeps leases (not in a dry run)."""
    with ExitStack() as stack:
        out: list[tuple[Backend, list[str]]] = []
        for backend, names in storages.values():
            if backend.capabilities.ownership and not dry_run:
                owned = OwnedBackend(backend, acquire_owner(backend))
                stack.callback(release_owner, backend)
                out.append((owned, names))
            else:
                out.append((backend, names))
        yield out


def prune(
    url: str | None = None,
    *,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    now_ms: int | None = None,
    progress: Progress | None = None,
    **rules: Unpack[PruneRules],
) -> PruneReport:
    """Delete what the retention rules say from the storage ``url`` names (or ``PERSIST_*``, else ``./dump``).

    ``candles_before``: candles with an open time before it (ISO text, epoch ms or an aware datetime).
    ``keep_last`` / ``older_than``: log, notification and storage items beyond the newest N per context, or
    older than a duration (``"30d"``), by the time the item carries (:data:`ITEM_TIME_FIELDS`).
    ``purge_removed_older_than``: soft-deleted measure/interval/memory entries whose ``when`` is older (``0``:
    every removed entry, undated ones too). ``domains`` narrows the domains the rules apply to.

    A real run claims ownership of each storage that keeps leases, as a live process does: a live owner in
    another process makes it raise :class:`~persist_core.errors.OwnershipError` before anything is deleted
    (run it from the owning process through :meth:`Persist.prune <persist_core.persist.Persist.prune>`
    instead). A dry run claims nothing, deletes nothing and reports the same counts.

    Raises:
        ConfigurationError: a bad rule or domain, or a backend that cannot list or delete records.
        OwnershipError: another live process owns the storage.
    """
    from persist_core.operate import _storages

    policy = PrunePolicy.build(now_ms, **rules)
    with _storages(url, env, None) as storages, _owned(storages, dry_run) as guarded:
        return prune_storages(guarded, policy, dry_run=dry_run, progress=progress)
