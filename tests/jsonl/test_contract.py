"""The contract kit against the jsonl backend: its log clauses run; the clauses of other domains are deselected
through the capabilities the classes declare (the few that name no domain parameter skip at run time)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from persist_core.backend import Backend
from persist_core.backends.jsonl import JsonlBackend
from persist_core.testing import BackendContractTests, StorageBreaker, broken_folder


class TestJsonlBackend(BackendContractTests):
    declared_capabilities = JsonlBackend.capabilities

    @pytest.fixture
    def backend_factory(self, tmp_path: Path) -> Callable[[], Backend]:
        return functools.partial(JsonlBackend, tmp_path / "log" / "log.jsonl")

    @pytest.fixture
    def break_storage(self, tmp_path: Path) -> StorageBreaker:
        def broken(backend: Backend) -> AbstractContextManager[object]:
            return broken_folder(tmp_path / "log")  # the log file's folder replaced by a regular file

        return broken


class TestJsonlBackendProcessDurability(BackendContractTests):
    """``durability=process`` skips the fsync; everything but a power cut must hold the same."""

    declared_capabilities = JsonlBackend.capabilities

    @pytest.fixture
    def backend_factory(self, tmp_path: Path) -> Callable[[], Backend]:
        return functools.partial(JsonlBackend.from_url, f"jsonl:{tmp_path}/log.jsonl?durability=process")
