"""The contract kit against the jsonl backend: its log clauses run; the clauses of other domains are deselected
through the capabilities the classes declare (the few that name no domain parameter skip at run time)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from persist_core.backend import Backend
from persist_core.backends.jsonl import JsonlBackend
from persist_core.testing import BackendContractTests


class TestJsonlBackend(BackendContractTests):
    declared_capabilities = JsonlBackend.capabilities

    @pytest.fixture
    def backend_factory(self, tmp_path: Path) -> Callable[[], Backend]:
        return functools.partial(JsonlBackend, tmp_path / "log" / "log.jsonl")


class TestJsonlBackendProcessDurability(BackendContractTests):
    """``durability=process`` skips the fsync; everything but a power cut must hold the same."""

    declared_capabilities = JsonlBackend.capabilities

    @pytest.fixture
    def backend_factory(self, tmp_path: Path) -> Callable[[], Backend]:
        return functools.partial(JsonlBackend.from_url, f"jsonl:{tmp_path}/log.jsonl?durability=process")
