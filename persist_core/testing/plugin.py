"""The ``pytest11`` plugin of backtest-persist: markers, the ``thorough`` Hypothesis profile, the
deselection of kit clauses for domains that a backend declares it does not store, and the kit's summary at the
end of the run (adapter clauses apart from store-level ones, and what was skipped by capability).

Profiles: ``pytest --hypothesis-profile=thorough`` runs the kit's property tests and state machine with 500
examples each. ``--hypothesis-profile=ci`` is Hypothesis's own ``ci`` profile (derandomized, no deadline, no
example database), which this plugin leaves as it is: a plugin installed with a library must not change the
settings of other projects' tests.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from persist_core.testing.report import KitTally

#: The parameters through which kit clauses name the domain they exercise.
_DOMAIN_PARAMETERS = ("name", "kind")
#: The clause that compares a class's declared capabilities with the backend's; nothing to compare without them.
_DECLARATION_CLAUSE = "test_declared_capabilities_are_the_backends"
_TALLY = pytest.StashKey[KitTally]()


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
    config.addinivalue_line(
        "markers", "persist_store_level: a kit clause of a rule the stores enforce (reported apart from adapter ones)"
    )
    config.addinivalue_line("markers", "slow: a test that takes seconds (SIGKILL rounds, races, state machines)")
    config.stash[_TALLY] = KitTally()


def _kit_class(item: Any) -> bool:
    """Whether ``item`` is a clause of a contract kit class (the kit module is loaded only if one was collected)."""
    contract = sys.modules.get("persist_core.testing.contract")
    cls = getattr(item, "cls", None)
    return contract is not None and isinstance(cls, type) and issubclass(cls, contract.BackendContractTests)


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects by the persist_store_level marker added here
def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Deselect kit clauses for domains or capability flags outside a test class's ``declared_capabilities``;
    mark the store-level clauses ``persist_store_level`` (``-m "not persist_store_level"`` runs the adapter's)."""
    from persist_core.backend import Capabilities
    from persist_core.domains import DOMAINS
    from persist_core.testing.report import is_store_level

    tally = config.stash.get(_TALLY, None)
    kept: list[Any] = []
    dropped: list[Any] = []
    for item in items:
        reason = ""
        capabilities = getattr(getattr(item, "cls", None), "declared_capabilities", None)
        params = getattr(getattr(item, "callspec", None), "params", {})
        domains = [params[p] for p in _DOMAIN_PARAMETERS if isinstance(params.get(p), str) and params[p] in DOMAINS]
        for marker in item.iter_markers("persist_domains"):
            domains.extend(marker.args)
        flags: dict[str, bool] = {}
        for marker in item.iter_markers("persist_capabilities"):
            flags.update(marker.kwargs)
        if isinstance(capabilities, Capabilities):
            unstored = sorted({d for d in domains if not capabilities.supports(d)})
            unmet = [
                f"{flag}={getattr(capabilities, flag)}" for flag, w in flags.items() if getattr(capabilities, flag) != w
            ]
            if unstored:
                reason = "declared_capabilities: a domain the backend does not store"
            elif unmet:
                reason = f"declared_capabilities: {', '.join(unmet)}"
            deselect = bool(reason)
        else:  # nothing declared: every clause runs, and the declaration check has nothing to compare
            deselect = getattr(item, "originalname", "") == _DECLARATION_CLAUSE
        if getattr(getattr(item, "cls", None), "face", "sync") == "async" and item.get_closest_marker(
            "persist_backend_level"
        ):
            deselect, reason = True, ""  # the same on both faces: it runs (and is counted) in the sync class
        kit = _kit_class(item)
        if kit and is_store_level(item):
            item.add_marker("persist_store_level")
        if tally is not None and kit:
            if reason:
                tally.deselect(item, reason)
            elif not deselect:
                tally.track(item)
        (dropped if deselect else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_runtest_logreport(report: Any) -> None:
    """Count the outcome of each kit clause."""
    tally = _CURRENT.get("tally")
    if tally is not None:
        tally.record(report)


def pytest_sessionstart(session: Any) -> None:
    """Remember the run's tally for the report hook (which gets no config)."""
    _CURRENT["tally"] = session.config.stash.get(_TALLY, None)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print how many adapter and store-level clauses passed per kit class, and what capabilities skipped."""
    tally = terminalreporter.config.stash.get(_TALLY, None)
    lines = tally.lines() if tally is not None else []
    if lines:
        terminalreporter.write_sep("=", "backtest-persist contract kit")
        for line in lines:
            terminalreporter.write_line(line)


_CURRENT: dict[str, KitTally | None] = {}
