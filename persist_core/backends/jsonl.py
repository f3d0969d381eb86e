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

Deletion rewrites the file (a compaction) and renames the copy over it while it holds ``LOCK_EX`` on the old
one; every instance, under its lock, compares the file its descriptor holds with the one the path names and
follows a replacement (reopen, re-index) before it appends or reads. Every lock wait is bounded.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from persist_core.backend import PAGE_SIZE, Backend, Capabilities, ItemKey, Key, Record, comes_after
from persist_core.backends._durable import durability_of, fsync_dir, makedirs_durably
from persist_core.backends._flock import flock_within
from persist_core.deadlines import DEFAULT_TIMEOUT_SECONDS, parse_timeout
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

__all__ = ["COMPACTION_INFIX", "DEFAULT_PATH", "JsonlBackend"]

log = logging.getLogger("persist.jsonl")

DEFAULT_PATH = "./dump/log/log.jsonl"
QUARANTINE_INFIX = ".quarantine-"
#: The infix of a compaction's temp file (``log.jsonl.compacting-<pid>-<ns>``), renamed over the log when done.
COMPACTION_INFIX = ".compacting-"
#: Catch-up reads the file in chunks of this size, so opening a large log does not read it whole.
_CHUNK = 4 * 1024 * 1024
#: The options of a ``jsonl:`` URL (query or keyword), and what each accepts.
_URL_OPTIONS = {
    "durability": "full|process",
    "timeout": "seconds an operation waits for another process's lock on the file (default 5)",
}
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

    # A deletion rewrites the file whatever it deletes: prune should hand over many keys at once (the index
    # holds every entry already, so 100,000 keys beside it are a small part of the memory).
    capabilities = Capabilities(
        domains=frozenset({"log"}),
        keeps_removed_records=False,
        listing=True,
        deletion=True,
        deletion_batch=100_000,
    )

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_PATH,
        *,
        durability: str = "full",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        url: str | None = None,
    ) -> None:
        if durability not in ("full", "process"):
            raise ConfigurationError(f"durability must be 'full' or 'process', not {durability!r}")
        self.path = Path(path).absolute()
        self.url = mask_url(url) if url else f"jsonl:{self.path}"
        self.timeout = parse_timeout(timeout, f"for {self.url}")
        self._fsync = durability == "full"
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the file _fd holds
        self._forget()

    def _forget(self) -> None:
        """Drop the index (of a file no longer the one held)."""
        self._offset = 0  # bytes indexed: always the end of a complete line
        self._index: dict[str, Record] = {}
        self._ids: list[str] = []  # the index's ids, sorted lazily for scans
        self._sorted = True
        self._starts: dict[str, int] = {}  # id -> byte offset of its line (the first one, which counts)
        self._repeats: dict[str, list[int]] = {}  # id -> offsets of later lines with that id (skipped)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> JsonlBackend:
        """Build from ``jsonl:PATH[?durability=process&timeout=5]``; keyword options override the query.

        Raises:
            ConfigurationError: an unknown query or keyword option, or a bad value, listing the known ones.
        """
        query = parse_options(url)
        check_options(url, query, _URL_OPTIONS)
        durability = durability_of(url, query, _URL_OPTIONS)
        check_keywords(url, options, _URL_OPTIONS)
        merged: dict[str, Any] = {
            "durability": durability,
            "timeout": query.get("timeout", DEFAULT_TIMEOUT_SECONDS),
            **options,
        }
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
        self._file = None
        self._forget()

    def _descriptor(self) -> int:
        """The file descriptor of this process, opened and indexed on first use. Caller holds ``_lock``."""
        if self._fd is not None and self._pid == os.getpid():
            return self._fd
        # First use, or a forked child: the inherited descriptor shares its flock with the parent, so the two
        # processes would not exclude each other. Open our own; the index carried over stays valid if the
        # path still names the same file.
        first_open = self._fd is None
        try:
            fd = self._open_file()
        except OSError as exc:
            raise _translate(exc, self.path) from exc
        try:
            self._adopt(fd)
            self._refresh_locked()
            if first_open and self._leftovers():
                self._sweep_leftovers()
        except BaseException:
            self._reset()  # leave nothing half open behind: the next use starts again from scratch
            raise
        if self._fd is None:  # pragma: no cover - _refresh_locked raises rather than leave it closed
            raise RuntimeError("not open")
        return self._fd

    def _adopt(self, fd: int) -> None:
        """Make ``fd`` this process's descriptor; forget the index if it holds another file. Caller holds
        ``_lock``."""
        try:
            held = _identity(os.fstat(fd))
        except OSError:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)  # an older file, or the copy inherited through fork (the parent keeps its own)
        if held != self._file:
            self._forget()
        self._fd, self._pid, self._file = fd, os.getpid(), held

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

    # ------------------------------------------------------------------ locking, following a compaction

    def _lock_file(self, *, shared: bool) -> int:
        """Hold an flock on the file the path names now and return its descriptor. Caller holds ``_lock``.

        Another instance may have compacted the log: renamed a new file over it. An append to the old file
        would be lost with it, and its index is stale, so the descriptor follows the path first (reopen,
        re-index). The compactor holds ``LOCK_EX`` on the old file until the new one is in place, so whoever
        gets a lock on the old file after it sees the new file under the path.
        """
        while True:
            fd = self._fd
            if fd is None:  # pragma: no cover - callers open first
                raise RuntimeError("not open")
            flock_within(fd, self.timeout, self._lock_waited(), shared=shared)
            try:
                named = _identity(os.stat(self.path))
            except BaseException as exc:
                fcntl.flock(fd, fcntl.LOCK_UN)
                if isinstance(exc, FileNotFoundError):
                    raise self._removed() from None
                raise
            if named == self._file:
                return fd
            fcntl.flock(fd, fcntl.LOCK_UN)
            self._follow()

    def _follow(self) -> None:
        """Switch to the file the path names now and index it whole. Caller holds ``_lock``, no flock."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            raise self._removed() from None
        log.info("%s was replaced (compacted by another instance): reading the new file", self.path)
        try:
            self._adopt(fd)
            flock_within(fd, self.timeout, self._lock_waited(), shared=True)
            try:
                self._catch_up(fd, repair=False)  # a broken line stops it; the caller's catch-up repairs it
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            # A half-built index must not be read by another thread: start again from scratch next time.
            self._reset()
            raise

    def _lock_waited(self) -> str:
        return (
            f"jsonl backend {self.url}: waited {self.timeout:g} s for the lock on {self.path} (another process "
            "appending, compacting or repairing it, or one stopped while holding it?)"
        )

    def _removed(self) -> BackendUnavailableError:
        return BackendUnavailableError(
            f"{self.path} was removed or renamed (rotated?) since this backend opened it; "
            "reopen the backend, or give the new file its own URL"
        )

    # ---------------------------------------------------------------------------------- catch-up

    def _refresh(self) -> None:
        """Index what other processes appended, if the file grew or was replaced since we last looked."""
        if self._fd is not None and self._pid == os.getpid() and self._unchanged():
            return
        with self._lock:
            if self._fd is None or self._pid != os.getpid():
                self._descriptor()  # opens and indexes
            else:
                self._refresh_locked()

    def _unchanged(self) -> bool:
        """Whether the path still names the file indexed, and it has not grown (one ``stat``)."""
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False  # the locked path reports it
        except OSError as exc:
            raise _translate(exc, self.path) from exc
        return _identity(named) == self._file and named.st_size == self._offset

    def _refresh_locked(self) -> None:
        if self._unchanged():
            return
        try:
            fd = self._lock_file(shared=True)
            try:
                clean = self._catch_up(fd, repair=False)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            if not clean:
                # A broken line needs the exclusive lock to be repaired. Converting the lock is not atomic, but
                # the catch-up re-reads from our offset, so whatever happened in between is seen.
                fd = self._lock_file(shared=False)
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
                    duplicates += self._index_line(line, start_of_pending + begin)
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

    def _index_line(self, line: bytes, at: int) -> int:
        """Index the line at offset ``at``; return 1 if its id was already indexed (it is skipped), else 0.
        ``ValueError`` if the line is not a log entry."""
        parsed = _parse_line(line)
        if parsed is None:
            return 0
        entry_id, text = parsed
        if entry_id in self._index:
            self._repeats.setdefault(entry_id, []).append(at)  # a deletion of the id must take it too
            return 1
        self._add(entry_id, Record(text), at)
        return 0

    def _add(self, entry_id: str, record: Record, at: int) -> None:
        self._index[entry_id] = record
        self._starts[entry_id] = at
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
        with self._exclusive() as fd:
            fresh: dict[str, tuple[Record, bytes]] = {}
            for entry_id, record, line in lines:
                if entry_id not in self._index and entry_id not in fresh:
                    fresh[entry_id] = (record, line.encode("utf-8"))
            if not fresh:
                return 0
            self._append(fd, b"".join(data for _, data in fresh.values()))
            at = self._offset
            for entry_id, (record, data) in fresh.items():
                self._add(entry_id, record, at)
                at += len(data)
            self._offset = at
        return len(fresh)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[int]:
        """Hold ``_lock`` and ``LOCK_EX`` on the current file, indexed (and repaired) to its end; OS errors
        become persist errors."""
        with self._lock:
            self._descriptor()
            try:
                fd = self._lock_file(shared=False)
                try:
                    self._catch_up(fd, repair=True)
                    yield fd
                finally:
                    # After a compaction the old file is released only now, when the new one is in place: an
                    # instance blocked on its lock then finds the path naming the new file (see _lock_file).
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    if fd != self._fd:
                        os.close(fd)
            except PersistError:
                raise
            except OSError as exc:
                raise _translate(exc, self.path) from exc

    def _append(self, fd: int, data: bytes) -> None:
        """One write of whole lines (looping only if the kernel writes less), then one data sync."""
        try:
            _write_all(fd, data)
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

    def leave_interrupted_write(self, domain: DomainSpec, key: Key, record: Record) -> bool:
        # docstring inherited: an append that died halfway through its line (the next reader quarantines it)
        self._check_domain(domain)
        line = _line_of(key[-1], record).encode("utf-8")
        with self._lock:
            self._descriptor()
            fd = self._lock_file(shared=False)
            try:
                os.write(fd, line[: len(line) // 2])
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return True

    # ---------------------------------------------------------------------------- deletion (compaction)

    def delete_records(self, domain: DomainSpec, keys: Sequence[Key]) -> int:
        """Remove the entries under ``keys`` for good; return how many existed (docs/jsonl.md, "Deletion").

        The file is rewritten without their lines (every other line byte for byte, in its order) and the copy
        renamed over the log; nothing is rewritten when none of them exists. Other instances and processes
        follow the new file at their next operation.
        """
        self._check_domain(domain)
        wanted = {key[-1] for key in keys}
        with self._exclusive() as fd:
            doomed = wanted & self._index.keys()
            if doomed:
                self._sweep_leftovers_locked()
                self._compact(fd, doomed)
        return len(doomed)

    def _compact(self, fd: int, doomed: set[str]) -> None:
        """Write the file without the lines of ``doomed`` to a temp file, sync it, rename it over the log, sync
        the folder, and hold the new file from then on. Caller holds ``_lock`` and ``LOCK_EX`` on ``fd``, the
        current file, indexed to its end.

        A kill before the rename leaves the old log whole (and a temp file, swept later); after it, the new
        one. The compactor locks the new file too until its name is durable, so that no appender opening it
        afresh is acknowledged on a file a power cut could still take back.
        """
        starts = sorted(at for entry_id in doomed for at in (self._starts[entry_id], *self._repeats.get(entry_id, ())))
        temp = self.path.with_name(f"{self.path.name}{COMPACTION_INFIX}{os.getpid()}-{time.time_ns()}")
        out = os.open(temp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        renamed = False
        try:
            fcntl.flock(out, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new, uniquely named file: nobody else has it
            cuts = self._copy_without(fd, out, starts, doomed)
            if self._fsync:
                os.fsync(out)
            os.rename(temp, self.path)
            renamed = True
            self._sync_dir(self.path.parent)
            held = _identity(os.fstat(out))
        except BaseException:
            os.close(out)
            if not renamed:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            raise
        removed = sum(end - start for start, end in cuts)
        log.info("%s compacted: %d entries deleted, %d bytes fewer", self.path, len(doomed), removed)
        self._install(out, held, cuts, doomed)
        fcntl.flock(out, fcntl.LOCK_UN)

    def _copy_without(self, fd: int, out: int, starts: list[int], doomed: set[str]) -> list[tuple[int, int]]:
        """Copy the file to ``out`` without the lines at ``starts``; return the (start, end) cut out."""
        cuts: list[tuple[int, int]] = []
        buffer = _Copier(fd, out)
        position = 0
        for start in starts:
            line = _line_at(fd, start, self._offset)
            parsed = _parse_line(line)
            if parsed is None or parsed[0] not in doomed:  # the index disagrees with the file: touch nothing
                raise CorruptRecordError(
                    f"{self.path}: the line at offset {start} is not an entry to delete; nothing was deleted"
                )
            buffer.copy(position, start)
            position = start + len(line) + 1
            cuts.append((start, position))
        buffer.copy(position, self._offset)
        buffer.flush()
        return cuts

    def _install(self, fd: int, held: tuple[int, int], cuts: list[tuple[int, int]], doomed: set[str]) -> None:
        """Hold the compacted file: the index without ``doomed``, every offset moved back by what was cut
        before it. Built aside and swapped in, so a lockless reader sees the old index or the new one."""
        cut_starts = [start for start, _ in cuts]
        cut_before = list(itertools.accumulate((end - start for start, end in cuts), initial=0))

        def moved(at: int) -> int:
            return at - cut_before[bisect.bisect_left(cut_starts, at)]

        index = {entry_id: record for entry_id, record in self._index.items() if entry_id not in doomed}
        starts = {entry_id: moved(at) for entry_id, at in self._starts.items() if entry_id not in doomed}
        repeats = {
            entry_id: [moved(at) for at in offsets]
            for entry_id, offsets in self._repeats.items()
            if entry_id not in doomed
        }
        ids = [entry_id for entry_id in self._ids if entry_id not in doomed]
        self._index, self._starts, self._repeats, self._ids = index, starts, repeats, ids
        self._offset -= cut_before[-1]
        self._fd, self._file = fd, held  # the caller closes the old descriptor once it has released its lock

    # A compaction killed before its rename leaves its temp file. Only a compactor holding LOCK_EX on the
    # current log writes one, so whoever holds that lock may remove every temp file it finds: none is live.

    def _leftovers(self) -> list[Path]:
        prefix = self.path.name + COMPACTION_INFIX
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return []
        return [self.path.parent / name for name in names if name.startswith(prefix)]

    def _sweep_leftovers(self) -> None:
        """Remove the temp files of killed compactions, under ``LOCK_EX``. Caller holds ``_lock``."""
        fd = self._lock_file(shared=False)
        try:
            self._sweep_leftovers_locked()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _sweep_leftovers_locked(self) -> None:
        leftovers = self._leftovers()
        for path in leftovers:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            log.warning("removed %s, left by a compaction that did not finish (the log is whole)", path)
        if leftovers:
            self._sync_dir(self.path.parent)

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
            "log entries are added with insert_many, never replaced or soft-deleted (CONTRACTS.md 3.4); "
            "delete_records (prune) removes them for good"
        )

    # ------------------------------------------------------------------------------------- reads

    def get(self, domain: DomainSpec, key: Key) -> Record | None:
        self._check_domain(domain)
        self._refresh()
        with self._lock:
            self._indexed()
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
        return self._entries(start, stop)

    def _entries(self, start: str | None, stop: str | None, limit: int | None = None) -> list[tuple[str, Record]]:
        """The indexed entries from ``start`` (inclusive) to ``stop`` (exclusive), ascending, at most ``limit``."""
        with self._lock:
            self._indexed()
            ids = self._ids
            if not self._sorted:
                ids.sort()
                self._sorted = True
            lo = 0 if start is None else bisect.bisect_left(ids, start)
            hi = len(ids) if stop is None else bisect.bisect_left(ids, stop)
            if limit is not None:
                hi = min(hi, lo + limit)
            index = self._index
            return [(entry_id, index[entry_id]) for entry_id in ids[lo:hi]]

    def _indexed(self) -> None:
        """Caller holds ``_lock``, after a refresh: if another thread closed the backend, or failed to follow a
        compaction (which leaves no index rather than half of one), since then, index the file again."""
        if self._fd is None:
            self._descriptor()

    # The log has no context fields: its one context is ``()`` and a key is ``(id,)``.

    def list_contexts(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, int]]:
        self._check_domain(domain)
        self._refresh()
        with self._lock:
            self._indexed()
            count = len(self._index)
        return [((), count)] if count and limit > 0 and comes_after((), after) else []

    def list_records(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, Record]]:
        self._check_domain(domain)
        self._refresh()
        # Ascending from ``after``: only the first may be ``after`` itself. Sliced before the records are
        # gathered, so that paging through the log costs a page per page, not the rest of the log.
        pairs = self._entries(after[0] if after else None, None, limit + 1)
        return [((entry_id,), record) for entry_id, record in pairs if comes_after((entry_id,), after)][:limit]

    def _check_domain(self, domain: DomainSpec) -> None:
        if domain.name != "log":
            raise ConfigurationError(
                f"the jsonl backend ({self.url}) stores only the 'log' domain, not {domain.name!r}; "
                "route other domains to another backend"
            )


def _parse_line(line: bytes) -> tuple[str, str] | None:
    """The id and text of a line (``None`` for a blank one); ``ValueError`` if it is not a log entry."""
    if line[:1] == b"{":  # as we write them: skip the decoder's whitespace scans
        text = line.decode("utf-8")
        entry, end = _DECODER.raw_decode(text)
        if end != len(text) and not text[end:].isspace():
            raise ValueError(f"extra data after the JSON object at column {end + 1}")
    elif not line.strip():
        return None  # an empty line, or one blanked by a repair
    else:
        text = line.decode("utf-8")
        entry = _DECODER.decode(text)
    if not isinstance(entry, dict):
        raise ValueError("the line is not a JSON object")
    if "id" not in entry:
        raise ValueError("the line has no 'id'")
    return check_field(_ID_FIELD, entry["id"]), text  # InvalidKeyError is a ValueError


def _identity(st: os.stat_result) -> tuple[int, int]:
    """What tells files apart: a rename over the path gives another inode."""
    return st.st_dev, st.st_ino


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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _line_at(fd: int, start: int, end: int) -> bytes:
    """The line that starts at ``start`` (without its newline), read before ``end``."""
    parts: list[bytes] = []
    at = start
    while at < end:
        chunk = os.pread(fd, min(65536, end - at), at)
        if not chunk:  # pragma: no cover - the file cannot shrink while we hold the lock
            break
        newline = chunk.find(b"\n")
        if newline >= 0:
            parts.append(chunk[:newline])
            return b"".join(parts)
        parts.append(chunk)
        at += len(chunk)
    raise CorruptRecordError(f"no complete line at offset {start} (the file ends at {end})")


class _Copier:
    """Copies byte ranges of one file to the end of another in writes of about ``_CHUNK`` bytes."""

    def __init__(self, source: int, target: int) -> None:
        self._source, self._target = source, target
        self._pending: list[bytes] = []
        self._size = 0

    def copy(self, start: int, end: int) -> None:
        while start < end:
            chunk = os.pread(self._source, min(_CHUNK, end - start), start)
            if not chunk:  # pragma: no cover - the file cannot shrink while we hold the lock
                raise CorruptRecordError(f"the file ended at {start}, before {end}, while it was being compacted")
            start += len(chunk)
            self._pending.append(chunk)
            self._size += len(chunk)
            if self._size >= _CHUNK:
                self.flush()

    def flush(self) -> None:
        if self._pending:
            _write_all(self._target, b"".join(self._pending))
        self._pending, self._size = [], 0


def _translate(exc: OSError, where: object) -> PersistError:
    """The one place where OS errors of the jsonl backend become persist errors."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO):
        return BackendUnavailableError(f"jsonl backend cannot write {where}: {exc.strerror}")
    if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG):
        return ConfigurationError(f"jsonl backend path {where} is not usable as a file: {exc.strerror}")
    return BackendUnavailableError(f"jsonl backend error at {where}: {exc}")
