"""The kit's pytest plugin: the ``thorough`` profile, the untouched ``ci`` profile, and the deselection of
clauses for domains a test class declares its backend does not store. Each runs in a pytest of its own."""

from __future__ import annotations

import re

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
import re

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


def test_the_summary_counts_adapter_and_store_level_clauses_apart_and_lists_capability_skips(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_log_only=LOG_ONLY.replace("DECLARED", "LogOnly.capabilities"))
    store_level = "test_collection_bad_item_rejects_whole_batch"
    selection = f"{store_level} or test_log_is_append_only or test_records_survive_reopen or test_storage_error"
    collected = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q", "-k", selection)
    store_level_items = sum(1 for line in collected.outlines if f"::{store_level}[" in line)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-W", "error", "-k", selection)
    outcomes = result.parseoutcomes()
    summary = result.stdout.str().split("backtest-persist contract kit", 1)[1]
    match = re.search(
        r"TestLogOnly: adapter clauses: (\d+) passed, (\d+) skipped by capability; store-level clauses: (\d+) passed",
        summary,
    )
    assert match is not None, summary
    adapter, skipped, store = map(int, match.groups())
    assert store == store_level_items > 0
    assert adapter + store == outcomes["passed"]
    assert skipped == outcomes["skipped"] > 0
    # Each skip reason is listed with the clauses it skipped, and the deselection by declared capabilities.
    assert "no break_storage hook" in summary
    assert "test_storage_error_surfaces_as_persist_error" in summary
    assert "shared_between_processes=False: test_records_survive_reopen" in summary
    assert "declared_capabilities: a domain the backend does not store" in summary
    # The marker selects by level: only the adapter's clauses, or only the store-level ones.
    only_store = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", "--collect-only", "-k", selection, "-m", "persist_store_level"
    )
    assert sum(1 for line in only_store.outlines if "::test_" in line) == store_level_items


def test_every_store_level_clause_is_a_clause_of_the_kit() -> None:
    """The list that the summary sorts clauses by names existing clauses (a rename must update it)."""
    from persist_core.testing import BackendContractTests
    from persist_core.testing.report import STORE_LEVEL_CLAUSES

    assert sorted(name for name in STORE_LEVEL_CLAUSES if not callable(getattr(BackendContractTests, name, None))) == []
