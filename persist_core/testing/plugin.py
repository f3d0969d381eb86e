"""The ``pytest11`` plugin of backtest-persist: markers and Hypothesis profiles.

Profiles: ``ci`` (derandomized, moderate example counts, no deadline) and ``thorough`` (many examples).
Select one with ``pytest --hypothesis-profile=ci``.
"""

from __future__ import annotations

from typing import Any


def pytest_configure(config: Any) -> None:
    """Register the kit's markers and Hypothesis profiles."""
    config.addinivalue_line("markers", "persist_contract: a clause of the backtest-persist contract kit")
    config.addinivalue_line("markers", "slow: a test that takes seconds (SIGKILL rounds, races, state machines)")
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # pragma: no cover - the kit itself needs hypothesis; the markers do not
        return
    quiet = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
    settings.register_profile(
        "ci", derandomize=True, max_examples=20, deadline=None, print_blob=True, suppress_health_check=quiet
    )
    settings.register_profile("thorough", max_examples=500, deadline=None, suppress_health_check=quiet)
