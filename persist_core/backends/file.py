"""The file backend, the embedded default (CONTRACTS.md 6.1).

Layout under the root folder: ``<domain>/<context segment>/.../<item segment>.json``, or
``.../slot.json`` for slot domains. Each key field becomes one reversible, never-empty file-name segment
(:func:`encode_segment`), so distinct keys never share a file. A record file has two JSON lines: a small
header (``when``, ``removed``) and the value, readable with ``jq``.

Durability: every write goes to a uniquely named temp file in the target folder, is fsynced, renamed
over the target, and the folder is fsynced (``durability="process"`` skips both fsyncs: the data then
survives a killed process but not a power cut). First-write-wins domains use ``os.link`` from the
temp file, which fails atomically if the target exists, also between processes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from persist_core.backend import Backend, Capabilities, ItemKey, Key, Record
from persist_core.backends._durable import fsync_dir, makedirs_durably
from persist_core.domains import DOMAINS, DomainSpec, FieldType, KeyField
from persist_core.errors import BackendUnavailableError, ConfigurationError, CorruptRecordError, PersistError
from persist_core.urls import parse_options, path_of

__all__ = ["FileBackend", "decode_segment", "encode_segment"]

log = logging.getLogger("persist.file")

SLOT_FILE = "slot.json"
SUFFIX = ".json"
TEMP_PREFIX = ".tmp-"
QUARANTINE = ".quarantine"
#: Temp files younger than this may belong to a live writer in another process; older ones are debris.
TEMP_GRACE_SECONDS = 120.0
_EMPTY_SEGMENT = "~"
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


class FileBackend(Backend):
    """Records as files under a root folder; shared between processes; survives kills (and power cuts
    unless ``durability="process"``)."""

    capabilities = Capabilities()

    def __init__(
        self,
        root: str | os.PathLike[str] = "./dump",
        *,
        durability: str = "full",
        verify_on_open: bool = True,
        url: str | None = None,
    ) -> None:
        if durability not in ("full", "process"):
            raise ConfigurationError(f"durability must be 'full' or 'process', not {durability!r}")
        self.root = Path(root).absolute()
        self.url = url or f"file:{self.root}"
        self._fsync = durability == "full"
        self._verify = verify_on_open
        self._opened = False
        self._open_lock = threading.Lock()
        self._dirs: dict[tuple[str, Key], str] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FileBackend:
        """Build from ``file:PATH[?durability=process&verify=0]``; keyword options override the query."""
        query = parse_options(url)
        merged: dict[str, Any] = {
            "durability": query.get("durability", "full"),
            "verify_on_open": query.get("verify", "1") not in ("0", "false", "no"),
        }
        merged.update({k: v for k, v in options.items() if k in ("durability", "verify_on_open")})
        return cls(path_of(url, "./dump"), url=url, **merged)

    # ---------------------------------------------------------------------------------- lifecycle

    def open(self) -> None:
        with self._open_lock:
            if self._opened:
                return
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                probe = self.root / f"{TEMP_PREFIX}probe-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise BackendUnavailableError(f"file backend root {self.root} is not writable: {exc}") from exc
            self._sweep()
            self._opened = True

    def _sweep(self) -> None:
        """Remove stale temp files; quarantine records that cannot be decoded (never delete them)."""
        now = time.time()
        quarantine = self.root / QUARANTINE
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root:
                dirnames[:] = [d for d in dirnames if d in DOMAINS]
            for name in filenames:
                path = os.path.join(dirpath, name)
                if name.startswith(TEMP_PREFIX):
                    try:
                        if now - os.stat(path).st_mtime > TEMP_GRACE_SECONDS:
                            os.unlink(path)
                            log.info("removed stale temp file %s", path)
                    except FileNotFoundError:
                        pass
                elif self._verify and name.endswith(SUFFIX) and not name.startswith("."):
                    try:
                        json.loads(_parse(Path(path).read_bytes()).payload)
                    except ValueError as exc:
                        self._quarantine(Path(path), quarantine, str(exc))

    def _quarantine(self, path: Path, quarantine: Path, reason: str) -> None:
        target = quarantine / path.relative_to(self.root)
        target = target.with_name(f"{target.name}.{time.time_ns()}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        log.error("quarantined unreadable record %s -> %s (%s)", path, target, reason)

    # ------------------------------------------------------------------------------------- paths

    def _dir(self, domain: DomainSpec, context: Key) -> str:
        cache_key = (domain.name, context)
        path = self._dirs.get(cache_key)
        if path is None:
            parts = [encode_segment(f, v) for f, v in zip(domain.context, context, strict=True)]
            path = os.path.join(self.root, domain.name, *parts)
            if len(self._dirs) > 65_536:
                self._dirs.clear()
            self._dirs[cache_key] = path
        return path

    def _path(self, domain: DomainSpec, key: Key) -> tuple[str, str]:
        if domain.item is None:
            return self._dir(domain, key), SLOT_FILE
        return self._dir(domain, key[:-1]), encode_segment(domain.item, key[-1]) + SUFFIX

    # ------------------------------------------------------------------------------------ writes

    def _temp(self, folder: str, name: str, data: bytes) -> str:
        """Write ``data`` to a new temp file in ``folder`` (created on demand), fsynced; return its path."""
        # The name stays short: an encoded key may already use 245 of the 255 bytes a file name may have.
        tmp = os.path.join(folder, f"{TEMP_PREFIX}{os.urandom(8).hex()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            makedirs_durably(folder, fsync=self._fsync)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync:
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
            if domain.soft_delete:
                # Serialised with mark_removed of the same folder (see there); other domains have no
                # read-modify-write to protect and pay nothing.
                with _locked_folder(folder, create=True, fsync=self._fsync):
                    self._replace(folder, name, record)
            else:
                self._replace(folder, name, record)
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
            with _locked_folder(folder, create=False, fsync=self._fsync) as exists:
                if not exists:
                    return  # no folder, no record: removing a missing key is a no-op
                record = self.get(domain, key)
                if record is not None and not record.removed:
                    self._replace(folder, name, Record(record.payload, record.when, removed=True))
        except OSError as exc:
            raise _translate(exc, folder) from exc

    # ------------------------------------------------------------------------------------- reads

    def get(self, domain: DomainSpec, key: Key) -> Record | None:
        folder, name = self._path(domain, key)
        path = os.path.join(folder, name)
        try:
            data = _read_bytes(path)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        except OSError as exc:
            raise _translate(exc, path) from exc
        try:
            return _parse(data)
        except ValueError as exc:
            raise CorruptRecordError(f"unreadable record file {path}: {exc}") from exc

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
            names = [
                entry.name
                for entry in os.scandir(folder)
                if entry.name.endswith(SUFFIX) and not entry.name.startswith(".")
            ]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise _translate(exc, folder) from exc
        items = []
        for name in names:
            item = decode_segment(item_field, name[: -len(SUFFIX)])
            if (start is None or item >= start) and (stop is None or item < stop):
                items.append(item)
        items.sort()
        out = []
        for item in items:
            record = self.get(domain, (*context, item))
            if record is not None:  # may vanish only if removed by hand meanwhile
                out.append((item, record))
        return out

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


@contextlib.contextmanager
def _locked_folder(folder: str, *, create: bool, fsync: bool) -> Iterator[bool]:
    """Hold an exclusive ``flock(2)`` on ``folder`` for the ``with`` block; yield whether the folder exists.

    The lock belongs to the open file description, so two threads of one process that each open the
    folder exclude each other just as two processes do, and it is released when the descriptor is
    closed, also by a process that dies. A missing folder is created (and durably) when ``create`` is
    set, else the block runs unlocked with ``False``. flock on NFS is emulated with byte-range locks
    (flock(2), NOTES), which still exclude each other between clients.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        if not create:
            fd = -1
        else:
            makedirs_durably(folder, fsync=fsync)
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    if fd < 0:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # releases the lock


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


def _read_bytes(path: str) -> bytes:
    """The whole file at ``path`` in four system calls (open, fstat, read, close).

    ``open(path, "rb").read()`` makes nine (it also asks whether the file is a terminal, seeks and stats
    twice), which was a third of a small read. Record files are replaced by rename, never rewritten in
    place, so one read of ``size + 1`` bytes returns the whole file; the loop is for a file that something
    else is appending to.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) <= size:
            return data
        parts = [data]
        while chunk := os.read(fd, 1 << 16):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _translate(exc: OSError, where: object) -> PersistError:
    """The one place where OS errors of the file backend become persist errors."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO):
        return BackendUnavailableError(f"file backend cannot write at {where}: {exc.strerror}")
    if exc.errno == errno.ENAMETOOLONG:
        return ConfigurationError(f"path too long under {where}: move the root folder higher up")
    return BackendUnavailableError(f"file backend error at {where}: {exc}")
