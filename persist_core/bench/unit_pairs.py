"""The unit-of-work rows: a live engine step that writes five domains, as one unit against five separate writes.

The step is the demo's commit (issue 13): the signal (the 1 KB bench row), the risk profile's positions, the
public storage row, a log entry and the strategy slot's cursor. "Ours" is ``with persist.live.unit()``; the
reference ("raw") is the same five writes through the same stores one after another, each its own round trip
(or fsync pair). Each backend whose server is not reachable is reported as skipped by the runner.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from persist_core.bench.core_pairs import sample_value
from persist_core.bench.harness import Pair
from persist_core.config import resolve_routes
from persist_core.persist import ModeStores, Persist, Unit

__all__ = ["TARGETS", "bench_pairs"]

#: Issue 13's targets: a five-domain step as one unit, against the five writes made separately.
TARGETS: dict[tuple[str, str], float] = {
    ("postgresql", "5-domain step as a unit"): 3.0,
    ("file", "5-domain step as a unit"): 2.0,
}

_SERVERS = {
    "postgresql": (
        "PERSIST_TEST_POSTGRES_URL",
        "postgresql+psycopg://persist:persist-test-pw@127.0.0.1:5432/persist_test",
    ),
    "mariadb": ("PERSIST_TEST_MYSQL_URL", "mysql+pymysql://persist:persist-test-pw@127.0.0.1:3306/persist_test"),
    "mongodb": ("PERSIST_TEST_MONGO_URL", "mongodb://127.0.0.1:27017/persist_test"),
}
_REDIS = ("PERSIST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_CTX = {"symbol": "UNIT/USDT", "strategy_name": "bench-unit", "exchange_name": "bench"}


class _StepRows:
    """One backend's storage and the step written through it, as a unit or as separate writes."""

    persist: Persist

    def __init__(self, url: Callable[[str], str]) -> None:
        self._url = url
        self._root = ""
        self.value = sample_value()

    def setup(self) -> None:
        self._root = tempfile.mkdtemp(prefix="persist-bench-unit-")
        url = self._url(self._root)
        redis = os.environ.get(_REDIS[0]) or _REDIS[1]
        options = {"mongodb": {"redis_url": redis}, "postgresql": {}, "mysql": {}}
        self.persist = Persist(resolve_routes(url, env={}), options=options)

    def teardown(self) -> None:
        self.persist.close()
        shutil.rmtree(self._root, ignore_errors=True)

    def _step(self, target: ModeStores | Unit, tag: str, i: int) -> None:
        signal_id = f"{tag}-{i}"
        target.signal(**_CTX).write({**self.value, "id": signal_id})
        target.risk(risk_name="bench-unit", exchange_name="bench").write({signal_id: {"qty": i}})
        target.storage(backtest=False).write([{"id": signal_id, "status": "opened", "step": i}])
        target.log().write([{"id": f"log-{signal_id}", "topic": "open", "step": i}])
        target.strategy(**_CTX).write({"cursor": i, "phase": "committed"})

    def as_unit(self, i: int) -> None:
        with self.persist.live.unit() as unit:
            self._step(unit, "unit", i)

    def separately(self, i: int) -> None:
        self._step(self.persist.live, "separate", i)


def _file(root: str) -> str:
    return f"file:{os.path.join(root, 'state')}"


def _sqlite(root: str) -> str:
    return f"sqlite:///{os.path.join(root, 'state.db')}"


def _server(name: str) -> Callable[[str], str]:
    variable, default = _SERVERS[name]
    return lambda _root: os.environ.get(variable) or default


def bench_pairs(quick: bool) -> list[Pair]:
    """The five-domain step per backend; ``quick`` runs fewer steps."""
    n = 60 if quick else 600
    backends: list[tuple[str, Callable[[str], str]]] = [
        ("file", _file),
        ("sqlite", _sqlite),
        ("postgresql", _server("postgresql")),
        ("mariadb", _server("mariadb")),
        ("mongodb", _server("mongodb")),
    ]
    pairs = []
    for name, url in backends:
        rows: Any = _StepRows(url)
        pairs.append(
            Pair(
                name, "5-domain step as a unit", rows.as_unit, rows.separately, "5 separate writes",
                n=n, setup=rows.setup, teardown=rows.teardown,
            )
        )  # fmt: skip
    return pairs
