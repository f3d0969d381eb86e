"""The README's first command from a clean virtual environment (issue 12.3).

``bash scripts/demo.sh`` must work as written on a fresh Debian/Ubuntu, whose system Python refuses
``pip install`` (PEP 668, "externally-managed-environment"). The test runs it with a new, empty virtual
environment folder, from the system Python when that one is externally managed (the case the issue
reports), and checks what the install brings: the entry point, the version and the license.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

import persist_core

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _externally_managed(python: Path) -> bool:
    """Whether ``python`` is a PEP 668 externally managed interpreter of version 3.11+."""
    if not python.is_file():
        return False
    probe = (
        "import pathlib, sys, sysconfig; "
        "print(sys.version_info >= (3, 11) and "
        "pathlib.Path(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED').is_file())"
    )
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=30, check=False)
    return result.stdout.strip() == "True"


def _base_python() -> str:
    if _externally_managed(SYSTEM_PYTHON):
        return str(SYSTEM_PYTHON)
    # No such system Python here: the interpreter under the tests (its base, if it runs in a venv).
    return str(Path(sysconfig.get_config_var("BINDIR") or Path(sys.executable).parent) / "python3")


def test_the_readme_names_the_commands_tested_here() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()] == [
        "bash scripts/demo.sh",  # run below from a clean virtual environment
        "bash scripts/test.sh",  # what CI runs (.ci/run)
    ]
    assert "exec bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_cli_module_runs_as_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "persist_core.cli", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, f"backtest-persist {persist_core.__version__}")


@pytest.mark.slow
def test_the_readme_demo_command_works_from_a_clean_virtual_environment(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(PERSIST_VENV=str(venv), PERSIST_PYTHON=_base_python(), PIP_DISABLE_PIP_VERSION_CHECK="1")
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "scripts/demo.sh", "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    elapsed = time.monotonic() - started
    print(f"scripts/demo.sh from a clean venv ({env['PERSIST_PYTHON']}): {elapsed:.1f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("OK: killed mid-trade, resumed")
    assert f"venv: creating {venv}" in result.stdout
    assert (venv / "bin" / "backtest-persist").is_file()

    probe = (
        "import importlib.metadata as m, pathlib, persist_core; "
        "d = m.distribution('backtest-persist'); "
        "print(persist_core.__version__, d.version, d.metadata['License-Expression'], "
        "any(pathlib.PurePath(str(f)).name == 'LICENSE' for f in d.files or ()), persist_core.__file__)"
    )
    shown = subprocess.run(
        [venv / "bin" / "python", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    version, metadata_version, license_expression, has_license, location = shown.stdout.split()
    assert version == metadata_version == persist_core.__version__
    assert license_expression == "MIT"
    assert has_license == "True"
    assert Path(location).resolve().is_relative_to(ROOT)  # the checkout's code, installed editable
