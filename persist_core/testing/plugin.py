"""The ``pytest11`` plugin of backtest-persist: markers, the ``thorough`` Hypothesis profile, and the
deselection of kit clauses for domains that a backend declares it does not store.

Profiles: ``pytest --hypothesis-profile=thorough`` runs the kit's property tests and state machine with 500
examples each. ``--hypothesis-profile=ci`` is Hypothesis's own ``ci`` profile (derandomized, no deadline, no
example database), which this plugin leaves as it is: a plugin installed with a library must not change the
settings of other projects' tests.
"""

from __future__ import annotations

from typing import Any

#: The parameters through which kit clauses name the domain they exercise.
_DOMAIN_PARAMETERS = ("name", "kind")
#: The clause that compares a class's declared capabilities with the backend's; nothing to compare without them.
_DECLARATION_CLAUSE = "test_declared_capabilities_are_the_backends"


def _register_profiles() -> None:
    # At import, not in pytest_configure: Hypothesis's own plugin loads the --hypothesis-profile in its
    # pytest_configure, which may run before ours, and an unknown profile name aborts the run.
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # pragma: no cover - the kit itself needs hypothesis; the markers do not
        return
    quiet = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
    # Explicit parent and derandomize: under CI=true Hypothesis makes its ci profile (derandomized) the default,
    # and a deep run must explore new examples each time.
    settings.register_profile(
        "thorough",
        parent=settings.get_profile("default"),
        max_examples=500,
        deadline=None,
        derandomize=False,
        suppress_health_check=quiet,
    )


_register_profiles()


def pytest_configure(config: Any) -> None:
    """Register the kit's markers."""
    config.addinivalue_line("markers", "persist_contract: a clause of the backtest-persist contract kit")
    config.addinivalue_line(
        "markers", "persist_domains(*names): a kit clause that needs every one of these domains stored"
    )
    config.addinivalue_line(
        "markers", "persist_capabilities(**flags): a kit clause that needs these capability flags declared"
    )
    config.addinivalue_line(
        "markers", "persist_backend_level: a kit clause that drives the backend, not the stores (runs on one face)"
    )
    config.addinivalue_line("markers", "slow: a test that takes seconds (SIGKILL rounds, races, state machines)")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Deselect kit clauses for domains or capability flags outside a test class's ``declared_capabilities``."""
    from persist_core.backend import Capabilities
    from persist_core.domains import DOMAINS

    kept: list[Any] = []
    dropped: list[Any] = []
    for item in items:
        capabilities = getattr(getattr(item, "cls", None), "declared_capabilities", None)
        params = getattr(getattr(item, "callspec", None), "params", {})
        domains = [params[p] for p in _DOMAIN_PARAMETERS if isinstance(params.get(p), str) and params[p] in DOMAINS]
        for marker in item.iter_markers("persist_domains"):
            domains.extend(marker.args)
        flags: dict[str, bool] = {}
        for marker in item.iter_markers("persist_capabilities"):
            flags.update(marker.kwargs)
        if isinstance(capabilities, Capabilities):
            deselect = not all(capabilities.supports(d) for d in domains) or any(
                getattr(capabilities, flag) != wanted for flag, wanted in flags.items()
            )
        else:  # nothing declared: every clause runs, and the declaration check has nothing to compare
            deselect = getattr(item, "originalname", "") == _DECLARATION_CLAUSE
        if getattr(getattr(item, "cls", None), "face", "sync") == "async" and item.get_closest_marker(
            "persist_backend_level"
        ):
            deselect = True  # the same on both faces: it runs in the sync class
        (dropped if deselect else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
