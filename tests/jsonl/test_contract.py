"""The contract kit against the jsonl backend: its log clauses run, the others skip through capabilities."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from persist_core.backend import Backend
from persist_core.backends.jsonl import JsonlBackend
from persist_core.testing import BackendContractTests


class TestJsonlBackend(BackendContractTests):
    @pytest.fixture
    def backend_factory(self, tmp_path: Path) -> Callable[[], Backend]:
        return functools.partial(JsonlBackend, tmp_path / "log" / "log.jsonl")


class TestJsonlBackendProcessDurability(BackendContractTests):
    """``durability=process`` skips the fsync; everything but a power cut must hold the same."""

    @pytest.fixture
    def backend_factory(self, tmp_path: Path) -> Callable[[], Backend]:
        return functools.partial(JsonlBackend.from_url, f"jsonl:{tmp_path}/log.jsonl?durability=process")
