"""Contract clauses of units of work (:meth:`~persist_core.backend.Backend.apply_unit`).

Two promises: a unit ends exactly as its writes made one by one would (every backend, on both faces: a
property against a model), and, where the backend declares ``atomic_units`` and survives a process kill, a
unit is all or none after SIGKILL (:func:`run_unit_kill_test`: a forked writer commits five-domain units
until it is killed; the parent reopens the storage and checks the last unit whole and the next one absent).
"""

from __future__ import annotations

import json
import multiprocessing
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persist_core.backend import Backend, Key
from persist_core.collecting import CollectingBackend
from persist_core.domains import DOMAINS
from persist_core.errors import PersistError
from persist_core.stores import make_store
from persist_core.testing.async_face import run
from persist_core.testing.killing import kill_writer
from persist_core.units import PendingWrites, Write

__all__ = ["UnitClauses", "UnitKillReport", "run_unit_kill_test"]

_CLOCK_MS = 1_900_000_000_000
#: How long the kill check lets a server settle before it reads a unit that looked partial again.
_SETTLE_S = 0.5
_CANDLE_BASE_MS = 1_600_000_000_000
#: The domains a unit of the kill test writes, in the order :func:`_visible` checks them: the demo's step and a
#: soft delete.
UNIT_DOMAINS = ("signal", "risk", "storage", "log", "measure", "strategy")


class _UnitWriter:
    """Builds units on ``backend`` through the ordinary stores, bound to a collecting backend."""

    def __init__(self, backend: Backend, namespace: str) -> None:
        self.backend = backend
        self.namespace = namespace
        self.pending: PendingWrites[Backend] = PendingWrites("kit")
        self._collector = CollectingBackend(backend, self.pending)

    def store(self, name: str, **context: Any) -> Any:
        return make_store(self._collector, DOMAINS[name], context, clock=lambda: _CLOCK_MS)

    def take(self) -> list[Write]:
        writes = [w for _, part in self.pending.take() for w in part]
        self.pending = PendingWrites("kit")
        self._collector = CollectingBackend(self.backend, self.pending)
        return writes


def _ctx(namespace: str) -> dict[str, Any]:
    return {"symbol": f"{namespace}U/USDT", "strategy_name": "unit", "exchange_name": "kit"}


def _step(writer: _UnitWriter, seq: int) -> list[Write]:
    """Unit ``seq`` of the kill test: five domains of the demo's step and a soft delete, sizes varying."""
    ns = writer.namespace
    pad = "u" * ((seq * 7919) % 20_000)
    writer.store("signal", **_ctx(ns)).write({"seq": seq, "pad": pad})
    writer.store("risk", risk_name=f"{ns}risk", exchange_name="kit").write({f"p{seq}": {"seq": seq}})
    writer.store("storage", backtest=False).write([{"id": f"{ns}s-{seq:08d}", "seq": seq}])
    writer.store("log").write([{"id": f"{ns}l-{seq:08d}", "seq": seq, "pad": pad[:3000]}])
    writer.store("measure", bucket=f"{ns}m").write(f"k{seq:08d}", seq)
    if seq:
        writer.store("measure", bucket=f"{ns}m").remove(f"k{seq - 1:08d}")
    writer.store("strategy", **_ctx(ns)).write({"cursor": seq})
    return writer.take()


def _unit_writer(factory: Callable[[], Backend], namespace: str, conn: Any) -> None:
    backend = factory()
    backend.open()
    writer = _UnitWriter(backend, namespace)
    seq = 0
    while True:  # runs until killed
        backend.apply_unit(_step(writer, seq))
        conn.send_bytes(seq.to_bytes(8, "little"))
        seq += 1


@dataclass
class UnitKillReport:
    """One kill round: the last unit acknowledged, the last one found whole, and what was wrong."""

    namespace: str
    acked: int = -1
    found: int = -1
    problems: list[str] = field(default_factory=list)


def _visible(backend: Backend, namespace: str, seq: int) -> list[bool]:
    """Which of unit ``seq``'s six writes are visible, read through the back door (``get``: no scans)."""
    ns = namespace
    signal = backend.get(DOMAINS["signal"], tuple(_ctx(ns).values()))
    strategy = backend.get(DOMAINS["strategy"], tuple(_ctx(ns).values()))
    risk = backend.get(DOMAINS["risk"], (f"{ns}risk", "kit"))
    removed = backend.get(DOMAINS["measure"], (f"{ns}m", f"k{seq - 1:08d}")) if seq else None
    return [
        signal is not None and json.loads(signal.payload)["seq"] == seq,
        risk is not None and f"p{seq}" in json.loads(risk.payload),
        backend.get(DOMAINS["storage"], (False, f"{ns}s-{seq:08d}")) is not None,
        backend.get(DOMAINS["log"], (f"{ns}l-{seq:08d}",)) is not None,
        backend.get(DOMAINS["measure"], (f"{ns}m", f"k{seq:08d}")) is not None
        and (seq == 0 or bool(removed and removed.removed)),
        strategy is not None and json.loads(strategy.payload)["cursor"] == seq,
    ]


def _verify_units(backend: Backend, report: UnitKillReport) -> None:
    ns, acked = report.namespace, report.acked
    # The unit after the last acknowledged one may or may not have been committed when the kill landed. If it
    # was, it replaced the slots (signal, risk, strategy) of the acknowledged one: only that one's own rows remain.
    for seq in (acked + 1, acked):
        if seq < 0:
            continue
        seen = dict(zip(UNIT_DOMAINS, _visible(backend, ns, seq), strict=True))
        if report.found > seq:
            seen = {name: seen[name] for name in ("storage", "log", "measure")}
        if all(seen.values()):
            report.found = max(report.found, seq)
        elif any(seen.values()):
            report.problems.append(f"unit {seq} is visible in part: {seen}")
        elif seq <= acked:
            report.problems.append(f"acknowledged unit {seq} is lost")
    last = max(report.found, acked)
    if last >= 1 and not all(_visible(backend, ns, last - 1)[2:4]):
        report.problems.append(f"acknowledged unit {last - 1} lost its log or storage row")


def run_unit_kill_test(
    factory: Callable[[], Backend],
    *,
    rounds: int,
    min_delay: float = 0.0,
    max_delay: float = 0.03,
    seed: int = 0,
    namespace: str = "",
    start_timeout: float = 30.0,
) -> list[UnitKillReport]:
    """Kill a forked unit writer ``rounds`` times (SIGKILL after a random delay past its first unit) and check,
    after each kill, on freshly opened storage, that the units are all or none and none acknowledged is lost.

    The writer is forked, not spawned, so that a round costs milliseconds and a thousand rounds fit in a test
    run; ``factory`` builds a new backend in the child (nothing opened is shared across the fork).
    """
    rng = random.Random(seed)
    ctx = multiprocessing.get_context("fork")
    reports = []
    for round_no in range(rounds):
        report = UnitKillReport(namespace=f"{namespace}k{round_no}-")

        def ack(message: bytes, report: UnitKillReport = report) -> None:
            report.acked = int.from_bytes(message, "little")

        kill_writer(
            ctx,
            _unit_writer,
            (factory, report.namespace),
            delay=rng.uniform(min_delay, max_delay),
            start_timeout=start_timeout,
            on_message=ack,
        )
        backend = factory()
        try:
            backend.open()
            _verify_units(backend, report)
            if report.problems:
                # A database server may still be finishing the killed writer's last unit (it notices a lost
                # client only when it answers): one that commits while it is being read looks partial. A unit
                # left partial by the crash stays so: the settled state decides.
                time.sleep(_SETTLE_S)
                report.problems, report.found = [], -1
                _verify_units(backend, report)
        except PersistError as exc:
            report.problems.append(f"reopening or reading after the kill failed: {exc!r}")
        finally:
            backend.close()
        reports.append(report)
    return reports


def _model_ops() -> st.SearchStrategy[list[list[tuple[str, int, int]]]]:
    """Units (lists) of ``(op, key, value)``: the writes of a few domains that share keys, so that a unit
    writes one key twice, removes what it wrote, inserts over an insert."""
    op = st.tuples(
        st.sampled_from(["slot", "log", "storage", "bucket", "remove", "candle"]), st.integers(0, 3), st.integers(0, 99)
    )
    return st.lists(st.lists(op, max_size=12), min_size=1, max_size=3)


class UnitClauses:
    """Mixed into :class:`~persist_core.testing.contract.BackendContractTests`."""

    #: The kill rounds of :meth:`test_sigkill_leaves_each_unit_all_or_none`. Our own backends also run the issue's
    #: 200 to 1,000 (tests/test_unit_kill_file.py, tests/sql/test_unit_kill.py, tests/mongo/test_unit_kill.py).
    unit_kill_rounds: ClassVar[int] = 20
    face: ClassVar[str]

    @classmethod
    def async_backend_for(cls, backend: Backend) -> Any:  # pragma: no cover - BackendContractTests defines it
        raise NotImplementedError

    def _apply(self, backend: Backend, writes: Sequence[Write]) -> None:
        if self.face == "async":
            run(self.async_backend_for(backend).apply_unit(writes))
        else:
            backend.apply_unit(writes)

    def test_apply_unit_ends_as_the_writes_one_by_one(self, backend: Backend, namespace: str) -> None:
        """Property: units of puts, first-write-wins inserts and soft deletes leave what a model of the same
        calls made one at a time leaves (a last put wins, a first insert wins, a remove keeps the record)."""
        wanted = ("signal", "log", "storage", "measure", "candle")
        if not all(backend.capabilities.supports(name) for name in wanted):
            pytest.skip(f"the backend does not store all of {', '.join(wanted)} (Capabilities.domains)")
        examples = iter(range(10**6))

        @settings(
            max_examples=max(10, settings().max_examples // 4),
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(units=_model_ops())
        def example(units: list[list[tuple[str, int, int]]]) -> None:
            ns = f"{namespace}{next(examples)}-"
            writer = _UnitWriter(backend, ns)
            slot: int | None = None
            log: dict[int, int] = {}
            storage: dict[int, int] = {}
            bucket: dict[int, tuple[int, bool]] = {}
            candles: dict[int, int] = {}
            for unit in units:
                for op, key, value in unit:
                    if op == "slot":
                        writer.store("signal", **_ctx(ns)).write({"v": value})
                        slot = value
                    elif op == "log":
                        writer.store("log").write([{"id": f"{ns}{key}", "v": value}])
                        log.setdefault(key, value)
                    elif op == "storage":
                        writer.store("storage", backtest=True).write([{"id": f"{ns}{key}", "v": value}])
                        storage[key] = value
                    elif op == "bucket":
                        writer.store("measure", bucket=ns).write(f"k{key}", value)
                        bucket[key] = (value, False)
                    elif op == "remove":
                        writer.store("measure", bucket=ns).remove(f"k{key}")
                        if key in bucket:
                            bucket[key] = (bucket[key][0], True)
                    else:
                        candle = {"timestamp": _CANDLE_BASE_MS + key * 60_000, "close": float(value)}
                        writer.store("candle", symbol=f"{ns}C", interval="1m", exchange_name="kit").write([candle])
                        candles.setdefault(key, value)
                self._apply(backend, writer.take())
            self._check_model(backend, ns, slot, log, storage, bucket, candles)

        example()

    @staticmethod
    def _check_model(
        backend: Backend,
        ns: str,
        slot: int | None,
        log: dict[int, int],
        storage: dict[int, int],
        bucket: dict[int, tuple[int, bool]],
        candles: dict[int, int],
    ) -> None:
        def value(domain: str, key: Key) -> tuple[Any, bool] | None:
            record = backend.get(DOMAINS[domain], key)
            return None if record is None else (json.loads(record.payload), record.removed)

        def field_of(found: tuple[Any, bool] | None, name: str) -> Any:
            return None if found is None else found[0][name]

        assert field_of(value("signal", tuple(_ctx(ns).values())), "v") == slot
        for key in range(4):
            assert field_of(value("log", (f"{ns}{key}",)), "v") == log.get(key), ("log", key)
            assert field_of(value("storage", (True, f"{ns}{key}")), "v") == storage.get(key), ("storage", key)
            assert value("measure", (ns, f"k{key}")) == bucket.get(key), ("measure", key)
            candle = value("candle", (f"{ns}C", "1m", "kit", _CANDLE_BASE_MS + key * 60_000))
            assert field_of(candle, "close") == (float(candles[key]) if key in candles else None), ("candle", key)

    @pytest.mark.persist_backend_level
    def test_apply_unit_of_no_writes_changes_nothing(self, backend: Backend, namespace: str) -> None:
        self._apply(backend, [])
        spec = DOMAINS["log"]
        if backend.capabilities.supports("log"):
            assert backend.get(spec, (f"{namespace}none",)) is None

    @pytest.mark.persist_backend_level
    @pytest.mark.persist_capabilities(atomic_units=True, survives_process_kill=True, shared_between_processes=True)
    def test_sigkill_leaves_each_unit_all_or_none(self, backend_factory: Callable[[], Backend], namespace: str) -> None:
        """A writer forked from this process commits units until SIGKILL; after every kill, on reopened storage,
        the last unit is whole or absent, never in part, and no acknowledged unit is lost."""
        probe = backend_factory()
        if not all(probe.capabilities.supports(name) for name in UNIT_DOMAINS):
            pytest.skip(f"the backend does not store all of {', '.join(UNIT_DOMAINS)} (Capabilities.domains)")
        if not (probe.capabilities.atomic_units and probe.capabilities.survives_process_kill):
            pytest.skip("the backend declares no atomic units that survive a process kill")
        reports = run_unit_kill_test(backend_factory, rounds=self.unit_kill_rounds, namespace=namespace)
        assert sum(r.acked >= 0 for r in reports) == len(reports)
        assert [p for r in reports for p in r.problems] == []
