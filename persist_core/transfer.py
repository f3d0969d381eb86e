"""Moving state between storages (CONTRACTS.md 3.8): ``export`` to a JSON-lines dump, ``import`` one, ``copy``
between two backends, each verified by a content digest per domain.

Everything here is built on the listing interface of :class:`~persist_core.backend.Backend` (``list_records``
in key order, paged by a key cursor) and its write operations, so it works for every backend that declares
``Capabilities.listing``, ours and third-party ones. Memory stays flat in the number of records: records
flow a page at a time, and the target's existing records are read alongside the source's, in the same key
order (a merge), to tell new records from identical ones without a lookup per record.

The format of the dump is documented in docs/export-format.md; the design (ownership, what "identical"
means, why an import writes nothing from a bad file) in docs/decisions.md.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, cast

from persist_core.backend import PAGE_SIZE, Backend, Key, Record
from persist_core.config import same_storage
from persist_core.domains import DOMAINS, DomainSpec
from persist_core.errors import ConfigurationError, DumpFormatError, InvalidKeyError, InvalidValueError
from persist_core.guarded import OwnedBackend, acquire_owner, release_owner
from persist_core.operate import _storages, backend_for
from persist_core.urls import mask_url
from persist_core.validation import canonical_text, check_field, check_value_kind, encode_value

__all__ = [
    "FORMAT",
    "VERSION",
    "DomainCheck",
    "DomainDigest",
    "DomainTransfer",
    "ExportSummary",
    "TransferSummary",
    "copy",
    "copy_backends",
    "export",
    "import_dump",
]

#: The ``format`` of an export file's header line, and the version this code writes and reads.
FORMAT = "backtest-persist-export"
VERSION = 1
#: Records per write call (``put_many`` / ``insert_many``): one round trip each on SQL.
BATCH = 500
_RECORD_FIELDS = frozenset({"domain", "key", "value", "when", "removed"})
_INT64 = 2**63

#: ``progress(done, total)``: records handled so far, of how many.
ProgressFn = Callable[[int, int], None]


def _no_progress(done: int, total: int) -> None:
    pass


def _compact(document: object) -> str:
    """``document`` as one line of compact JSON, UTF-8 characters unescaped."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


# ------------------------------------------------------------------------------------------ digests


class DomainDigest:
    """The count and content digest of one domain's records, fed in key order.

    The digest is SHA-256 over one line per record: the JSON array ``[key fields, canonical payload, when,
    removed]``. The payload enters in its canonical spelling (:func:`~persist_core.validation.canonical_text`),
    so two storages that hold the same values digest alike however their server spells the JSON text.
    """

    def __init__(self) -> None:
        self.records = 0
        self._hash = hashlib.sha256()

    def add(self, key: Key, record: Record) -> None:
        """Add the next record (keys must come in ascending order)."""
        line = _compact([list(key), _canonical(record.payload), record.when, record.removed])
        self._hash.update(line.encode("utf-8"))
        self._hash.update(b"\n")
        self.records += 1

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the records added so far."""
        return f"sha256:{self._hash.hexdigest()}"


def same_record(first: Record, second: Record) -> bool:
    """Whether two records hold the same value, ``when`` and ``removed`` (payloads compared canonically)."""
    if first.when != second.when or first.removed != second.removed:
        return False
    return first.payload == second.payload or _canonical(first.payload) == _canonical(second.payload)


def _canonical(payload: str) -> str:
    """The canonical text of a payload; one that is not JSON (a corrupt record) stays as it is, so that a
    verification reports its domain as different instead of stopping."""
    try:
        return canonical_text(payload)
    except ValueError:
        return payload


# ----------------------------------------------------------------------------------- reading a backend


def _stream(backend: Backend, spec: DomainSpec) -> Iterator[tuple[Key, Record]]:
    """Every record of ``spec`` in ``backend``, in key order, a page at a time."""
    after: Key | None = None
    while True:
        page = backend.list_records(spec, after=after, limit=PAGE_SIZE)
        if not page:
            return
        yield from page
        after = page[-1][0]


def _count(backend: Backend, spec: DomainSpec) -> int:
    """How many records of ``spec`` ``backend`` holds (counted per context, payloads unread)."""
    total, after = 0, None
    while page := backend.list_contexts(spec, after=after):
        total += sum(count for _, count in page)
        after = page[-1][0]
    return total


def digest_of(backend: Backend, spec: DomainSpec) -> DomainDigest:
    """The count and digest of every record of ``spec`` in ``backend``."""
    digest = DomainDigest()
    for key, record in _stream(backend, spec):
        digest.add(key, record)
    return digest


class _Peek:
    """A stream of the target's records, read forward only as far as the source has come (the merge)."""

    def __init__(self, records: Iterator[tuple[Key, Record]]) -> None:
        self._records = records
        self._head: tuple[Key, Record] | None = next(records, None)

    def at(self, key: Key) -> Record | None:
        """The target's record under ``key`` (``None`` if absent); keys asked for must ascend."""
        while self._head is not None and self._head[0] < key:
            self._head = next(self._records, None)
        if self._head is not None and self._head[0] == key:
            return self._head[1]
        return None


# ------------------------------------------------------------------------------------------- writing


@dataclass
class DomainTransfer:
    """What an import or copy did to one domain of the target.

    Attributes:
        domain: the domain's name.
        records: records read from the source (or the file).
        written: records the target did not hold (or held with another value) and now does.
        identical: records the target already held, equal: left alone.
        kept: records of a first-write-wins domain (candle, log) that the target already held with another
            value, which is never overwritten: the verification then reports the domain as different.
    """

    domain: str
    records: int = 0
    written: int = 0
    identical: int = 0
    kept: int = 0


def _apply(
    target: Backend, spec: DomainSpec, source: Iterable[tuple[Key, Record]], tick: Callable[[int], None]
) -> DomainTransfer:
    """Write the records of ``source`` (ascending keys) that ``target`` lacks, keeping first-write-wins rules."""
    result = DomainTransfer(spec.name)
    existing = _Peek(_stream(target, spec))
    pending: list[tuple[Key, Record]] = []

    def flush() -> None:
        if spec.first_write_wins:
            stored = target.insert_many(spec, pending)
            result.written += stored
            result.kept += len(pending) - stored  # taken meanwhile by someone else: never overwritten
        elif pending:
            target.put_many(spec, pending)
            result.written += len(pending)
        tick(len(pending))
        pending.clear()

    for key, record in source:
        result.records += 1
        current = existing.at(key)
        if current is not None and same_record(current, record):
            result.identical += 1
            tick(1)
        elif current is not None and spec.first_write_wins:
            result.kept += 1
            tick(1)
        else:
            pending.append((key, record))
            if len(pending) >= BATCH:
                flush()
    if pending:
        flush()
    return result


@contextmanager
def _owned(backend: Backend) -> Iterator[Backend]:
    """``backend`` owned by this process for the duration (refused if a live bot owns it), if it keeps leases.

    The claim is made at once, before anything is read or written, so that a running bot is refused up front.
    """
    if not backend.capabilities.ownership:
        yield backend
        return
    owner = acquire_owner(backend)
    try:
        owner.ensure()
        yield OwnedBackend(backend, owner)
    finally:
        release_owner(backend)


def _require_listing(backend: Backend) -> None:
    if not backend.capabilities.listing:
        raise ConfigurationError(f"the backend {backend.url} cannot list what it stores (Capabilities.listing)")


def _check_domains(domains: Sequence[str] | None) -> list[str] | None:
    for name in domains or ():
        if name not in DOMAINS:
            raise ConfigurationError(f"unknown domain {name!r}; known: {', '.join(DOMAINS)}")
    return list(domains) if domains else None


# ---------------------------------------------------------------------------------------------- copy


@dataclass
class DomainCheck:
    """The verification of one domain: count and digest of each side."""

    domain: str
    source_records: int
    source_digest: str
    target_records: int
    target_digest: str

    @property
    def ok(self) -> bool:
        """Both sides hold the same records."""
        return self.source_records == self.target_records and self.source_digest == self.target_digest


@dataclass
class TransferSummary:
    """The result of :func:`copy` or :func:`import_dump`: what was written per domain, then the verification."""

    source: str  #: masked URL (copy) or the file name (import)
    target: str  #: masked URL(s)
    transfers: list[DomainTransfer] = field(default_factory=list)
    checks: list[DomainCheck] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def written(self) -> int:
        """Records written in all domains."""
        return sum(t.written for t in self.transfers)

    @property
    def ok(self) -> bool:
        """Every verified domain holds the same records on both sides."""
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the ``--json`` output)."""
        domains: dict[str, dict[str, Any]] = {}
        parts: list[DomainTransfer | DomainCheck] = [*self.transfers, *self.checks]
        for part in parts:
            entry = domains.setdefault(part.domain, {})
            entry.update({k: v for k, v in vars(part).items() if k != "domain"})
            if isinstance(part, DomainCheck):
                entry["ok"] = part.ok
        return {
            "source": self.source,
            "target": self.target,
            "ok": self.ok,
            "written": self.written,
            "identical": sum(t.identical for t in self.transfers),
            "seconds": round(self.seconds, 3),
            "domains": domains,
        }


def verify(
    source: Backend, target: Backend, domains: Sequence[str], known: Mapping[str, DomainDigest] | None = None
) -> list[DomainCheck]:
    """Count and digest every domain of ``domains`` on both sides; a source digest in ``known`` (taken while the
    copy read the source, which it owned meanwhile) is not read again."""
    checks = []
    for name in domains:
        spec = DOMAINS[name]
        left = (known or {}).get(name) or digest_of(source, spec)
        right = digest_of(target, spec)
        checks.append(DomainCheck(name, left.records, left.digest, right.records, right.digest))
    return checks


def _digesting(records: Iterator[tuple[Key, Record]], digest: DomainDigest) -> Iterator[tuple[Key, Record]]:
    """``records``, each added to ``digest`` on its way through."""
    for key, record in records:
        digest.add(key, record)
        yield key, record


def _copy_domains(source: Backend, target: Backend, domains: Sequence[str] | None) -> list[str]:
    """The domains a copy covers: the given ones, else every domain the source stores (and the target too).

    A domain with records that the target cannot store is refused before anything is written.
    """
    names = list(domains) if domains else [n for n in DOMAINS if source.capabilities.supports(n)]
    for name in names:
        for side in (source, target):
            if not side.capabilities.supports(name) and (domains or _count(source, DOMAINS[name])):
                raise ConfigurationError(f"the backend {side.url} does not store the {name!r} domain")
    return [name for name in names if target.capabilities.supports(name)]


def copy_backends(
    source: Backend,
    target: Backend,
    *,
    domains: Sequence[str] | None = None,
    verify_only: bool = False,
    progress: ProgressFn = _no_progress,
) -> TransferSummary:
    """Copy every record of ``domains`` (default: all) from ``source`` to ``target``, then verify both sides.

    Both backends are open. Each record keeps its ``when`` and ``removed``; a record the target already holds
    equal is left alone, so a second run writes nothing; a first-write-wins record (candle, log) that the
    target holds with another value is kept and reported. Both storages are claimed for the duration
    (``Capabilities.ownership``): a live bot on either side refuses the copy with an ``OwnershipError``, and
    none can start on them until it ends. With ``verify_only`` nothing is written and nothing is claimed.

    Raises:
        ConfigurationError: a backend that cannot list, an unknown domain, or one the target cannot store.
        OwnershipError: a live process owns the source or the target.
    """
    started = time.monotonic()
    for backend in (source, target):
        _require_listing(backend)
    names = _copy_domains(source, target, _check_domains(domains))
    summary = TransferSummary(source.url, target.url)
    read: dict[str, DomainDigest] = {}  # the source's digests, taken as the copy reads it
    with ExitStack() as stack:
        if not verify_only:
            source = stack.enter_context(_owned(source))
            target = stack.enter_context(_owned(target))
            total = sum(_count(source, DOMAINS[name]) for name in names)
            done = 0

            def tick(n: int) -> None:
                nonlocal done
                done += n
                progress(done, total)

            for name in names:
                records = _digesting(_stream(source, DOMAINS[name]), read.setdefault(name, DomainDigest()))
                summary.transfers.append(_apply(target, DOMAINS[name], records, tick))
        summary.checks = verify(source, target, names, read)
    summary.seconds = time.monotonic() - started
    return summary


def copy(
    from_url: str,
    to_url: str,
    *,
    domains: Sequence[str] | None = None,
    verify_only: bool = False,
    env: Mapping[str, str] | None = None,
    progress: ProgressFn = _no_progress,
) -> TransferSummary:
    """:func:`copy_backends` between the backends of two URLs (opened here, closed after)."""
    if same_storage(from_url, to_url):
        raise ConfigurationError(f"{mask_url(from_url)} and {mask_url(to_url)} are the same storage")
    environ = os.environ if env is None else env
    with backend_for(from_url, environ) as source, backend_for(to_url, environ) as target:
        return copy_backends(source, target, domains=domains, verify_only=verify_only, progress=progress)


# -------------------------------------------------------------------------------------------- export


@dataclass
class ExportSummary:
    """What :func:`export` wrote."""

    path: str
    sources: dict[str, str]  #: domain -> masked URL
    domains: dict[str, dict[str, Any]]  #: domain -> {"records": n, "digest": "sha256:..."}
    records: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the ``--json`` output)."""
        return {k: round(v, 3) if k == "seconds" else v for k, v in vars(self).items()}


def _open_text(path: str, mode: str, *, gz: bool | None = None) -> IO[str]:
    """``path`` as UTF-8 text, through gzip when ``gz`` (default: when its name ends in ``.gz``)."""
    if path.endswith(".gz") if gz is None else gz:
        return cast(IO[str], gzip.open(path, mode + "t", encoding="utf-8", newline="\n"))
    return open(path, mode, encoding="utf-8", newline="\n")


@contextmanager
def _domain_backends(
    url: str | None, env: Mapping[str, str] | None, domains: Sequence[str] | None
) -> Iterator[dict[str, Backend]]:
    """``{domain: opened backend}`` as ``setup()`` routes them (both modes), for every domain a backend stores.

    Raises:
        ConfigurationError: a domain whose two modes are routed to two storages (give ``url`` to pick one).
    """
    wanted = _check_domains(domains)
    with _storages(url, env, None) as storages:
        chosen: dict[str, Backend] = {}
        for backend, names in storages.values():
            for name in names:
                if (wanted and name not in wanted) or not backend.capabilities.supports(name):
                    continue
                if name in chosen:
                    raise ConfigurationError(
                        f"the {name!r} domain is stored in two places ({chosen[name].url} and {backend.url}); "
                        "name one with --url"
                    )
                _require_listing(backend)
                chosen[name] = backend
        yield {name: chosen[name] for name in DOMAINS if name in chosen}


def export(
    path: str,
    url: str | None = None,
    *,
    domains: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    progress: ProgressFn = _no_progress,
) -> ExportSummary:
    """Write the records of ``domains`` (default: all) to ``path`` in the export format (docs/export-format.md).

    The storages are resolved as ``setup()`` does (``url``, else ``PERSIST_URL`` and the other ``PERSIST_*``
    variables) and only read: no ownership is claimed, so a running bot may go on (records it writes during
    the export may or may not be in the file). The file is written under a temporary name and renamed when
    complete, gzip-compressed when ``path`` ends in ``.gz``.
    """
    started = time.monotonic()
    with _domain_backends(url, env, domains) as backends:
        total = sum(_count(backend, DOMAINS[name]) for name, backend in backends.items())
        sources = {name: backend.url for name, backend in backends.items()}
        header = {
            "format": FORMAT,
            "version": VERSION,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "source": sources,
            "domains": list(backends),
        }
        partial = f"{path}.partial"
        digests: dict[str, DomainDigest] = {}
        try:
            with _open_text(partial, "w", gz=path.endswith(".gz")) as out:
                out.write(_compact(header) + "\n")
                done = 0
                for name, backend in backends.items():
                    spec = DOMAINS[name]
                    digest = digests[name] = DomainDigest()
                    for key, record in _stream(backend, spec):
                        out.write(_record_line(spec, key, record))
                        digest.add(key, record)
                        done += 1
                        if done % PAGE_SIZE == 0:
                            progress(done, max(total, done))
                counts = {n: {"records": d.records, "digest": d.digest} for n, d in digests.items()}
                records = sum(d.records for d in digests.values())
                out.write(_compact({"end": {"records": records, "domains": counts}}) + "\n")
            os.replace(partial, path)
        except BaseException:
            if os.path.exists(partial):
                os.unlink(partial)
            raise
        progress(records, records)
    return ExportSummary(path, sources, counts, records, time.monotonic() - started)


def _record_line(spec: DomainSpec, key: Key, record: Record) -> str:
    """One record's line; the payload goes in as the stored JSON text (re-encoded only if it spans lines)."""
    names = [f.name for f in spec.key_fields]
    payload = record.payload
    if "\n" in payload or "\r" in payload:
        payload = encode_value(json.loads(payload))
    return (
        f'{{"domain":"{spec.name}","key":{_compact(dict(zip(names, key, strict=True)))},'
        f'"value":{payload},"when":{json.dumps(record.when)},"removed":{json.dumps(record.removed)}}}\n'
    )


# -------------------------------------------------------------------------------------------- import


@dataclass
class _Dump:
    """A validated pass over an export file: its header, then its records, then the trailer's check."""

    path: str
    header: dict[str, Any] = field(default_factory=dict)
    digests: dict[str, DomainDigest] = field(default_factory=dict)

    def records(self) -> Iterator[tuple[DomainSpec, Key, Record]]:
        """Every record of the file, validated; raises :class:`DumpFormatError` at the first bad line."""
        try:
            lines = _open_text(self.path, "r")
        except OSError as exc:
            raise self._error(0, f"cannot be read: {exc}") from exc
        with lines:
            number = 0
            previous: tuple[str, Key] | None = None
            trailer: dict[str, Any] | None = None
            try:
                for number, text in enumerate(lines, 1):
                    if trailer is not None:
                        raise self._error(number, "a line after the trailer (the 'end' line must be the last)")
                    line = self._parse(number, text)
                    if number == 1:
                        self.header = self._check_header(line)
                        continue
                    if "end" in line:
                        trailer = line
                        continue
                    spec, key, record = self._record(number, line)
                    if previous is not None and (previous[0] == spec.name and previous[1] >= key):
                        raise self._error(number, f"the {spec.name} keys are not in ascending order (a duplicate?)")
                    if previous is not None and previous[0] != spec.name and spec.name in self.digests:
                        raise self._error(number, f"the {spec.name} records are not all together")
                    previous = (spec.name, key)
                    self.digests.setdefault(spec.name, DomainDigest()).add(key, record)
                    yield spec, key, record
            except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
                raise self._error(number + 1, f"cannot be read: {exc}") from exc
            if number == 0:
                raise self._error(0, "is empty (no header line)")
            if trailer is None:
                raise self._error(number, "the file ends without its trailer ('end' line): it is incomplete")
            self._check_trailer(number, trailer)

    def _error(self, line: int, reason: str) -> DumpFormatError:
        return DumpFormatError(self.path, line, reason)

    def _parse(self, number: int, text: str) -> dict[str, Any]:
        try:
            line = json.loads(text)
        except ValueError as exc:
            raise self._error(number, f"not a JSON object: {exc}") from None
        if type(line) is not dict:
            raise self._error(number, "not a JSON object")
        return line

    def _check_header(self, line: dict[str, Any]) -> dict[str, Any]:
        if line.get("format") != FORMAT:
            raise self._error(1, f"not an export file: the first line's 'format' must be {FORMAT!r}")
        if line.get("version") != VERSION:
            raise self._error(1, f"format version {line.get('version')!r}; this version reads version {VERSION}")
        names = line.get("domains")
        if type(names) is not list or any(name not in DOMAINS for name in names):
            raise self._error(1, f"'domains' must list domain names; known: {', '.join(DOMAINS)}")
        return line

    def _record(self, number: int, line: dict[str, Any]) -> tuple[DomainSpec, Key, Record]:
        if set(line) != _RECORD_FIELDS:
            raise self._error(number, f"a record line has exactly the fields {', '.join(sorted(_RECORD_FIELDS))}")
        name = line["domain"]
        if name not in self.header["domains"]:
            raise self._error(number, f"domain {name!r} is not among the header's domains")
        spec = DOMAINS[name]
        fields = line["key"]
        names = [f.name for f in spec.key_fields]
        if type(fields) is not dict or sorted(fields) != sorted(names):
            raise self._error(number, f"a {name} key has the fields {', '.join(names) or '(none)'}")
        value, when, removed = line["value"], line["when"], line["removed"]
        try:
            key = tuple(check_field(f, fields[f.name]) for f in spec.key_fields)
            payload = encode_value(value)
            check_value_kind(spec, value)
            if spec.item_id_field is not None and (type(value) is not dict or value.get(spec.item_id_field) != key[-1]):
                raise InvalidValueError(f"$.{spec.item_id_field}", f"must equal the key's {names[-1]}")
        except (InvalidKeyError, InvalidValueError) as exc:
            raise self._error(number, str(exc)) from None
        except ValueError as exc:
            raise self._error(number, f"invalid value: {exc}") from None
        if when is not None and (type(when) is not int or not spec.timed or not -_INT64 <= when < _INT64):
            raise self._error(number, f"'when' must be null{' or int milliseconds' if spec.timed else ''}")
        if type(removed) is not bool or (removed and not spec.soft_delete):
            raise self._error(number, f"'removed' must be {'true or false' if spec.soft_delete else 'false'}")
        return spec, key, Record(payload, when, removed)

    def _check_trailer(self, number: int, line: dict[str, Any]) -> None:
        end = line["end"]
        found = {name: {"records": d.records, "digest": d.digest} for name, d in self.digests.items()}
        declared = end.get("domains") if type(end) is dict else None
        if type(declared) is not dict:
            raise self._error(number, "the trailer has no 'domains'")
        expected = {
            name: counts for name, counts in declared.items() if type(counts) is not dict or counts.get("records")
        }
        if found != expected or end.get("records") != sum(d.records for d in self.digests.values()):
            differ = sorted(n for n in set(found) | set(expected) if found.get(n) != expected.get(n)) or ["records"]
            raise self._error(
                number, f"the records do not match the trailer's counts and digests ({', '.join(differ)})"
            )


def import_dump(
    path: str,
    url: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    progress: ProgressFn = _no_progress,
) -> TransferSummary:
    """Import an export file into the storages of ``url`` (resolved as ``setup()`` does), then verify.

    The file is read twice: a first pass validates every line (format and version, domains, key fields, values
    by their domain's rules, ``when`` and ``removed``, key order, and the trailer's counts and digests), so that
    a bad file writes nothing; the second pass writes, as :func:`copy_backends` does (records kept with their
    ``when`` and ``removed``, identical ones left alone, first-write-wins records never overwritten). Each
    target storage is claimed for the duration. The verification compares each domain of the target with the
    file's digest: a target that held other records of an imported domain before is reported as different.

    Raises:
        DumpFormatError: a bad line (nothing was written).
        OwnershipError: a live process owns a target storage.
    """
    started = time.monotonic()
    dump = _Dump(path)
    for _ in dump.records():
        pass
    names = [name for name in dump.header["domains"] if name in dump.digests]
    with _domain_backends(url, env, None) as backends, ExitStack() as stack:
        for name in names:
            if name not in backends:
                raise ConfigurationError(f"no backend of {url or 'the configuration'} stores the {name!r} domain")
        owned: dict[str, Backend] = {}
        for backend in {id(backends[name]): backends[name] for name in names}.values():
            claimed = stack.enter_context(_owned(backend))
            owned.update({name: claimed for name in names if backends[name] is backend})
        summary = TransferSummary(path, ", ".join(sorted({owned[name].url for name in names})))
        total, done = sum(d.records for d in dump.digests.values()), 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            progress(done, total)

        expected = dump.digests
        dump = _Dump(path)
        for name, group in itertools.groupby(dump.records(), key=lambda item: item[0].name):
            spec = DOMAINS[name]
            summary.transfers.append(_apply(owned[name], spec, ((k, r) for _, k, r in group), tick))
        for name in names:
            digest = digest_of(owned[name], DOMAINS[name])
            summary.checks.append(
                DomainCheck(name, expected[name].records, expected[name].digest, digest.records, digest.digest)
            )
    summary.seconds = time.monotonic() - started
    return summary
