"""The JSON-lines backend: the log domain as one append-only file (``jsonl:./dump/log/log.jsonl``).

One line per entry, and the line *is* the entry (the record's canonical JSON text, written as it came from
the encoder), the same layout as upstream's ``useJsonl`` adapter, so ``tail -f`` and ``jq`` read it as it
grows. Design notes and the recovery rules are in ``docs/jsonl.md``.

Concurrency: every append holds ``flock(LOCK_EX)`` on the file (and a thread lock, because an flock belongs
to the open file description that all threads share). Under the lock it first indexes what other processes
appended since this instance last read (from the byte offset it has indexed up to), then appends the new
entries with one ``write`` of whole lines to an ``O_APPEND`` descriptor and one ``fdatasync``. Readers index
new lines under ``LOCK_SH``. An incomplete last line or an unparseable line seen under a lock was left by a
writer that died mid-write: its bytes are copied to a quarantine file and fsynced before the log is repaired.
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persist_core.backend import PAGE_SIZE, Backend, Capabilities, ItemKey, Key, Record, comes_after
from persist_core.backends._durable import durability_of, fsync_dir, makedirs_durably
from persist_core.domains import DOMAINS, DomainSpec, KeyField
from persist_core.errors import (
    BackendUnavailableError,
    ConfigurationError,
    CorruptRecordError,
    InvalidValueError,
    PersistError,
)
from persist_core.urls import check_keywords, check_options, mask_url, parse_options, path_of
from persist_core.validation import check_field

__all__ = ["DEFAULT_PATH", "JsonlBackend"]

log = logging.getLogger("persist.jsonl")

DEFAULT_PATH = "./dump/log/log.jsonl"
QUARANTINE_INFIX = ".quarantine-"
#: Catch-up reads the file in chunks of this size, so opening a large log does not read it whole.
_CHUNK = 4 * 1024 * 1024
#: The options of a ``jsonl:`` URL (query or keyword), and what each accepts.
_URL_OPTIONS = {"durability": "full|process"}
_quote = json.encoder.encode_basestring  # the JSON string literal of a str, non-ASCII kept (the C function)
_sync_data = getattr(os, "fdatasync", os.fsync)


def _log_id_field() -> KeyField:
    field = DOMAINS["log"].item
    if field is None:  # pragma: no cover - the domain table gives log an item key
        raise RuntimeError("the log domain has no item key")
    return field


_ID_FIELD = _log_id_field()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


class JsonlBackend(Backend):
    """The log domain as one append-only JSON-lines file; shared between processes; survives kills (and power
    cuts unless ``durability="process"``)."""

    capabilities = Capabilities(domains=frozenset({"log"}), keeps_removed_records=False, listing=True)

    def __init__(
        self, path: str | os.PathLike[str] = DEFAULT_PATH, *, durability: str = "full", url: str | None = None
    ) -> None:
        if durability not in ("full", "process"):
            raise ConfigurationError(f"durability must be 'full' or 'process', not {durability!r}")
        self.path = Path(path).absolute()
        self.url = mask_url(url) if url else f"jsonl:{self.path}"
        self._fsync = durability == "full"
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        self._offset = 0  # bytes indexed: always the end of a complete line
        self._index: dict[str, Record] = {}
        self._ids: list[str] = []  # the index's ids, sorted lazily for scans
        self._sorted = True

    @classmethod
    def from_url(cls, url: str, **options: Any) -> JsonlBackend:
        """Build from ``jsonl:PATH[?durability=process]``; keyword options override the query.

        Raises:
            ConfigurationError: an unknown query or keyword option, or a bad value, listing the known ones.
        """
        query = parse_options(url)
        check_options(url, query, _URL_OPTIONS)
        durability = durability_of(url, query, _URL_OPTIONS)
        check_keywords(url, options, _URL_OPTIONS)
        merged: dict[str, Any] = {"durability": durability, **options}
        return cls(path_of(url, DEFAULT_PATH), url=url, **merged)

    # ---------------------------------------------------------------------------------- lifecycle

    def open(self) -> None:
        with self._lock:
            self._descriptor()

    def close(self) -> None:
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # in a forked child this closes only the child's copy
        self._fd = None
        self._pid = 0
        self._offset = 0
        self._index = {}
        self._ids = []
        self._sorted = True

    def _descriptor(self) -> int:
        """The file descriptor of this process, opened and indexed on first use. Caller holds ``_lock``."""
        if self._fd is not None and self._pid == os.getpid():
            return self._fd
        # First use, or a forked child: the inherited descriptor shares its flock with the parent, so the two
        # processes would not exclude each other. Open our own; the index carried over stays valid.
        first_open = self._fd is None
        try:
            fd = self._open_file()
        except OSError as exc:
            raise _translate(exc, self.path) from exc
        if self._fd is not None:
            os.close(self._fd)  # the copy inherited through fork; the parent keeps its own
        self._fd, self._pid = fd, os.getpid()
        try:
            self._refresh_locked()
        except BaseException:
            if first_open:  # leave nothing half open behind: the next use starts again from scratch
                self._reset()
            raise
        return fd

    def _open_file(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        try:
            return os.open(self.path, flags)
        except FileNotFoundError:
            pass
        makedirs_durably(self.path.parent, fsync=self._fsync)
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # another process created it meanwhile
            return os.open(self.path, flags)
        self._sync_dir(self.path.parent)
        return fd

    def _sync_dir(self, folder: Path) -> None:
        if self._fsync:
            fsync_dir(folder)

    # ---------------------------------------------------------------------------------- catch-up

    def _refresh(self) -> None:
        """Index what other processes appended, if the file grew since we last looked."""
        fd = self._fd
        if fd is not None and self._pid == os.getpid():
            try:
                if os.fstat(fd).st_size == self._offset:
                    return
            except OSError as exc:
                raise _translate(exc, self.path) from exc
        with self._lock:
            if self._fd is None or self._pid != os.getpid():
                self._descriptor()  # opens and indexes
            else:
                self._refresh_locked()

    def _refresh_locked(self) -> None:
        fd = self._fd
        if fd is None:  # pragma: no cover - callers open first
            raise RuntimeError("not open")
        try:
            if os.fstat(fd).st_size == self._offset:
                return
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                clean = self._catch_up(fd, repair=False)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            if not clean:
                # A broken line needs the exclusive lock to be repaired. Converting the lock is not atomic, but
                # the catch-up re-reads from our offset, so whatever happened in between is seen.
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    self._catch_up(fd, repair=True)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        except PersistError:
            raise
        except OSError as exc:
            raise _translate(exc, self.path) from exc

    def _catch_up(self, fd: int, *, repair: bool) -> bool:
        """Index the complete lines after ``_offset``. The caller holds ``_lock`` and an flock.

        No writer is inside its ``write`` while we hold an flock, so an incomplete last line or a line that
        does not parse was left by a writer that died (or by hand). Without ``repair`` (shared lock), stop
        before it and return False; with ``repair`` (exclusive lock), quarantine it and go on.
        """
        size = os.fstat(fd).st_size
        if size < self._offset:
            raise CorruptRecordError(
                f"{self.path} shrank to {size} bytes below the {self._offset} already read: it was truncated or "
                "replaced behind the backend's back; reopen the backend"
            )
        pending = b""
        start_of_pending = self._offset
        read_to = self._offset
        duplicates = 0
        while read_to < size:
            chunk = os.pread(fd, min(_CHUNK, size - read_to), read_to)
            if not chunk:  # pragma: no cover - the file cannot shrink while we hold the lock
                break
            read_to += len(chunk)
            buf = pending + chunk if pending else chunk
            begin = 0
            while (end := buf.find(b"\n", begin)) >= 0:
                line = buf[begin:end]
                try:
                    duplicates += self._index_line(line)
                except ValueError as exc:
                    if not repair:
                        self._offset = start_of_pending + begin
                        return False
                    self._quarantine_line(fd, start_of_pending + begin, line, str(exc))
                begin = end + 1
            self._offset = start_of_pending + begin
            pending = buf[begin:]
            start_of_pending = self._offset
        if duplicates:
            log.warning(
                "%s holds %d line(s) whose id came earlier in the file; the first one counts", self.path, duplicates
            )
        if not pending:
            return True
        if not repair:
            return False
        self._quarantine_tail(fd, self._offset, pending)
        return True

    def _index_line(self, line: bytes) -> int:
        """Index one line; return 1 if its id was already indexed (it is skipped), else 0. ValueError if bad."""
        if line[:1] == b"{":  # as we write them: skip the decoder's whitespace scans
            text = line.decode("utf-8")
            entry, end = _DECODER.raw_decode(text)
            if end != len(text) and not text[end:].isspace():
                raise ValueError(f"extra data after the JSON object at column {end + 1}")
        elif not line.strip():
            return 0  # an empty line, or one blanked by a repair
        else:
            text = line.decode("utf-8")
            entry = _DECODER.decode(text)
        if not isinstance(entry, dict):
            raise ValueError("the line is not a JSON object")
        if "id" not in entry:
            raise ValueError("the line has no 'id'")
        entry_id = check_field(_ID_FIELD, entry["id"])  # InvalidKeyError is a ValueError
        if entry_id in self._index:
            return 1
        self._add(entry_id, Record(text))
        return 0

    def _add(self, entry_id: str, record: Record) -> None:
        self._index[entry_id] = record
        if self._sorted and self._ids and entry_id < self._ids[-1]:
            self._sorted = False
        self._ids.append(entry_id)

    # -------------------------------------------------------------------------------- quarantine

    def _quarantine_tail(self, fd: int, offset: int, data: bytes) -> None:
        """Move an incomplete last line to a quarantine file, then cut the log back to its last whole line."""
        target = self._write_quarantine(data)
        log.error(
            "%s ended in an incomplete line (%d bytes at offset %d; a writer died mid-append): moved to %s",
            self.path,
            len(data),
            offset,
            target,
        )
        # The bytes are safe on disk before the log loses them: a crash here leaves a second copy, never none.
        os.ftruncate(fd, offset)
        os.fsync(fd)

    def _quarantine_line(self, fd: int, offset: int, line: bytes, reason: str) -> None:
        """Copy an unreadable complete line to a quarantine file, then blank it in place (same length)."""
        target = self._write_quarantine(line + b"\n")
        log.error(
            "%s has an unreadable line (%d bytes at offset %d: %s): copied to %s and blanked in place",
            self.path,
            len(line),
            offset,
            reason[:200],
            target,
        )
        # Blank rather than cut out: other processes hold offsets into the file, and rewriting it would move
        # them. A line of spaces is whitespace to jq and is skipped here. pwrite needs a descriptor without
        # O_APPEND (Linux appends on an O_APPEND descriptor whatever the offset).
        blank = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            if os.fstat(blank).st_ino != os.fstat(fd).st_ino:  # pragma: no cover - replaced under our lock
                raise CorruptRecordError(f"{self.path} was replaced while it was being repaired")
            view = memoryview(b" " * len(line))
            at = offset
            while view:
                written = os.pwrite(blank, view, at)
                view, at = view[written:], at + written
            os.fsync(blank)
        finally:
            os.close(blank)

    def _write_quarantine(self, data: bytes) -> Path:
        """Write ``data`` to a new quarantine file next to the log, fsynced with its folder; return its path."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        while True:
            target = self.path.with_name(f"{self.path.name}{QUARANTINE_INFIX}{time.time_ns()}")
            try:
                out = os.open(target, flags, 0o644)
            except FileExistsError:  # pragma: no cover - two repairs in the same nanosecond
                continue
            break
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(out, view) :]
            os.fsync(out)
        finally:
            os.close(out)
        folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        return target

    # ------------------------------------------------------------------------------------ writes

    # docstrings inherited from Backend

    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        self._check_domain(domain)
        lines = [(key[-1], record, _line_of(key[-1], record)) for key, record in items]  # all checked first
        with self._lock:
            fd = self._descriptor()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    self._check_same_file(fd)
                    self._catch_up(fd, repair=True)
                    fresh: dict[str, tuple[Record, str]] = {}
                    for entry_id, record, line in lines:
                        if entry_id not in self._index and entry_id not in fresh:
                            fresh[entry_id] = (record, line)
                    if not fresh:
                        return 0
                    data = "".join(line for _, line in fresh.values()).encode("utf-8")
                    self._append(fd, data)
                    for entry_id, (record, _) in fresh.items():
                        self._add(entry_id, record)
                    self._offset += len(data)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except PersistError:
                raise
            except OSError as exc:
                raise _translate(exc, self.path) from exc
        return len(fresh)

    def _append(self, fd: int, data: bytes) -> None:
        """One write of whole lines (looping only if the kernel writes less), then one data sync."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            # Nothing was acknowledged: take back the part that reached the file, or the next append would be
            # glued to a half line. We still hold the exclusive lock, so the end of the file is ours.
            try:
                os.ftruncate(fd, self._offset)
            except OSError:  # pragma: no cover - the next catch-up quarantines what is left
                log.exception("could not cut a failed append off %s", self.path)
            raise
        if self._fsync:
            _sync_data(fd)

    def _check_same_file(self, fd: int) -> None:
        """Refuse to append to a file that was renamed or deleted: acknowledged entries would vanish with it."""
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            on_disk = None
        mine = os.fstat(fd)
        if on_disk is None or (on_disk.st_dev, on_disk.st_ino) != (mine.st_dev, mine.st_ino):
            raise BackendUnavailableError(
                f"{self.path} was removed or replaced (rotated?) since this backend opened it; "
                "reopen the backend, or give the new file its own URL"
            )

    def leave_interrupted_write(self, domain: DomainSpec, key: Key, record: Record) -> bool:
        # docstring inherited: an append that died halfway through its line (the next reader quarantines it)
        self._check_domain(domain)
        line = _line_of(key[-1], record).encode("utf-8")
        with self._lock:
            fd = self._descriptor()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                os.write(fd, line[: len(line) // 2])
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return True

    def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        """Not supported: a log entry is never replaced (append-only); use :meth:`insert_many`."""
        raise NotImplementedError(self._append_only("put"))

    def put_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> None:
        """Not supported, as :meth:`put`."""
        raise NotImplementedError(self._append_only("put_many"))

    def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        """Not supported: log entries are never removed (append-only)."""
        raise NotImplementedError(self._append_only("mark_removed"))

    def _append_only(self, operation: str) -> str:
        return (
            f"the jsonl backend ({self.url}) is append-only: {operation}() would change an entry already written; "
            "log entries are added with insert_many and never replaced or removed (CONTRACTS.md 3.4)"
        )

    # ------------------------------------------------------------------------------------- reads

    def get(self, domain: DomainSpec, key: Key) -> Record | None:
        self._check_domain(domain)
        self._refresh()
        return self._index.get(key[-1])

    def scan(
        self,
        domain: DomainSpec,
        context: Key,
        start: ItemKey | None = None,
        stop: ItemKey | None = None,
    ) -> list[tuple[ItemKey, Record]]:
        self._check_domain(domain)
        self._refresh()
        with self._lock:
            ids = self._ids
            if not self._sorted:
                ids.sort()
                self._sorted = True
            lo = 0 if start is None else bisect.bisect_left(ids, start)
            hi = len(ids) if stop is None else bisect.bisect_left(ids, stop)
            index = self._index
            return [(entry_id, index[entry_id]) for entry_id in ids[lo:hi]]

    # The log has no context fields: its one context is ``()`` and a key is ``(id,)``. No deletion: the file
    # is append-only, and removing entries means rewriting it (a compaction, not built yet).

    def list_contexts(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, int]]:
        self._check_domain(domain)
        self._refresh()
        count = len(self._index)
        return [((), count)] if count and limit > 0 and comes_after((), after) else []

    def list_records(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, Record]]:
        start = None if not after else after[0]
        pairs = self.scan(domain, (), start)[: limit + 1]  # ascending: only the first may be ``after`` itself
        return [((entry_id,), record) for entry_id, record in pairs if comes_after((entry_id,), after)][:limit]

    def _check_domain(self, domain: DomainSpec) -> None:
        if domain.name != "log":
            raise ConfigurationError(
                f"the jsonl backend ({self.url}) stores only the 'log' domain, not {domain.name!r}; "
                "route other domains to another backend"
            )


def _line_of(entry_id: str, record: Record) -> str:
    """The file line of a log record: its payload, which must be the entry object whose ``id`` is the key."""
    if record.when is not None or record.removed:
        raise InvalidValueError("$", "a jsonl log record has no 'when' and is never removed")
    payload = record.payload
    head = '{"id":' + _quote(entry_id)
    # Fast path: the canonical text of an entry whose first member is its id (upstream's entries are).
    if payload.startswith(head) and payload[len(head) : len(head) + 1] in (",", "}") and "\n" not in payload:
        return payload + "\n"
    try:
        entry = json.loads(payload)
    except ValueError as exc:
        raise InvalidValueError("$", f"the record payload is not JSON: {exc}") from None
    if not isinstance(entry, dict) or entry.get("id") != entry_id:
        raise InvalidValueError(
            "$.id", f"a jsonl log record must be the entry object itself, with 'id' equal to its key {entry_id!r}"
        )
    if "\n" in payload:  # not canonical (indented): one entry must stay one line
        payload = json.dumps(entry, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return payload + "\n"


def _translate(exc: OSError, where: object) -> PersistError:
    """The one place where OS errors of the jsonl backend become persist errors."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO):
        return BackendUnavailableError(f"jsonl backend cannot write {where}: {exc.strerror}")
    if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG):
        return ConfigurationError(f"jsonl backend path {where} is not usable as a file: {exc.strerror}")
    return BackendUnavailableError(f"jsonl backend error at {where}: {exc}")
