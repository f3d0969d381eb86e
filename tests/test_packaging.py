"""Packaging (issue 12.3): the license ships, the version is written once."""

from __future__ import annotations

import tomllib
from pathlib import Path

import persist_core

ROOT = Path(__file__).resolve().parents[1]


def test_the_license_file_is_mit_and_declared() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 backtest-persist contributors" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]  # into the wheel's .dist-info/licenses and the sdist


def test_the_version_is_written_once() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    source = pyproject["tool"]["hatch"]["version"]["path"]
    assert f'__version__ = "{persist_core.__version__}"' in (ROOT / source).read_text(encoding="utf-8")
