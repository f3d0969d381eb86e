"""The crash/resume demo end to end: killed mid-trade, resumed, checked; and its check can fail."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from persist_core.demo.child import FAULT_ENV
from persist_core.demo.runner import compare

slow = pytest.mark.slow


def run_demo(*args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop(FAULT_ENV, None)
    if fault is not None:
        env[FAULT_ENV] = fault
    return subprocess.run(
        [sys.executable, "-m", "persist_core.demo", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def assert_agrees(result: subprocess.CompletedProcess[str]) -> list[str]:
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert lines[-1].startswith("OK: killed mid-trade, resumed, no trade lost, no signal duplicated")
    assert 10 <= len(lines) <= 25
    assert any("SIGKILL at step" in line for line in lines)
    assert any("final state = reference" in line for line in lines)
    return lines


@slow
@pytest.mark.parametrize("seed", [1, 4])
def test_killed_run_resumes_into_the_reference_state_on_files(seed: int) -> None:
    lines = assert_agrees(run_demo("--seed", str(seed)))
    restart = next(line for line in lines if line.startswith("3 restart"))
    assert re.search(r"found step \d+ \((open|partial|close)\) committed in the strategy slot", restart)
    assert any(
        "is not committed (the kill cut its unit short)" in line or "unit was stored: it is whole" in line
        for line in lines
    )


@slow
def test_same_seed_same_run() -> None:
    def essentials(lines: list[str]) -> list[str]:
        # The market, the trades, the chosen kill moment and the outcome. Not: process ids, the run's random
        # tag, temp paths, the elapsed time, nor what the restart found (the kill is asynchronous).
        start = next(i for i, x in enumerate(lines) if x.startswith("3 restart"))
        end = next(i for i, x in enumerate(lines) if x.startswith("4 check"))
        keep = lines[:start] + [x for x in lines[end:] if not x.startswith(("state:", "look:", "OK:"))]
        return [re.sub(r"pid \d+|[0-9a-f]{6}-|\d+\.\d s", "_", x) for x in keep]

    first = assert_agrees(run_demo("--seed", "5"))
    second = assert_agrees(run_demo("--seed", "5"))
    assert essentials(first) == essentials(second)


@slow
def test_state_kept_in_named_folders_with_the_reference_on_files_too(tmp_path: Path) -> None:
    target, reference = tmp_path / "state", tmp_path / "reference"
    lines = assert_agrees(run_demo("--url", f"file:{target}", "--reference-url", f"file:{reference}", "--seed", "3"))
    assert any("into file:" in line for line in lines)
    look = next(line for line in lines if line.startswith("look:"))
    assert look.startswith(f"look:        cd {target} && ls storage/false && jq . storage/false/sig-")
    example = target / look.split("jq . ")[1]
    assert example.is_file()
    trades = sorted(p.name for p in example.parent.glob("sig-*.json"))
    assert trades == sorted(p.name for p in (reference / "storage" / "false").glob("sig-*.json"))
    assert len(trades) >= 2


@slow
def test_default_folder_is_removed_unless_kept() -> None:
    removed = assert_agrees(run_demo("--seed", "2"))
    root = Path(next(line for line in removed if line.startswith("state:")).split()[1])
    assert not root.exists()
    assert not any(line.startswith("look:") for line in removed)  # it would name the folder just removed
    assert any("removed at exit; run with --keep" in line for line in removed)
    kept = assert_agrees(run_demo("--seed", "2", "--keep"))
    root = Path(next(line for line in kept if line.startswith("state:")).split()[1])
    try:
        assert (root / "strategy").is_dir()
        assert not any("removed at exit" in line for line in kept)
        look = next(line for line in kept if line.startswith("look:"))
        assert (root / look.split("jq . ")[1]).is_file()
    finally:
        shutil.rmtree(root)


@slow
def test_quiet_keep_names_the_kept_folder() -> None:
    result = run_demo("--seed", "1", "--quiet", "--keep")
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(lines) == 2
    assert lines[-1].startswith("OK: ")
    root = Path(lines[0].split()[1])
    try:
        assert lines[0].startswith("state:")
        assert (root / "strategy").is_dir()
    finally:
        shutil.rmtree(root)


@slow
def test_quiet_prints_only_the_verdict() -> None:
    result = run_demo("--seed", "1", "--quiet")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [result.stdout.strip()]
    assert result.stdout.startswith("OK: ")


@slow
def test_sqlite_target(tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    lines = assert_agrees(run_demo("--url", f"sqlite:///{tmp_path / 'demo.db'}", "--seed", "4"))
    assert any(line.startswith("state:       sqlite:///") for line in lines)


@slow
def test_memory_target_is_refused() -> None:
    result = run_demo("--url", "memory://")
    assert result.returncode == 2
    assert "does not keep state across processes" in result.stderr
    assert "Traceback" not in result.stderr


def test_reference_store_must_differ_from_the_target(tmp_path: Path) -> None:
    url = f"file:{tmp_path}"
    result = run_demo("--url", url, "--reference-url", url)
    assert result.returncode == 2
    assert "--reference-url must differ from --url" in result.stderr


@slow
@pytest.mark.parametrize("seed", [5, 6])
def test_a_step_written_without_a_unit_is_caught(seed: int) -> None:
    """Control: with each write of a step on its own, a kill between two of them leaves half a step stored,
    which the restart cannot redo (these seeds kill a partial-level step after its levels were written: the
    restart sees the levels reached and decides nothing), and the demo's check says so. A close step cut after
    its storage row alone heals on the redo (seeds 1-3), which is why these seeds."""
    result = run_demo("--seed", str(seed), fault="no-units")
    assert "(partial), before write" in result.stdout and "before write 1 of" not in result.stdout, result.stdout
    assert result.returncode == 1, result.stdout
    assert "DISAGREES with the reference" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("FAILED: the resumed run lost or changed state")


def _state() -> dict[str, Any]:
    trade = {"id": "sig-a", "status": "closed", "pnl": 1.0}
    return {
        "trades": {"sig-a": trade, "sig-b": {"id": "sig-b", "status": "closed", "pnl": -0.5}},
        "log": {
            "log-1": {"id": "log-1", "topic": "signal.opened", "signalId": "sig-a"},
            "log-2": {"id": "log-2", "topic": "signal.closed", "signalId": "sig-a"},
        },
        "signal": None,
        "risk": {},
        "strategy": {"cursor": 9, "phase": "committed"},
        "partial": {"sig-a": {"profitLevels": [25]}},
        "candles": [{"timestamp": 0}],
    }


def test_compare_agrees_with_itself() -> None:
    assert compare(_state(), _state()) == []


def test_compare_names_every_disagreement() -> None:
    final = _state()
    del final["trades"]["sig-b"]
    final["trades"]["sig-a"] = {**final["trades"]["sig-a"], "pnl": 2.0}
    final["trades"]["sig-c"] = {"id": "sig-c", "status": "opened"}
    final["log"]["log-3"] = {"id": "log-3", "topic": "signal.opened", "signalId": "sig-a"}
    del final["log"]["log-2"]
    final["signal"] = {"id": "sig-c"}
    final["candles"] = None
    assert compare(_state(), final) == [
        "trade sig-b was lost",
        "trade sig-c is not in the reference run",
        "trade sig-a differs in: pnl",
        "1 log entry missing: log-2",
        "1 log entry not in the reference: log-3",
        "signal sig-a was opened 2 times",
        "the signal state differs from the reference",
        "the candle cache is missing candles it had accepted",
    ]
