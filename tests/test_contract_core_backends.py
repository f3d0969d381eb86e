"""The contract kit against the two backends the core ships: memory and file."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from persist_core.backend import Backend
from persist_core.backends.file import FileBackend
from persist_core.backends.memory import MemoryBackend
from persist_core.testing import BackendContractTests, StorageBreaker, broken_folder


class TestMemoryBackend(BackendContractTests):
    declared_capabilities = MemoryBackend.capabilities

    @pytest.fixture
    def backend_factory(self) -> Callable[[], Backend]:
        return MemoryBackend


class TestFileBackend(BackendContractTests):
    declared_capabilities = FileBackend.capabilities

    @pytest.fixture
    def backend_factory(self, tmp_path: Path) -> Callable[[], Backend]:
        return functools.partial(FileBackend, tmp_path / "dump")

    @pytest.fixture
    def break_storage(self) -> StorageBreaker:
        def broken_root(backend: Backend) -> AbstractContextManager[object]:
            assert isinstance(backend, FileBackend)
            return broken_folder(backend.root)  # a regular file where the root folder was

        return broken_root


class TestMemoryBackendAsyncFace(TestMemoryBackend):
    """Every store clause again, through the asyncio stores and the thread-pool async backend."""

    face = "async"


class TestFileBackendAsyncFace(TestFileBackend):
    """Every store clause again, through the asyncio stores and the thread-pool async backend."""

    face = "async"
