"""Durable folder operations, and the durability option, shared by the backends that write files (file, jsonl).

A rename or a new file is durable only once the folder that holds its entry is fsynced, and a new folder
only once its parent is (see fsync(2), "Calling fsync() does not necessarily ensure that the entry in the
directory containing the file has also reached disk").
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable

from persist_core.errors import ConfigurationError
from persist_core.urls import describe_options, mask_url

__all__ = ["can_sync_filesystem", "durability_of", "fsync_dir", "makedirs_durably", "sync_filesystem"]


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush the entries of ``folder`` (new names, renames, unlinks) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(folder: str | os.PathLike[str]) -> bool:
    """Flush every change of the file system that holds ``folder`` to disk with one ``syncfs(2)``.

    One call makes many unsynced files durable together, where an ``fsync`` per file and per folder waits for
    the disk once each. Returns ``False`` where ``syncfs`` does not exist (not Linux): the caller then fsyncs
    its files one by one. It flushes other writers' changes of that file system too, which costs them nothing
    they would not pay at their own fsync.

    Raises:
        OSError: the flush failed (Linux reports write-back errors through ``syncfs`` since 5.8).
    """
    syncfs = _syncfs()
    if syncfs is None:
        return False
    # ctypes releases the GIL around the call, as os.fsync does.
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), os.fspath(folder))
    finally:
        os.close(fd)
    return True


def can_sync_filesystem() -> bool:
    """Whether :func:`sync_filesystem` can flush a whole file system here (``syncfs(2)`` exists)."""
    return _syncfs() is not None


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """The C library's ``syncfs``, or ``None`` where there is none (Python's ``os`` does not wrap it)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


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


def durability_of(url: str, query: dict[str, str], known: dict[str, str]) -> str:
    """The ``durability`` query option of a ``file:``/``jsonl:`` URL: ``full`` (the default) or ``process``.

    Raises:
        ConfigurationError: another word, listing ``known`` (the backend's URL options).
    """
    durability = query.get("durability", "full")
    if durability not in ("full", "process"):
        raise ConfigurationError(
            f"bad option durability={durability!r} in {mask_url(url)!r}; known: {describe_options(known)}"
        )
    return durability
