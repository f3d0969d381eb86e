"""The unit journal of the file backend: one file per unit of work, whose arrival in the journal folder commits it.

A unit's record files are first staged as temp files beside their targets; the journal names each of them (temp
name and inode) with the key it stands for, and ends with a SHA-256 of all that precedes it, so that a journal
cut short or damaged (a power cut under ``durability="process"``) is told apart from a committed one and ignored.
Replaying a journal moves into place each staged file that is still there under its temp name: one that is gone
was moved already, and whatever replaced it since is newer and stays. So a replay never undoes a later write, and
is idempotent. The writer holds an exclusive ``flock(2)`` on its journal from before it is committed until it is
deleted; a replay skips a journal whose lock is taken. Layout and guarantees: docs/decisions.md, "File units of
work: one journal per unit".
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
from persist_core.validation import check_field

__all__ = ["JOURNAL_FOLDER", "Change", "Staged", "UnitJournal", "decode_journal", "encode_journal"]

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


@dataclass(frozen=True, slots=True)
class Staged:
    """A change of a committed unit as its journal records it: the temp file (name in the target's folder, and
    inode) that holds the record file for ``key`` of ``domain``."""

    domain: DomainSpec
    key: Key
    insert: bool
    temp: str
    inode: int


def encode_journal(staged: Sequence[Staged]) -> bytes:
    """The journal of ``staged``: a magic line, one JSON line ``[domain, key, insert, temp, inode]`` per
    change, then ``sha256 <hex of everything before>``."""
    lines = [_MAGIC]
    for item in staged:
        lines += [json.dumps([item.domain.name, list(item.key), item.insert, item.temp, item.inode]).encode(), b"\n"]
    body = b"".join(lines)
    return b"".join((body, _TRAILER, hashlib.sha256(body).hexdigest().encode(), b"\n"))


def decode_journal(data: bytes, temp_prefix: str) -> list[Staged] | None:
    """The changes of a journal, or ``None`` if its checksum does not hold (a journal never committed whole).

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
    for line in body[len(_MAGIC) :].splitlines():
        entry = json.loads(line)
        try:
            name, key, insert, temp, inode = entry
            domain = DOMAINS[name]
            fields = (*domain.context, domain.item) if domain.item is not None else domain.context
            checked = tuple(check_field(f, v) for f, v in zip(fields, key, strict=True))
            out.append(Staged(domain, checked, insert, temp, inode))
        except (TypeError, ValueError, KeyError):  # InvalidKeyError is a ValueError
            raise ValueError(f"unit journal entry {entry!r} is malformed") from None
        # A temp name is one file name in the target's folder: nothing else may be moved by a replay.
        if not (type(insert) is bool and type(inode) is int and isinstance(temp, str) and temp.startswith(temp_prefix)):
            raise ValueError(f"unit journal entry {entry!r} is malformed")
        if "/" in temp or "\0" in temp:
            raise ValueError(f"unit journal entry {entry!r} names a file outside its folder")
    return out


class UnitJournal:
    """The journal folder of one root: commit a unit, retire it, and find and claim those left by dead writers."""

    def __init__(self, root: str, *, fsync: bool, syncfs: bool, temp_prefix: str) -> None:
        self.folder = os.path.join(root, JOURNAL_FOLDER)
        self._fsync = fsync
        self._syncfs = fsync and syncfs
        self._temp_prefix = temp_prefix
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
        durable with the next unit's: one flush per unit instead of two. Until then it stays locked; if this
        process dies first, a replay finds every staged file moved and does nothing but delete the journal.
        """
        if not self._syncfs:
            self.retire(path, fd)
            return
        with self._lock:
            self._applied.append((path, fd))

    def retire(self, path: str, fd: int) -> None:
        """Delete a journal whose unit is applied and durable, and release its lock. (The deletion needs no
        flush: a journal back after a power cut finds its staged files moved, and a replay only deletes it.)"""
        try:
            os.unlink(path)
        finally:
            os.close(fd)

    def settle(self) -> None:
        """At close: make the units in place durable and retire their journals (one ``syncfs`` if any waits)."""
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

    def own(self) -> set[str]:
        """The paths of this journal folder's journals that this object holds (their units await a flush)."""
        with self._lock:
            return {path for path, _ in self._applied}

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
