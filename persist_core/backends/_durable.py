"""Durable folder operations, and the durability option, shared by the backends that write files (file, jsonl).

A rename or a new file is durable only once the folder that holds its entry is fsynced, and a new folder
only once its parent is (see fsync(2), "Calling fsync() does not necessarily ensure that the entry in the
directory containing the file has also reached disk").
"""

from __future__ import annotations

import os

from persist_core.errors import ConfigurationError
from persist_core.urls import describe_options, mask_url

__all__ = ["durability_of", "fsync_dir", "makedirs_durably"]


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
