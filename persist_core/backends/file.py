"""The file backend, the embedded default (CONTRACTS.md 6.1).

Layout under the root folder: ``<domain>/<context segment>/.../<item segment>.json``, or
``.../slot.json`` for slot domains. Each key field becomes one reversible, never-empty file-name segment
(:func:`encode_segment`), so distinct keys never share a file. A record file has two JSON lines: a small
header (``when``, ``removed``) and the value, readable with ``jq``.

Durability: every write goes to a uniquely named temp file in the target folder, is fsynced, renamed
over the target, and the folder is fsynced (``durability="process"`` skips both fsyncs: the data then
survives a killed process but not a power cut). First-write-wins domains use ``os.link`` from the
temp file, which fails atomically if the target exists, also between processes.

Units of work (``apply_unit``) are staged as temp files and committed by one journal file in ``<root>/.units``
that names them; ``open`` and every write complete the units of writers that died
(:mod:`persist_core.backends._file_journal`).
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import itertools
import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from persist_core.backend import PAGE_SIZE, Backend, Capabilities, ItemKey, Key, Record, comes_after
from persist_core.backends._durable import (
    can_sync_filesystem,
    durability_of,
    fsync_dir,
    makedirs_durably,
    sync_filesystem,
)
from persist_core.backends._file_journal import Change, Staged, UnitJournal, decode_journal, encode_journal
from persist_core.backends._file_leases import FileLeaseLog
from persist_core.backends._flock import flock_within
from persist_core.deadlines import DEFAULT_TIMEOUT_SECONDS, parse_timeout
from persist_core.domains import DOMAINS, DomainSpec, FieldType, KeyField, Kind
from persist_core.errors import (
    BackendUnavailableError,
    ConfigurationError,
    CorruptRecordError,
    InvalidKeyError,
    PersistError,
)
from persist_core.units import Write, WriteOp
from persist_core.urls import (
    check_keywords,
    check_options,
    mask_url,
    parse_boolean,
    parse_options,
    path_of,
)
from persist_core.validation import check_field, check_stored, decode_stored

__all__ = ["FileBackend", "decode_segment", "encode_segment"]

log = logging.getLogger("persist.file")

SLOT_FILE = "slot.json"
SUFFIX = ".json"
TEMP_PREFIX = ".tmp-"
QUARANTINE = ".quarantine"
#: Temp files younger than this may belong to a live writer in another process; older ones are debris.
TEMP_GRACE_SECONDS = 120.0
_EMPTY_SEGMENT = "~"
#: What the quarantine step returns when the file it moved was a new record, not the damaged one.
_REPLACED = "<replaced>"
_BOOL_SEGMENTS = {True: "true", False: "false"}


def encode_segment(field: KeyField, value: Any) -> str:
    """Encode one key field as a file-name segment: never empty, never starting with ``.``, <= 240 bytes.

    Strings are percent-encoded except ``A-Z a-z 0-9 - _ .`` (a leading ``.`` is encoded too); the
    empty string (only ``frame_name``) is ``~``, which no other value encodes to. The encoding is
    injective, and at most 3 bytes per input byte keeps 80-byte keys under the 255-byte name limit.
    """
    if field.type is FieldType.BOOL:
        return _BOOL_SEGMENTS[value]
    if field.type is FieldType.INT:
        return str(value)
    if value == "":
        return _EMPTY_SEGMENT
    segment = quote(value, safe="-_.").replace("~", "%7E")
    if segment[0] == ".":
        segment = "%2E" + segment[1:]
    return segment


def decode_segment(field: KeyField, segment: str) -> Any:
    """Inverse of :func:`encode_segment`."""
    if field.type is FieldType.BOOL:
        return segment == "true"
    if field.type is FieldType.INT:
        return int(segment)
    if segment == _EMPTY_SEGMENT:
        return ""
    return unquote(segment, errors="strict")


#: The query options of a ``file:`` URL, and what each accepts.
_URL_OPTIONS = {
    "durability": "full|process",
    "verify": "also read every record and sweep every folder at open (slow on a large dump); 1/0, on/off",
    "timeout": "seconds a write waits for another writer's folder lock (default 5)",
}
#: The keyword options of :meth:`FileBackend.from_url` (setup's ``options={"file": {...}}``).
_KEYWORD_OPTIONS = {"durability": "full|process", "verify_on_open": "bool", "timeout": "seconds"}


class FileBackend(Backend):
    """Records as files under a root folder; shared between processes; survives kills (and power cuts
    unless ``durability="process"``)."""

    capabilities = Capabilities(ownership=True, listing=True, deletion=True, atomic_units=True)

    def __init__(
        self,
        root: str | os.PathLike[str] = "./dump",
        *,
        durability: str = "full",
        verify_on_open: bool = False,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        url: str | None = None,
    ) -> None:
        if durability not in ("full", "process"):
            raise ConfigurationError(f"durability must be 'full' or 'process', not {durability!r}")
        self.root = Path(root).absolute()
        self.url = url or f"file:{self.root}"
        self.timeout = parse_timeout(timeout, f"for {self.url}")
        self._fsync = durability == "full"
        self._verify = verify_on_open
        self._opened = False
        self._open_lock = threading.Lock()
        self._dirs: dict[tuple[str, Key], str] = {}
        self._read_only = False
        self._foreign_names: set[str] = set()  # file names already logged as foreign (log once per name)
        self._listed: tuple[str, int, list[tuple[Any, str]]] | None = None  # the folder _items read last
        self._swept: set[str] = set()  # folders whose stale temp files this process has swept
        self._root_prefix = os.path.join(os.fspath(self.root), "")
        # A unit's files are made durable together by syncfs(2) where it exists, else each one on its own.
        self._syncfs = self._fsync and can_sync_filesystem()
        self._journal = UnitJournal(
            os.fspath(self.root), fsync=self._fsync, syncfs=self._syncfs, temp_prefix=TEMP_PREFIX
        )
        self._journals_seen = -1  # the journal folder's mtime when this backend last replayed journals
        self._journals_held = False  # ... and whether a live writer held one of them then

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FileBackend:
        """Build from ``file:PATH[?durability=process&verify=0]``; keyword options override the query.

        Raises:
            ConfigurationError: an unknown query or keyword option, or a bad value, listing the known ones.
        """
        query = parse_options(url)
        check_options(url, query, _URL_OPTIONS)
        durability = durability_of(url, query, _URL_OPTIONS)
        check_keywords(url, options, _KEYWORD_OPTIONS)
        merged: dict[str, Any] = {
            "durability": durability,
            "verify_on_open": parse_boolean(url, "verify", query.get("verify", "0")),
            "timeout": query.get("timeout", DEFAULT_TIMEOUT_SECONDS),
            **options,
        }
        return cls(path_of(url, "./dump"), url=mask_url(url), **merged)

    # ---------------------------------------------------------------------------------- lifecycle

    def open(self) -> None:
        with self._open_lock:
            if self._opened:
                return
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendUnavailableError(f"file backend root {self.root} is not writable: {exc}") from exc
            probe = self.root / f"{TEMP_PREFIX}probe-{os.getpid()}"
            try:
                probe.write_bytes(b"")
                probe.unlink()
                self._read_only = False
            except OSError as exc:
                if not os.access(self.root, os.R_OK | os.X_OK):
                    raise BackendUnavailableError(f"file backend root {self.root} is not readable: {exc}") from exc
                # A dump on a read-only mount (or of another user) can still be read: an archive, a copy
                # to inspect. Writes then fail one by one with BackendUnavailableError.
                self._read_only = True
                log.info("file backend root %s is read-only (%s): reads only, no start-up sweep writes", self.root, exc)
            # Start-up cost must not grow with the records stored (CONTRACTS.md 3.6): records are checked when
            # read, and temp files are swept per folder at this process's first write there (_sweep_folder).
            # verify=1 asks for the full walk of old, e.g. after a disk incident.
            try:
                # Before any sweep: the files a dead writer staged for a committed unit are the unit.
                self._replay_if_due()
            except PersistError:
                raise
            except OSError as exc:
                raise _translate(exc, self._journal.folder) from exc
            if self._verify:
                self._sweep()
            else:
                self._sweep_folder(os.fspath(self.root))
            self._opened = True

    def close(self) -> None:
        # docstring inherited; also makes the last units durable and deletes their journals (UnitJournal.settle)
        try:
            self._journal.settle()
        except OSError as exc:
            raise _translate(exc, self._journal.folder) from exc

    def _sweep_folder(self, folder: str) -> None:
        """Remove the stale temp files of one folder, once per process (the first write there calls it).

        A temp file younger than :data:`TEMP_GRACE_SECONDS` may belong to a writer in another process and
        stays. One ``scandir`` of the folder, without a ``stat`` per record: only temp names are looked at.
        """
        if folder in self._swept:
            return
        if len(self._swept) > 65_536:
            self._swept.clear()
        self._swept.add(folder)
        if self._read_only:
            return
        now = time.time()
        try:
            names = [e.name for e in os.scandir(folder) if e.name.startswith(TEMP_PREFIX)]
        except OSError:
            return  # a missing folder has no debris; any other problem surfaces at the write itself
        for name in names:
            path = os.path.join(folder, name)
            try:
                if now - os.lstat(path).st_mtime > TEMP_GRACE_SECONDS:
                    os.unlink(path)
                    log.info("removed stale temp file %s", path)
            except FileNotFoundError:
                pass

    def _sweep(self) -> None:
        """The full start-up walk of ``verify=1``: remove stale temp files everywhere and quarantine every
        record that cannot be decoded (never delete one)."""
        now = time.time()
        quarantine = self.root / QUARANTINE
        # os.walk does not descend into links to folders (followlinks=False); links are refused by _dir.
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root:
                dirnames[:] = [d for d in dirnames if d in DOMAINS]
                continue
            spec = DOMAINS[Path(dirpath).relative_to(self.root).parts[0]]
            for name in filenames:
                path = os.path.join(dirpath, name)
                if name.startswith(TEMP_PREFIX):
                    try:
                        if not self._read_only and now - os.lstat(path).st_mtime > TEMP_GRACE_SECONDS:
                            os.unlink(path)
                            log.info("removed stale temp file %s", path)
                    except FileNotFoundError:
                        pass
                elif self._verify and name.endswith(SUFFIX) and not name.startswith("."):
                    try:
                        decode_stored(spec, _parse(_read_bytes(path)[0]).payload)
                    except FileNotFoundError:
                        pass
                    except PermissionError as exc:
                        # Not corruption: the bytes may be fine, the process runs as the wrong user or a
                        # chmod went wrong. Moving the file would hide a state the operator can fix.
                        raise BackendUnavailableError(
                            f"file backend cannot read record {path}: {exc.strerror}; fix its owner or mode"
                        ) from exc
                    except (ValueError, _NotARecordError) as exc:
                        self._quarantine(Path(path), quarantine, str(exc))

    def _quarantine(self, path: Path, quarantine: Path, reason: str) -> None:
        if self._read_only:
            log.error("unreadable record %s left in place on a read-only root (%s)", path, reason)
            return
        target = quarantine / path.relative_to(self.root)
        target = target.with_name(f"{target.name}.{time.time_ns()}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        log.error("quarantined unreadable record %s -> %s (%s)", path, target, reason)

    def lease_log(self) -> FileLeaseLog:
        # docstring inherited
        return FileLeaseLog(self.root, fsync=self._fsync)

    def leave_interrupted_write(self, domain: DomainSpec, key: Key, record: Record) -> bool:
        # docstring inherited: a write that died between its temp file and the rename
        folder, name = self._path(domain, key)
        self._temp(folder, name, _format(record))
        return True

    # ------------------------------------------------------------------------------------- paths

    def _dir(self, domain: DomainSpec, context: Key) -> str:
        cache_key = (domain.name, context)
        path = self._dirs.get(cache_key)
        if path is None:
            parts = [encode_segment(f, v) for f, v in zip(domain.context, context, strict=True)]
            path = os.path.join(self.root, domain.name, *parts)
            self._refuse_links(domain.name, parts)  # once per folder: the result is cached below
            if len(self._dirs) > 65_536:
                self._dirs.clear()
            self._dirs[cache_key] = path
        return path

    def _refuse_links(self, domain_name: str, parts: list[str]) -> None:
        """Raise :class:`ConfigurationError` if a folder on the way to a context folder is a link.

        A link inside the root would send writes outside it. One ``lstat`` per existing level, paid only
        when a context folder enters the ``_dirs`` cache; levels that do not exist yet are created by us.
        """
        path = os.fspath(self.root)
        for part in (domain_name, *parts):
            path = os.path.join(path, part)
            try:
                mode = os.lstat(path).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as exc:
                raise _translate(exc, path) from exc
            if stat.S_ISLNK(mode):
                log.error("refused a link inside the file backend root: %s -> %s", path, os.readlink(path))
                raise ConfigurationError(
                    f"{path} is a link inside the file backend root {self.root}: links are never followed "
                    "there (a write would land outside the root); move the data instead of linking it"
                )

    def _path(self, domain: DomainSpec, key: Key) -> tuple[str, str]:
        if domain.item is None:
            return self._dir(domain, key), SLOT_FILE
        return self._dir(domain, key[:-1]), encode_segment(domain.item, key[-1]) + SUFFIX

    # ------------------------------------------------------------------------------------ writes

    def _temp(self, folder: str, name: str, data: bytes, *, sync: bool | None = None) -> str:
        """Write ``data`` to a new temp file in ``folder`` (created on demand), fsynced unless ``sync`` is false
        (default: the durability option); return its path."""
        sync = self._fsync if sync is None else sync
        # The name stays short: an encoded key may already use 245 of the 255 bytes a file name may have.
        if folder not in self._swept:
            self._sweep_folder(folder)
        tmp = os.path.join(folder, f"{TEMP_PREFIX}{_temp_names.token}{next(_temp_names.counter):x}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            makedirs_durably(folder, fsync=sync)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            written = os.write(fd, data)
            if written < len(data):  # a regular file takes it whole, but write(2) may stop short
                view = memoryview(data)[written:]
                while view:
                    view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
        return tmp

    def _sync_dir(self, folder: str) -> None:
        if self._fsync:
            fsync_dir(folder)

    # docstrings inherited from Backend

    def put(self, domain: DomainSpec, key: Key, record: Record) -> None:
        folder, name = self._path(domain, key)
        try:
            self._replay_if_due()
            if domain.soft_delete:
                # Serialised with mark_removed of the same folder (see there); other domains have no
                # read-modify-write to protect and pay nothing.
                with _locked_folder(folder, create=True, fsync=self._fsync, timeout=self.timeout, url=self.url):
                    self._replace(folder, name, record)
            else:
                self._replace(folder, name, record)
        except PersistError:
            raise  # a BackendTimeoutError is an OSError too (ConnectionError), and already typed
        except OSError as exc:
            raise _translate(exc, folder) from exc

    def _replace(self, folder: str, name: str, record: Record) -> None:
        """Atomically replace ``folder/name`` with ``record`` (temp file, rename, folder fsync)."""
        tmp = self._temp(folder, name, _format(record))
        try:
            os.replace(tmp, os.path.join(folder, name))
        except BaseException:
            _unlink_quietly(tmp)
            raise
        self._sync_dir(folder)

    def insert_many(self, domain: DomainSpec, items: Sequence[tuple[Key, Record]]) -> int:
        stored = 0
        touched: set[str] = set()
        try:
            self._replay_if_due()
            for key, record in items:
                folder, name = self._path(domain, key)
                target = os.path.join(folder, name)
                if os.path.exists(target):
                    continue
                tmp = self._temp(folder, name, _format(record))
                try:
                    os.link(tmp, target)  # fails if the target exists: first write wins, across processes
                    stored += 1
                    touched.add(folder)
                except FileExistsError:
                    pass
                finally:
                    _unlink_quietly(tmp)
            for folder in touched:
                self._sync_dir(folder)
        except OSError as exc:
            raise _translate(exc, self.root) from exc
        return stored

    def mark_removed(self, domain: DomainSpec, key: Key) -> None:
        # A read-modify-write: unlocked, a put landing between the read and the rename was undone by the
        # older payload written back (issue 9: 1,677 times in a 20 s two-thread race). put of a soft-delete
        # domain takes the same flock(2) on the folder, which excludes other threads and processes alike
        # (docs/decisions.md, "Soft delete holds the folder's lock").
        folder, name = self._path(domain, key)
        try:
            self._replay_if_due()
            with _locked_folder(folder, create=False, fsync=self._fsync, timeout=self.timeout, url=self.url) as exists:
                if not exists:
                    return  # no folder, no record: removing a missing key is a no-op
                record = self.get(domain, key)
                if record is not None and not record.removed:
                    self._replace(folder, name, Record(record.payload, record.when, removed=True))
        except PersistError:
            raise
        except OSError as exc:
            raise _translate(exc, folder) from exc

    # ----------------------------------------------------------------------------- units of work

    def apply_unit(self, writes: Sequence[Write]) -> None:
        # docstring inherited. The design and what it guarantees: docs/decisions.md, "File units of work".
        try:
            self._replay_if_due()
            with contextlib.ExitStack() as locks:
                changes = self._resolve(writes, locks)
                if changes:
                    self._apply_unit(changes)
        except PersistError:
            raise
        except OSError as exc:
            raise _translate(exc, self.root) from exc

    def _resolve(self, writes: Sequence[Write], locks: contextlib.ExitStack) -> list[Change]:
        """The record files ``writes`` leave, one per key: what the calls they stand for would write one by one.

        The folders of soft-delete domains are locked first (in path order, so two units cannot deadlock) and
        stay locked until the unit is applied, as ``put`` and ``mark_removed`` hold them: a remove reads the
        record it flags under that lock. Reading or locking may raise; nothing is written yet then.
        """
        paths = [self._path(w.domain, w.key) for w in writes]
        soft = {p[0]: False for w, p in zip(writes, paths, strict=True) if w.domain.soft_delete}
        for write, (folder, _) in zip(writes, paths, strict=True):
            if write.domain.soft_delete and write.op is not WriteOp.REMOVE:
                soft[folder] = True  # a put creates the folder; a remove of a missing folder has nothing to flag
        self._lock_folders(soft, locks)
        final: dict[tuple[str, str], tuple[Write, Record, bool]] = {}
        for write, path in zip(writes, paths, strict=True):
            earlier = final.get(path)
            if write.op is WriteOp.REMOVE:
                current = earlier[1] if earlier is not None else self.get(write.domain, write.key)
                if current is not None and not current.removed:
                    flagged = Record(current.payload, current.when, removed=True)
                    final[path] = (write, flagged, earlier[2] if earlier is not None else False)
            elif write.record is None:  # pragma: no cover - units.Write carries a record for put and insert
                raise TypeError(f"a {write.op.value} write carries no record")
            elif write.op is WriteOp.PUT:
                final[path] = (write, write.record, earlier[2] if earlier is not None else False)
            elif earlier is None and not os.path.exists(os.path.join(*path)):
                final[path] = (write, write.record, True)  # first write wins, in the unit and against the disk
        return [
            Change(write.domain, write.key, folder, name, _format(record), insert)
            for (folder, name), (write, record, insert) in final.items()
        ]

    def _lock_folders(self, folders: dict[str, bool], locks: contextlib.ExitStack) -> None:
        """Take the flock of each folder (mapped to whether to create it), in path order, until ``locks`` closes."""
        for folder in sorted(folders):
            locks.enter_context(
                _locked_folder(folder, create=folders[folder], fsync=self._fsync, timeout=self.timeout, url=self.url)
            )

    def _apply_unit(self, changes: Sequence[Change]) -> None:
        """Stage ``changes`` as temp files beside their targets, commit a journal that names them, move them into
        place, and hand the journal over to be deleted once they are durable.

        With ``durability="full"`` and ``syncfs`` nothing is fsynced on its own: the journal's commit flushes the
        staged files with it (so that the renames below find their blocks allocated and start no write-back of
        their own), and the next commit's flush makes the moved files durable before the journal is deleted
        (:meth:`UnitJournal.applied`). Without ``syncfs`` each staged file and its folder is fsynced before the
        commit, and each target folder after the moves.
        """
        temps: list[str] = []
        staged: list[Staged] = []
        fsync_each = self._fsync and not self._syncfs
        try:
            for change in changes:
                tmp = self._temp(change.folder, change.name, change.data, sync=fsync_each)
                temps.append(tmp)
                name = os.path.basename(tmp)
                staged.append(Staged(change.domain, change.key, change.insert, name, os.lstat(tmp).st_ino))
            if fsync_each:
                for folder in {c.folder for c in changes}:
                    fsync_dir(folder)  # the staged names must outlive a power cut with the journal that names them
            journal = self._journal.commit(encode_journal(staged))
        except BaseException:
            for tmp in temps:
                _unlink_quietly(tmp)
            raise
        # Committed. If moving fails now, the journal stays: the next write of any backend on this root, or
        # the next open, replays it (its lock goes with the descriptor).
        try:
            touched = self._install(changes, temps)
            if fsync_each:
                for folder in touched:
                    fsync_dir(folder)
        except BaseException:
            os.close(journal[1])
            log.error("unit journal %s committed but not applied whole; the next write or open replays it", journal[0])
            raise
        self._journal.applied(*journal)

    @staticmethod
    def _install(changes: Sequence[Change], temps: Sequence[str]) -> set[str]:
        """Move each staged temp file to its target (an insert only if the target is absent); return the folders
        that changed."""
        touched = set()
        for change, tmp in zip(changes, temps, strict=True):
            target = os.path.join(change.folder, change.name)
            if change.insert:
                try:
                    os.link(tmp, target)  # first write wins, also against another process
                    touched.add(change.folder)
                except FileExistsError:
                    pass
                finally:
                    os.unlink(tmp)
            else:
                os.replace(tmp, target)
                touched.add(change.folder)
        return touched

    def _replay_if_due(self) -> None:
        """Before a write: replay the journals of writers that died since this backend last looked.

        One ``stat`` of the journal folder when nothing changed there. A journal whose writer is alive (its
        lock is held) is looked at again before each write until it is gone: the writer may die with it.
        """
        try:
            mtime = os.stat(self._journal.folder).st_mtime_ns
        except FileNotFoundError:
            return
        if mtime != self._journals_seen or self._journals_held:
            self._replay_units()
            self._journals_seen = mtime

    def _replay_units(self) -> None:
        """Replay every committed journal that no live writer holds, oldest first, and delete it; delete a
        journal whose checksum does not hold (it was never committed)."""
        if self._read_only:
            if self._journal.pending():
                log.error("unit journals in %s not replayed: the root is read-only", self._journal.folder)
            return
        self._sweep_folder(self._journal.folder)
        own = self._journal.own()
        held = False
        for path in self._journal.pending():
            if path in own:
                continue
            with self._journal.claim(path) as data:
                if data is None:
                    held = held or os.path.exists(path)
                    continue
                try:
                    staged = decode_journal(data, TEMP_PREFIX)
                except ValueError as exc:
                    self._quarantine(Path(path), self.root / QUARANTINE, f"unit journal not understood: {exc}")
                    continue
                if staged is None:
                    log.warning("removed unit journal %s: torn or damaged, so never committed", path)
                else:
                    self._replay(staged)
                    log.info("replayed unit journal %s", path)
                self._journal.drop(path)
        self._journals_held = held

    def _replay(self, staged: Sequence[Staged]) -> None:
        """Move into place each staged file of a committed unit that is still under its temp name (with its
        inode): the others were moved by the writer, and what replaced them since is newer and stays."""
        changes, temps = [], []
        for item in staged:
            folder, name = self._path(item.domain, item.key)
            tmp = os.path.join(folder, item.temp)
            try:
                if os.lstat(tmp).st_ino != item.inode:
                    continue
            except (FileNotFoundError, NotADirectoryError):
                continue
            changes.append(Change(item.domain, item.key, folder, name, b"", item.insert))
            temps.append(tmp)
        with contextlib.ExitStack() as locks:
            self._lock_folders({c.folder: True for c in changes if c.domain.soft_delete}, locks)
            touched = self._install(changes, temps)
        if self._syncfs and touched:
            sync_filesystem(self.root)
        elif self._fsync:
            for folder in touched:
                fsync_dir(folder)

    # ------------------------------------------------------------------------------------- reads

    def get(self, domain: DomainSpec, key: Key) -> Record | None:
        folder, name = self._path(domain, key)
        record = self._read_record(domain, folder, name)
        if record is None and domain.kind is not Kind.CANDLE:
            self._refuse_quarantined(folder, name)
        return record

    def _read_record(self, domain: DomainSpec, folder: str, name: str) -> Record | None:
        """The record in ``folder/name``, checked as the stores will decode it (verify on read).

        An unreadable record is moved to the quarantine folder and logged, never deleted (CONTRACTS.md 6.1).
        A candle then reads as missing: the candle cache is refilled from the exchange and written anew. Any
        other record raises :class:`CorruptRecordError`, now and at every later read of its key until the key
        is written again or the operator takes the copy out of the quarantine: a live bot must not restart
        into "no position" because its signal file was damaged (docs/decisions.md, "Start-up").
        """
        path = os.path.join(folder, name)
        try:
            data, inode = _read_bytes(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except _NotARecordError as exc:
            return self._unreadable(domain, folder, name, None, f"not a regular file: {exc}")
        except OSError as exc:
            raise _translate(exc, path) from exc
        try:
            record = _parse(data)
            check_stored(domain, record.payload)  # the store's decode takes the value: one decode per read
        except ValueError as exc:
            return self._unreadable(domain, folder, name, inode, f"unreadable record file: {exc}")
        return record

    def _unreadable(self, domain: DomainSpec, folder: str, name: str, inode: int | None, reason: str) -> Record | None:
        path = os.path.join(folder, name)
        moved = self._quarantine_found(path, inode, reason)
        if moved is _REPLACED:
            return self._read_record(domain, folder, name)  # a writer put a new record in its place: read that
        if domain.kind is Kind.CANDLE:
            return None
        if moved is None:
            raise CorruptRecordError(f"record {path} is {reason} (left in place: the root is read-only)")
        raise CorruptRecordError(
            f"record {path} was {reason}; moved to {moved}. Reads of its key fail until it is written again "
            "or the copy is taken out of the quarantine (restore a repaired copy to its place, or delete it)"
        )

    def _quarantine_found(self, path: str, inode: int | None, reason: str) -> str | None:
        """Move the unreadable record a read found to the quarantine; return where it went (``None``: left).

        A writer may have renamed a new record over the damaged one since it was read: the file moved is then
        checked by inode, and a record that is not the damaged one goes back to its place (a link, which
        fails if a newer one is there already; then the moved one, older, stays in the quarantine).
        """
        if self._read_only:
            log.error("unreadable record %s left in place on a read-only root (%s)", path, reason)
            return None
        target = os.path.join(self.root, QUARANTINE, os.path.relpath(path, self.root)) + f".{time.time_ns()}"
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.rename(path, target)
        except FileNotFoundError:
            return target  # gone meanwhile (another reader quarantined it, or it was deleted)
        except OSError as exc:
            raise _translate(exc, path) from exc
        if inode is not None and os.lstat(target).st_ino != inode:
            try:
                os.link(target, path)
            except FileExistsError:
                log.warning("kept %s in the quarantine: moved there in a race, older than the record in place", target)
            else:
                os.unlink(target)
            return _REPLACED
        log.error("quarantined unreadable record %s -> %s (%s)", path, target, reason)
        return target

    def _refuse_quarantined(self, folder: str, name: str) -> None:
        """Raise :class:`CorruptRecordError` if a missing record's key has a copy in the quarantine.

        One ``stat`` that fails at the first missing folder in the usual case (nothing quarantined there).
        """
        if not folder.startswith(self._root_prefix):
            return
        quarantined = os.path.join(self.root, QUARANTINE, folder[len(self._root_prefix) :])
        try:
            entries = [e.name for e in os.scandir(quarantined) if e.name.startswith(name + ".")]
        except OSError:
            return
        if entries:
            copy = os.path.join(quarantined, max(entries))
            raise CorruptRecordError(
                f"record {os.path.join(folder, name)} was unreadable and is in the quarantine ({copy}); reads "
                "of its key fail until it is written again or the copy is taken out of the quarantine"
            )

    def scan(
        self,
        domain: DomainSpec,
        context: Key,
        start: ItemKey | None = None,
        stop: ItemKey | None = None,
    ) -> list[tuple[ItemKey, Record]]:
        item_field = domain.item
        if item_field is None:
            raise TypeError(f"domain {domain.name!r} has no item key to scan")
        folder = self._dir(domain, context)
        try:
            # is_file(follow_symlinks=False) comes from the directory entry's type: no extra system call.
            names = [
                entry.name
                for entry in os.scandir(folder)
                if entry.name.endswith(SUFFIX)
                and not entry.name.startswith(".")
                and entry.is_file(follow_symlinks=False)
            ]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise _translate(exc, folder) from exc
        items = []
        for name in names:
            item = self._item_of(item_field, name, folder)
            if item is None:
                continue
            if (start is None or item >= start) and (stop is None or item < stop):
                items.append(item)
        items.sort()
        out = []
        for item in items:
            record = self.get(domain, (*context, item))
            if record is not None:  # may vanish only if removed by hand meanwhile
                out.append((item, record))
        return out

    def _item_of(self, field: KeyField, name: str, folder: str) -> Any:
        """The item key a record file name encodes, or ``None`` (logged once) for a foreign name."""
        return self._field_of(field, name[: -len(SUFFIX)], name, folder)

    def _field_of(self, field: KeyField, segment: str, name: str, folder: str) -> Any:
        """The key field value that the segment of file or folder ``name`` encodes, or ``None`` (logged once).

        A name is ours only if it decodes to a valid key that encodes back to exactly that name: ``%FF``
        (not UTF-8), ``abc`` for a timestamp or ``%41`` (a second spelling of ``A``) are files someone else
        put there, and must not break a listing or show up as a second copy of a key.
        """
        try:
            item = check_field(field, decode_segment(field, segment))
            if encode_segment(field, item) == segment:
                return item
            reason = "not the canonical spelling of its key"
        except (ValueError, InvalidKeyError) as exc:  # UnicodeDecodeError is a ValueError
            reason = str(exc)
        path = os.path.join(folder, name)
        if path not in self._foreign_names:
            self._foreign_names.add(path)
            log.warning("skipped foreign file %r in %s: %s", name, folder, reason)
        return None

    # ------------------------------------------------------------------ operating the state

    def _contexts(self, domain: DomainSpec, after: Key | None) -> Iterator[tuple[Key, str]]:
        """``(context, folder)`` of every context folder of ``domain`` in key order that may hold a record
        listed after ``after``: a subtree whose keys all come before the cursor is never read."""
        fields = domain.context

        def walk(folder: str, prefix: Key) -> Iterator[tuple[Key, str]]:
            depth = len(prefix)
            if depth == len(fields):
                yield prefix, folder
                return
            field = fields[depth]
            try:
                entries = [
                    e.name for e in os.scandir(folder) if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
                ]
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as exc:
                raise _translate(exc, folder) from exc
            children = []
            for name in entries:
                value = self._field_of(field, name, name, folder)
                if value is not None:
                    children.append((value, name))
            children.sort()
            for value, name in children:
                key = (*prefix, value)
                if after is not None and not _may_follow(key, after):
                    continue
                yield from walk(os.path.join(folder, name), key)

        yield from walk(os.path.join(self.root, domain.name), ())

    def _items(self, domain: DomainSpec, folder: str) -> list[tuple[Any, str]]:
        """``(item key, file name)`` of the records in a context folder, ascending (slot: ``((), slot.json)``).

        The last folder's list is kept while the folder's mtime stays the same: paging through one large
        context (a year of candles) then reads the folder once, not once per page. Any write or delete in the
        folder changes its mtime; a record written or deleted in the same clock tick may be missed or listed
        as gone, which a listing that pages while others write allows (``Backend.list_records``).
        """
        try:
            mtime = os.stat(folder).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise _translate(exc, folder) from exc
        cached = self._listed
        if cached is not None and cached[0] == folder and cached[1] == mtime:
            return cached[2]
        items = self._scan_items(domain, folder)
        self._listed = (folder, mtime, items)
        return items

    def _scan_items(self, domain: DomainSpec, folder: str) -> list[tuple[Any, str]]:
        try:
            names = [
                e.name
                for e in os.scandir(folder)
                if e.name.endswith(SUFFIX) and not e.name.startswith(".") and e.is_file(follow_symlinks=False)
            ]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise _translate(exc, folder) from exc
        if domain.item is None:
            return [((), SLOT_FILE)] if SLOT_FILE in names else []
        items = []
        for name in names:
            item = self._item_of(domain.item, name, folder)
            if item is not None:
                items.append(((item,), name))
        items.sort()
        return items

    def list_contexts(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, int]]:
        out: list[tuple[Key, int]] = []
        for context, folder in self._contexts(domain, after):
            if len(out) == limit:
                break
            if comes_after(context, after):
                count = len(self._items(domain, folder))
                if count:
                    out.append((context, count))
        return out

    def list_records(
        self, domain: DomainSpec, *, after: Key | None = None, limit: int = PAGE_SIZE
    ) -> list[tuple[Key, Record]]:
        out: list[tuple[Key, Record]] = []
        width = len(domain.context)
        for context, folder in self._contexts(domain, after):
            items = self._items(domain, folder)
            start = 0
            if after is not None and len(after) > width and after[:width] == context:
                start = bisect.bisect_right(items, (after[width:],), key=lambda pair: pair[:1])  # past the cursor
            for item, name in items[start:]:
                key = (*context, *item)
                if not comes_after(key, after):
                    continue
                if len(out) == limit:
                    return out
                record = self._read_record(domain, folder, name)
                if record is not None:  # deleted since the folder was listed (or a quarantined candle)
                    out.append((key, record))
        return out

    def delete_records(self, domain: DomainSpec, keys: Sequence[Key]) -> int:
        deleted = 0
        by_folder: dict[str, list[str]] = {}
        for key in keys:
            folder, name = self._path(domain, key)
            by_folder.setdefault(folder, []).append(name)
        try:
            self._replay_if_due()
            for folder, names in by_folder.items():
                # Soft-delete domains: under the folder's lock, as their put and mark_removed are.
                lock = (
                    _locked_folder(folder, create=False, fsync=self._fsync, timeout=self.timeout, url=self.url)
                    if domain.soft_delete
                    else contextlib.nullcontext(True)
                )
                with lock:
                    gone = 0
                    for name in names:
                        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                            os.unlink(os.path.join(folder, name))
                            gone += 1
                    if gone:
                        self._sync_dir(folder)
                    deleted += gone
        except PersistError:
            raise
        except OSError as exc:
            raise _translate(exc, self.root) from exc
        return deleted

    def read_window(
        self, domain: DomainSpec, context: Key, start: int, stop: int, step: int
    ) -> list[tuple[ItemKey, Record]]:
        # Point lookups: a candle folder can hold years of files, and listing it costs more than the window.
        out = []
        for ts in range(start, stop, step):
            record = self.get(domain, (*context, ts))
            if record is None:
                break
            out.append((ts, record))
        return out


def _may_follow(prefix: Key, after: Key) -> bool:
    """Whether some key starting with ``prefix`` may come after the cursor ``after`` (see ``comes_after``)."""
    width = min(len(prefix), len(after))
    if prefix[:width] != after[:width]:
        return prefix[:width] > after[:width]
    return len(prefix) < len(after)  # equal so far: a deeper field decides, unless the cursor is covered


@contextlib.contextmanager
def _locked_folder(folder: str, *, create: bool, fsync: bool, timeout: float, url: str) -> Iterator[bool]:
    """Hold an exclusive ``flock(2)`` on ``folder`` for the ``with`` block; yield whether the folder exists.

    The lock belongs to the open file description, so two threads of one process that each open the
    folder exclude each other just as two processes do, and it is released when the descriptor is
    closed, also by a process that dies. A missing folder is created (and durably) when ``create`` is
    set, else the block runs unlocked with ``False``. flock on NFS is emulated with byte-range locks
    (flock(2), NOTES), which still exclude each other between clients.

    The wait is bounded by ``timeout``: a lock held longer (a writer stopped while holding it) gives a
    :class:`BackendTimeoutError` rather than blocking the caller without end.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:  # not NotADirectoryError: a file where a folder belongs is broken storage, not "missing"
        if not create:
            fd = -1
        else:
            makedirs_durably(folder, fsync=fsync)
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    if fd < 0:
        yield False
        return
    try:
        flock_within(
            fd,
            timeout,
            f"file backend {url}: writing under {folder} waited {timeout:g} s for another writer's folder lock "
            "(a writer stopped while holding it?)",
        )
        yield True
    finally:
        os.close(fd)  # releases the lock


class _TempNames:
    """Unique temp file names without a system call each: a random token per process and a counter.

    ``os.urandom`` per write was a ``getrandom(2)`` call on the write path. The token is drawn again in a
    forked child, so parent and child never share it; ``O_EXCL`` still refuses a name that exists.
    """

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self.token = os.urandom(6).hex()
        self.counter = itertools.count()


_temp_names = _TempNames()
os.register_at_fork(after_in_child=_temp_names.renew)


def _format(record: Record) -> bytes:
    when = "null" if record.when is None else str(record.when)
    removed = "true" if record.removed else "false"
    return f'{{"when":{when},"removed":{removed}}}\n{record.payload}\n'.encode()


# Headers exactly as _format writes them are parsed without json.loads, which costs more than the rest of
# a small read; anything else (a hand-edited header, say) takes the general path below.
_HEADER = re.compile(rb'\{"when":(null|-?(?:0|[1-9][0-9]*)),"removed":(true|false)\}')


def _parse(data: bytes) -> Record:
    """Parse a record file; raise ``ValueError`` (``UnicodeDecodeError`` is one) if it is not one."""
    head, sep, body = data.partition(b"\n")
    if not sep or not body.endswith(b"\n"):
        raise ValueError("record file is incomplete")
    match = _HEADER.fullmatch(head)
    if match is not None:
        when_text, removed_text = match.groups()
        when_ms = None if when_text == b"null" else int(when_text)
        return Record(body[:-1].decode("utf-8"), when_ms, removed_text == b"true")
    meta = json.loads(head)
    when = meta.get("when") if isinstance(meta, dict) else None
    removed = meta.get("removed") if isinstance(meta, dict) else None
    if not (when is None or type(when) is int) or type(removed) is not bool:
        raise ValueError("record header is malformed")
    return Record(body[:-1].decode("utf-8"), when, removed)


def _read_bytes(path: str) -> tuple[bytes, int]:
    """The whole file at ``path`` and its inode number, in four system calls (open, fstat, read, close).

    ``open(path, "rb").read()`` makes nine (it also asks whether the file is a terminal, seeks and stats
    twice), which was a third of a small read. Record files are replaced by rename, never rewritten in
    place, so one read of ``size + 1`` bytes returns the whole file; the loop is for a file that something
    else is appending to.
    """
    # O_NOFOLLOW: a link in place of a record is not followed (ELOOP); O_NONBLOCK: opening a FIFO does
    # not wait for a writer. Neither changes anything for a regular file.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _NotARecordError("a symbolic link") from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _NotARecordError(f"file type {stat.filemode(info.st_mode)[0]!r}")
        size = info.st_size
        data = os.read(fd, size + 1)
        if len(data) <= size:
            return data, info.st_ino
        parts = [data]
        while chunk := os.read(fd, 1 << 16):
            parts.append(chunk)
        return b"".join(parts), info.st_ino
    finally:
        os.close(fd)


class _NotARecordError(Exception):
    """A record's name is taken by something that is not a regular file (a FIFO, a socket, a link)."""


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _translate(exc: OSError, where: object) -> PersistError:
    """The one place where OS errors of the file backend become persist errors."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO):
        return BackendUnavailableError(f"file backend cannot access {where}: {exc.strerror}")
    if exc.errno == errno.ENAMETOOLONG:
        return ConfigurationError(f"path too long under {where}: move the root folder higher up")
    return BackendUnavailableError(f"file backend error at {where}: {exc}")
