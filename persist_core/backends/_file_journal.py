"""The unit journal of the file backend: one file per unit of work, whose arrival in the journal folder commits it.

A journal holds the final bytes of every record file a unit leaves and ends with a SHA-256 of all that precedes
it, so that a journal cut short or damaged (a power cut under ``durability="process"``) is told apart from a
committed one and ignored. Its writer holds an exclusive ``flock(2)`` on it from before it is committed until it
is deleted; a process that replays journals skips one whose lock is taken, so only journals of a writer that
died (or gave up, see ``FileBackend.apply_unit``) are replayed. Layout and guarantees: docs/decisions.md,
"File units of work: one journal per unit".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from persist_core.backend import Key
from persist_core.backends._durable import fsync_dir, makedirs_durably, sync_filesystem
from persist_core.domains import DOMAINS, DomainSpec

__all__ = ["JOURNAL_FOLDER", "Change", "UnitJournal", "decode_journal", "encode_journal"]

#: The journal folder, under the root; its name starts with ``.`` so that no listing or sweep takes it for a domain.
JOURNAL_FOLDER = ".units"
JOURNAL_SUFFIX = ".unit"
_MAGIC = b"persist-unit 1\n"
_TRAILER = b"sha256 "
_TRAILER_SIZE = len(_TRAILER) + 64 + 1


@dataclass(frozen=True, slots=True)
class Change:
    """One record file a unit leaves: ``data`` (the record file's bytes) at ``folder/name``, created only if
    absent when ``insert`` (first write wins), else replacing what is there."""

    domain: DomainSpec
    key: Key
    folder: str
    name: str
    data: bytes
    insert: bool


def encode_journal(changes: Sequence[Change]) -> bytes:
    """The journal of ``changes``: a magic line, per change a JSON header line ``[domain, key, insert, size]``
    and ``size`` bytes, then ``sha256 <hex of everything before>``."""
    parts = [_MAGIC]
    for change in changes:
        header = json.dumps([change.domain.name, list(change.key), change.insert, len(change.data)])
        parts += [header.encode(), b"\n", change.data]
    body = b"".join(parts)
    return b"".join((body, _TRAILER, hashlib.sha256(body).hexdigest().encode(), b"\n"))


def decode_journal(data: bytes) -> list[tuple[DomainSpec, Key, bool, bytes]] | None:
    """The ``(domain, key, insert, data)`` of each change of a journal, or ``None`` if its checksum does not
    hold (a journal that was never committed whole).

    Raises:
        ValueError: the checksum holds but the content is not a journal this code reads (a newer format).
    """
    if len(data) < _TRAILER_SIZE + len(_MAGIC):
        return None
    body, trailer = data[:-_TRAILER_SIZE], data[-_TRAILER_SIZE:]
    if trailer != b"".join((_TRAILER, hashlib.sha256(body).hexdigest().encode(), b"\n")):
        return None
    if not body.startswith(_MAGIC):
        raise ValueError("not a version 1 unit journal")
    out = []
    position = len(_MAGIC)
    while position < len(body):
        end = body.index(b"\n", position)
        header = json.loads(body[position:end])
        try:
            name, key, insert, size = header
            position = end + 1 + size
        except (TypeError, ValueError):
            raise ValueError(f"unit journal entry header {header!r} is malformed") from None
        if name not in DOMAINS or type(insert) is not bool or position > len(body):
            raise ValueError(f"unit journal entry {header!r} is malformed")
        out.append((DOMAINS[name], tuple(key), insert, body[end + 1 : position]))
    return out


class UnitJournal:
    """The journal folder of one root: commit a unit, retire it, and find and claim those left by dead writers."""

    def __init__(self, root: str, *, fsync: bool, syncfs: bool, temp_prefix: str) -> None:
        self.folder = os.path.join(root, JOURNAL_FOLDER)
        self._fsync = fsync
        self._syncfs = fsync and syncfs
        self._temp_prefix = temp_prefix
        #: Journals were deleted since the folder was last fsynced (see :meth:`settle`).
        self._unsynced = False
        #: ``(path, lock descriptor)`` of journals whose units are in place but not yet durable (see :meth:`applied`).
        self._applied: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def commit(self, data: bytes) -> tuple[str, int]:
        """Write ``data`` as a new journal and commit it: temp file, fsync, rename, fsync of the folder (one fsync
        pair, none with ``fsync=False``). Return its path and the descriptor that holds its lock (for :meth:`retire`).

        With ``syncfs`` one ``syncfs(2)`` after the rename replaces the fsync pair: it flushes the journal, its name
        and the files the caller staged before it, together. A crash before it returns may leave the journal's
        name with its content incomplete: the checksum then fails, and the journal counts as never committed.
        """
        with self._lock:
            ready, self._applied = self._applied, []
        try:
            path, fd = self._commit(data)
        except BaseException:
            with self._lock:
                self._applied[:0] = ready
            raise
        for done in ready:  # the syncfs that committed this journal made their units durable too
            self.retire(*done)
        return path, fd

    def _commit(self, data: bytes) -> tuple[str, int]:
        tmp = os.path.join(self.folder, f"{self._temp_prefix}{os.urandom(8).hex()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            makedirs_durably(self.folder, fsync=self._fsync)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        # Names sort in commit order (of one process; units of two processes on one key are not ordered anyway).
        path = os.path.join(self.folder, f"{time.time_ns():020d}-{os.urandom(4).hex()}{JOURNAL_SUFFIX}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new inode: nobody else can hold it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync and not self._syncfs:
                os.fsync(fd)
            os.rename(tmp, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        try:
            # The commit point: from here the unit survives a power cut.
            if self._syncfs:
                sync_filesystem(self.folder)
            elif self._fsync:
                fsync_dir(self.folder)
        except BaseException:
            self.retire(path, fd)  # not known to be committed: take it back rather than half-promise it
            raise
        return path, fd

    def applied(self, path: str, fd: int) -> None:
        """Note that the unit of a journal is in place; retire the journal once the unit is durable.

        Without ``syncfs`` the caller has made the unit durable (or needs not): the journal goes now. With it the
        journal stays until the ``syncfs`` of the next :meth:`commit` or of :meth:`settle` has made the unit's files
        durable with the next unit's: one flush per unit instead of two. Until then it stays locked, so that no
        other process replays it; if this process dies first, the next ``open`` replays it, which rewrites the
        same bytes unless another process wrote one of its keys meanwhile (docs/decisions.md).
        """
        if not self._syncfs:
            self.retire(path, fd)
            return
        with self._lock:
            self._applied.append((path, fd))

    def retire(self, path: str, fd: int) -> None:
        """Delete a journal whose unit is applied and durable, and release its lock.

        The deletion itself is made durable lazily, by :meth:`settle` before this process's next write outside a
        unit (or the next commit's folder fsync): a journal that came back after a power cut would replay its
        unit over the later writes of the same keys.
        """
        try:
            os.unlink(path)
            self._unsynced = self._fsync
        finally:
            os.close(fd)

    def settle(self) -> None:
        """Before a write outside a unit (and at close): make the units in place durable and retire their
        journals, and make the deletions of retired journals durable. Costs nothing after no unit; after a run
        of units one ``syncfs`` (if one is waiting) and one folder fsync: a journal left in place would replay
        its unit over the write, after a crash."""
        with self._lock:
            applied, self._applied = self._applied, []
        if applied:
            try:
                sync_filesystem(self.folder)
            except BaseException:
                with self._lock:
                    self._applied[:0] = applied
                raise
            for done in applied:
                self.retire(*done)
        if self._unsynced:
            self._unsynced = False
            fsync_dir(self.folder)

    def pending(self) -> list[str]:
        """The paths of the committed journals in the folder, oldest first (live writers' included)."""
        try:
            names = os.listdir(self.folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [os.path.join(self.folder, n) for n in sorted(names) if n.endswith(JOURNAL_SUFFIX)]

    @contextlib.contextmanager
    def claim(self, path: str) -> Iterator[bytes | None]:
        """Lock the journal at ``path`` for the ``with`` block and yield its bytes; ``None`` if its writer is alive
        (holds the lock) or it was retired meanwhile. Delete it with :meth:`drop` inside the block."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                yield None  # its writer is still applying it
                return
            if os.fstat(fd).st_nlink == 0:
                yield None  # retired between the listing and the lock
                return
            parts = []
            while chunk := os.read(fd, 1 << 20):
                parts.append(chunk)
            yield b"".join(parts)
        finally:
            os.close(fd)

    def drop(self, path: str) -> None:
        """Delete a claimed journal (replayed, or never committed)."""
        os.unlink(path)
        self._unsynced = self._fsync
