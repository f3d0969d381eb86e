"""The kit's pytest plugin: the ``thorough`` profile, the untouched ``ci`` profile, and the deselection of
clauses for domains a test class declares its backend does not store. Each runs in a pytest of its own."""

from __future__ import annotations

import pytest

PROFILE_PROBE = """
from hypothesis import settings

def test_profile():
    current = settings()
    print(f"PROFILE {current.max_examples} {current.derandomize}")
"""


def _profile(pytester: pytest.Pytester, name: str, *options: str) -> str:
    pytester.makepyfile(test_probe=PROFILE_PROBE)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", "-q", f"--hypothesis-profile={name}", *options
    )
    result.assert_outcomes(passed=1)
    return next(line for line in result.outlines if line.startswith("PROFILE"))


def test_the_thorough_profile_is_registered_before_hypothesis_loads_it(pytester: pytest.Pytester) -> None:
    assert _profile(pytester, "thorough") == "PROFILE 500 False"


def test_the_plugin_leaves_hypothesis_ci_profile_alone(pytester: pytest.Pytester) -> None:
    """Installing the library must not change other projects' tests (this repository narrows ci itself)."""
    with_plugin = _profile(pytester, "ci")
    assert with_plugin == _profile(pytester, "ci", "-p", "no:backtest_persist")
    assert with_plugin.endswith(" True")  # derandomized


LOG_ONLY = """
import pytest
from persist_core.backend import Capabilities
from persist_core.backends.memory import MemoryBackend
from persist_core.testing import BackendContractTests

class LogOnly(MemoryBackend):
    capabilities = Capabilities(domains=frozenset({"log"}), shared_between_processes=False, survives_process_kill=False)

class TestLogOnly(BackendContractTests):
    declared_capabilities = DECLARED

    @pytest.fixture
    def backend_factory(self):
        return LogOnly
"""


def test_declared_capabilities_deselect_the_clauses_of_unstored_domains(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_log_only=LOG_ONLY.replace("DECLARED", "LogOnly.capabilities"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q", "-W", "error")
    collected = result.stdout.str()
    assert "test_log_is_append_only" in collected
    assert "test_collection_reads_ascending_by_id[log]" in collected
    assert "test_slot_round_trip" not in collected
    assert "[storage]" not in collected
    assert "test_candle_first_write_wins" not in collected
    assert "test_declared_capabilities_are_the_backends" in collected
    assert result.parseoutcomes()["deselected"] > 1000


def test_a_declaration_that_differs_from_the_backend_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_log_only=LOG_ONLY.replace("DECLARED", "Capabilities(domains=frozenset({'log'}))"))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", "-W", "error", "-k", "test_declared_capabilities_are_the_backends"
    )
    assert result.parseoutcomes() == {"failed": 1, "deselected": result.parseoutcomes()["deselected"]}
