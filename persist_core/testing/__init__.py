"""The contract test kit for backtest-persist backends (CONTRACTS.md section 8).

Needs the ``testing`` extra (pytest and Hypothesis)::

    import functools, pytest
    from persist_core.testing import BackendContractTests
    from my_adapter import MyBackend

    class TestMyBackend(BackendContractTests):
        @pytest.fixture
        def backend_factory(self, tmp_path):
            return functools.partial(MyBackend, tmp_path / "store")

See ``docs/writing-an-adapter.md``.
"""

from persist_core.testing.backend_clauses import StorageBreaker, broken_folder
from persist_core.testing.contract import BackendContractTests
from persist_core.testing.durability import KillReport, run_kill_test
from persist_core.testing.races import race_processes, race_threads
from persist_core.testing.stateful import PersistStateMachine, state_machine_for

__all__ = [
    "BackendContractTests",
    "KillReport",
    "PersistStateMachine",
    "StorageBreaker",
    "broken_folder",
    "race_processes",
    "race_threads",
    "run_kill_test",
    "state_machine_for",
]
