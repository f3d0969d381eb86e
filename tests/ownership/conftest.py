"""The backends the ownership tests run on: each yields ``(url, extra environment)`` on fresh storage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

BACKENDS = ["file", "sqlite"]


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A URL of fresh storage on one backend, and the environment a process needs to use it."""
    kind = request.param
    if kind == "file":
        yield f"file:{tmp_path / 'dump'}", {}
    elif kind == "sqlite":
        pytest.importorskip("sqlalchemy")
        yield f"sqlite:///{tmp_path / 'state.db'}", {}
    else:  # pragma: no cover
        raise AssertionError(kind)
