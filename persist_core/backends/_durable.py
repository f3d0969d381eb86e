"""Durable folder operations shared by the backends that write files (file, jsonl).

A rename or a new file is durable only once the folder that holds its entry is fsynced, and a new folder
only once its parent is (see fsync(2), "Calling fsync() does not necessarily ensure that the entry in the
directory containing the file has also reached disk").
"""

from __future__ import annotations

import os

__all__ = ["fsync_dir", "makedirs_durably"]


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush the entries of ``folder`` (new names, renames, unlinks) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durably(folder: str | os.PathLike[str], *, fsync: bool) -> None:
    """Create ``folder`` and its missing parents; with ``fsync``, fsync the parent of each new level."""
    missing = []
    path = os.fspath(folder)
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    if fsync:
        for created in reversed(missing):
            fsync_dir(os.path.dirname(created))
