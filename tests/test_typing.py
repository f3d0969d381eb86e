"""The public API's static types, as a user meets them: ``mypy --strict`` on a user's bot.

``tests/typing/user_bot.py`` plants mistakes, each marked with ``# E: <error code>`` at the end of its line;
every one must be reported at that line with that code, and nothing else may be. ``user_bot_clean.py`` is a
correct bot on both faces that pins each domain's read type with ``assert_type``: it must pass clean. One mypy
run checks both. The scripts are copied to a temporary folder and the checkout is put on ``PYTHONPATH``, so
mypy finds ``persist_core``, ``persist_sql`` and ``persist_mongo`` as a user's installed packages: one without
a ``py.typed`` marker would be reported (``import-untyped``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "typing"
PLANTED, CLEAN = "user_bot.py", "user_bot_clean.py"
_MARK = re.compile(r"#\s*E:\s*([a-z-]+)\s*$")
_ERROR = re.compile(r"^(?P<file>[\w.]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")

Report = set[tuple[str, int, str]]


def _planted(name: str) -> Report:
    lines = (SCRIPTS / name).read_text(encoding="utf-8").splitlines()
    return {(name, number, m.group(1)) for number, line in enumerate(lines, 1) if (m := _MARK.search(line))}


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> Report:
    work = tmp_path_factory.mktemp("typing")
    for name in (PLANTED, CLEAN):
        shutil.copyfile(SCRIPTS / name, work / name)
    # An empty config: the user's flags are --strict alone, not this project's settings.
    (work / "mypy.ini").write_text("[mypy]\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "mypy", "--strict", "--config-file", "mypy.ini", "--cache-dir", ".mypy_cache"]
    flags = ["--no-error-summary", "--hide-error-context", "--no-pretty", "--no-color-output"]
    done = subprocess.run(
        [*command, *flags, PLANTED, CLEAN], cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode in (0, 1), f"mypy failed to run:\n{done.stdout}\n{done.stderr}"
    errors = {(m["file"], int(m["line"]), m["code"]) for m in map(_ERROR.match, done.stdout.splitlines()) if m}
    unparsed = [line for line in done.stdout.splitlines() if ": error: " in line and not _ERROR.match(line)]
    assert not unparsed, f"mypy errors this test cannot read: {unparsed}"
    return errors


def test_the_planted_mistakes_cover_the_issue() -> None:
    codes = [code for _, _, code in _planted(PLANTED)]
    # The ten kinds of issue 12 (wrong read type, when/as_of, non-JSON values, interval, key fields,
    # await mistakes, object domains, dict keys, untyped backend packages) on both faces.
    assert len(codes) >= 25
    assert {"arg-type", "assignment", "index", "dict-item", "call-arg", "misc", "unused-coroutine"} <= set(codes)


def test_every_planted_mistake_is_reported_at_its_line(mypy_errors: Report) -> None:
    found = {error for error in mypy_errors if error[0] == PLANTED}
    expected = _planted(PLANTED)
    assert not expected - found, f"planted mistakes mypy did not report: {sorted(expected - found)}"
    assert not found - expected, f"errors that were not planted: {sorted(found - expected)}"


def test_a_correct_bot_type_checks_clean(mypy_errors: Report) -> None:
    assert not _planted(CLEAN)
    assert {error for error in mypy_errors if error[0] == CLEAN} == set()
