"""Ownership leases of the file backend: ``<root>/.owner/<generation>.json``, one small file per generation.

A claim links a fsynced temp file to the generation's name, which fails atomically if it exists (first write
wins, across processes, like the candle and log domains); a renewal replaces the file by rename.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from persist_core.backends._durable import fsync_dir, makedirs_durably
from persist_core.errors import BackendUnavailableError, CorruptRecordError
from persist_core.ownership import Lease, LeaseLog

__all__ = ["OWNER_FOLDER", "FileLeaseLog"]

OWNER_FOLDER = ".owner"
_SUFFIX = ".json"


class FileLeaseLog(LeaseLog):
    """Leases in ``<root>/.owner``; every method raises only persist errors."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self._folder = str(root / OWNER_FOLDER)
        self._fsync = fsync

    def _generations(self) -> list[int]:
        try:
            names = os.listdir(self._folder)
        except FileNotFoundError:
            return []
        return sorted(int(name[: -len(_SUFFIX)]) for name in names if name.endswith(_SUFFIX) and name[0].isdigit())

    def _path(self, generation: int) -> str:
        return os.path.join(self._folder, f"{generation}{_SUFFIX}")

    def _temp(self, data: bytes) -> str:
        makedirs_durably(self._folder, fsync=self._fsync)
        tmp = os.path.join(self._folder, f".tmp-{os.urandom(8).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    # docstrings inherited from LeaseLog

    def head(self) -> tuple[int, Lease] | None:
        try:
            for generation in reversed(self._generations()):
                try:
                    text = Path(self._path(generation)).read_text(encoding="utf-8")
                except FileNotFoundError:
                    continue  # pruned meanwhile
                try:
                    return generation, Lease.from_json(text)
                except ValueError as exc:
                    raise CorruptRecordError(f"unreadable ownership lease {self._path(generation)}: {exc}") from exc
        except OSError as exc:
            raise BackendUnavailableError(f"cannot read ownership leases in {self._folder}: {exc}") from exc
        return None

    def claim(self, generation: int, lease: Lease) -> bool:
        try:
            tmp = self._temp(lease.to_json().encode())
            try:
                os.link(tmp, self._path(generation))
            except FileExistsError:
                return False
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            if self._fsync:
                fsync_dir(self._folder)
        except OSError as exc:
            raise BackendUnavailableError(f"cannot write an ownership lease in {self._folder}: {exc}") from exc
        return True

    def renew(self, generation: int, lease: Lease) -> None:
        try:
            tmp = self._temp(lease.to_json().encode())
            os.replace(tmp, self._path(generation))
            if self._fsync:
                fsync_dir(self._folder)
        except OSError as exc:
            raise BackendUnavailableError(f"cannot renew the ownership lease in {self._folder}: {exc}") from exc

    def prune(self, below: int) -> None:
        for generation in self._generations():
            if generation < below:
                with contextlib.suppress(OSError):
                    os.unlink(self._path(generation))
