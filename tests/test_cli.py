"""The ``backtest-persist`` command line: help, exit codes, masked passwords, configuration errors."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from persist_core import registry
from persist_core.backend import Backend, Capabilities, Record
from persist_core.cli import EXIT_CODES, main
from persist_core.errors import BackendUnavailableError

SECRET = "s3cret-Pw"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_help_names_every_command_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("demo", "bench", "migrate", "check", "ls", "show"):
        assert f"    {command}" in text
    assert "exit codes:" in text
    for code, meaning in EXIT_CODES.items():
        assert f"{code:<4} {meaning}" in text


@pytest.mark.parametrize("command", ["demo", "bench", "migrate", "check", "ls", "show"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    assert f"usage: backtest-persist {command}" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("backtest-persist 0.")


def test_no_command_prints_help_and_is_a_usage_error() -> None:
    code, out, err = run()
    assert code == 2
    assert out == ""
    assert "usage: backtest-persist" in err


@pytest.mark.parametrize(
    "argv",
    [["nosuch"], ["bench", "--nope"], ["check"], ["migrate", "--revision", "head"], ["demo", "--seed", "x"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_entry_point_reads_sys_argv_and_writes_errors_to_stderr() -> None:
    entry = "import sys; from persist_core.cli import main; sys.exit(main())"  # what the console script runs
    result = subprocess.run([sys.executable, "-c", entry, "check", "--url", "x"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "backtest-persist: not a backend URL (no scheme): 'x'\n"


def test_python_dash_m_demo_is_the_demo_command() -> None:
    result = subprocess.run([sys.executable, "-m", "persist_core.demo", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: backtest-persist demo")


def test_check_file_backend(tmp_path: Path) -> None:
    code, out, err = run("check", "--url", f"file:{tmp_path / 'dump'}")
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"check file:{tmp_path / 'dump'}"
    assert [line.split()[:2] for line in lines[1:4]] == [["ok", "open"], ["ok", "read"], ["ok", "capabilities"]]
    assert "survives a killed process: yes" in lines[3]
    assert lines[-1] == "3 of 3 checks passed"


def test_check_memory_backend_reports_what_it_cannot_do() -> None:
    code, out, _ = run("check", "--url", "memory://")
    assert code == 0
    assert "shared between processes: no; survives a killed process: no" in out


def test_check_unusable_file_root_fails_with_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, out, err = run("check", "--url", f"file:{blocker / 'dump'}")
    assert code == 1
    assert err == ""
    assert out.splitlines()[1].split()[:2] == ["FAIL", "open"]
    assert "not writable" in out
    assert out.splitlines()[-1] == "0 of 1 checks passed"


def test_unknown_scheme_names_the_known_ones_and_masks_the_password() -> None:
    code, out, err = run("check", "--url", f"nosuch://trader:{SECRET}@127.0.0.1/db")
    assert code == 2
    assert out == ""
    assert err.startswith("backtest-persist: unknown backend URL scheme 'nosuch' in 'nosuch://trader:***@127.0.0.1/db'")
    assert "known: " in err
    assert "file" in err
    assert "postgresql" in err
    assert SECRET not in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("command", ["check", "migrate"])
def test_sql_errors_mask_the_password(command: str) -> None:
    # Port 1 refuses at once: connecting fails (or, without the sql extra, the import does), never hangs.
    code, out, err = run(command, "--url", f"postgresql+psycopg://trader:{SECRET}@127.0.0.1:1/db")
    assert code in (1, 2)
    assert SECRET not in out + err
    assert "trader:***@" in out + err
    assert "Traceback" not in err


def test_missing_sql_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "persist_sql.admin", None)  # what an absent extra looks like to import
    code, out, err = run("migrate", "--url", f"postgresql+psycopg://trader:{SECRET}@127.0.0.1/db")
    assert code == 2
    assert out == ""
    assert 'pip install "backtest-persist[postgres]"' in err
    code, _, err = run("check", "--url", "sqlite:///state.db")
    assert code == 2
    assert 'pip install "backtest-persist[sql]"' in err


def test_migrate_refuses_urls_without_a_schema() -> None:
    code, _, err = run("migrate", "--url", "file:./dump")
    assert code == 2
    assert "migrate applies to SQL URLs" in err


class _LeakyBackend(Backend):
    """A backend whose driver quotes the password in its error, without the URL around it."""

    capabilities = Capabilities()

    def __init__(self, url: str) -> None:
        self.password = url.split(":")[2].split("@")[0]
        self.url = url

    def open(self) -> None:
        raise BackendUnavailableError(f"login failed for password {self.password}")

    def get(self, domain: Any, key: Any) -> Record | None:  # pragma: no cover - never opened
        return None

    def scan(self, domain: Any, context: Any, start: Any = None, stop: Any = None) -> list[Any]:  # pragma: no cover
        return []

    def put(self, domain: Any, key: Any, record: Record) -> None:  # pragma: no cover
        pass

    def insert_many(self, domain: Any, items: Any) -> int:  # pragma: no cover
        return 0

    def mark_removed(self, domain: Any, key: Any) -> None:  # pragma: no cover
        pass


def test_a_password_quoted_without_its_url_is_masked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._registered, "leaky", _LeakyBackend)
    code, out, err = run("check", "--url", f"leaky://trader:{SECRET}@127.0.0.1/db")
    assert code == 1
    assert SECRET not in out + err
    assert "login failed for password ***" in out


def test_a_persist_error_is_one_line_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str) -> Backend:
        raise BackendUnavailableError(f"{url} refused the connection")

    monkeypatch.setitem(registry._registered, "refusing", refuse)
    code, out, err = run("check", "--url", f"refusing://trader:{SECRET}@127.0.0.1/db")
    assert code == 1
    assert out == ""
    expected = "backtest-persist: BackendUnavailableError: refusing://trader:***@127.0.0.1/db refused the connection"
    assert err == expected + "\n"


def test_bench_list_and_backend_selection() -> None:
    code, out, _ = run("bench", "--list", "--backend", "memory")
    assert code == 0
    rows = [line.split() for line in out.splitlines() if not line.startswith("skipped:")]
    assert [row[:2] for row in rows] == [["memory", "write"], ["memory", "read"]]
    code, _, err = run("bench", "--backend", "nosuch")
    assert code == 2
    assert "no benchmark pairs for nosuch; available: " in err
    assert "file" in err


def test_bench_runs_and_writes_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from persist_core.bench import core_pairs, unit_pairs

    def tiny(quick: Any) -> Any:
        def pairs(quick_: bool) -> list[Any]:
            made = quick(True)
            for pair in made:
                pair.n = 20
            return made

        return pairs

    monkeypatch.setattr(core_pairs, "bench_pairs", tiny(core_pairs.bench_pairs))
    monkeypatch.setattr(unit_pairs, "bench_pairs", tiny(unit_pairs.bench_pairs))
    target = tmp_path / "bench.json"
    code, out, err = run("bench", "--quick", "--backend", "file", "memory", "--json", str(target))
    assert code == 0
    table = out.splitlines()
    assert table[0].split()[:2] == ["backend", "operation"]
    rows = [re.split(r"\s{2,}", line.strip())[:2] for line in table[2:8]]  # columns: 2+ spaces apart
    assert rows == [
        ["file", "write"],
        ["file", "write vs encoding raw"],
        ["file", "read"],
        ["memory", "write"],
        ["memory", "read"],
        ["file", "5-domain step as a unit"],
    ]
    assert sum(line.startswith("target ") for line in table) == 5
    assert "bench: file write: 20 x 2 calls" in err
    document = json.loads(target.read_text())
    assert [(r["backend"], r["operation"]) for r in document["results"]] == [tuple(row) for row in rows]
    assert all(r["ratio"] > 0 for r in document["results"])
    assert [r["operation"] for r in document["results"] if not r["target"]] == ["write vs encoding raw"]
