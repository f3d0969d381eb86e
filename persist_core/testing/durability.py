"""The SIGKILL durability helper of the contract kit.

A child process writes in a loop (a slot, log entries, candles: those of the three the backend stores) and
acknowledges every write that returned on a pipe. The parent kills it with SIGKILL at a random moment,
reopens the backend and checks that every record is whole and either the old or the new value, and that
nothing acknowledged is lost.
"""

from __future__ import annotations

import functools
import multiprocessing
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from persist_core.backend import Backend
from persist_core.domains import DOMAINS
from persist_core.errors import PersistError
from persist_core.stores import CandleStore, CollectionStore, ObjectSlotStore, SlotStore, make_store
from persist_core.testing.killing import kill_writer

__all__ = ["KillReport", "expected_slot_value", "run_kill_test"]

_CLOCK_MS = 1_900_000_000_000
_CANDLE_BASE_MS = 1_600_000_000_000
_ACK_SLOT, _ACK_LOG, _ACK_CANDLE = 0, 1, 2


def expected_slot_value(seq: int) -> dict[str, Any]:
    """The value the writer stores at step ``seq``; sizes vary so that some writes take long."""
    size = (seq * 7919) % 30_000
    return {"seq": seq, "pad": "p" * size, "tail": [seq, size, "end"]}


def _stores(
    backend: Backend, namespace: str
) -> tuple[ObjectSlotStore | None, CollectionStore | None, CandleStore | None]:
    """The writer's slot, log and candle stores; ``None`` for a domain the backend does not store."""
    ctx = {"symbol": f"{namespace}KILL/USDT", "strategy_name": "kill", "exchange_name": "kill"}
    slot = make_store(backend, DOMAINS["signal"], ctx)
    log = make_store(backend, DOMAINS["log"], {})
    candle = make_store(
        backend,
        DOMAINS["candle"],
        {"symbol": f"{namespace}KILL/USDT", "interval": "1m", "exchange_name": "kill"},
        clock=lambda: _CLOCK_MS,
    )
    if not (isinstance(slot, SlotStore) and isinstance(log, CollectionStore) and isinstance(candle, CandleStore)):
        raise TypeError("unexpected store kinds")
    caps = backend.capabilities
    return (
        slot if caps.supports("signal") else None,
        log if caps.supports("log") else None,
        candle if caps.supports("candle") else None,
    )


def _writer(factory: Callable[[], Backend], namespace: str, conn: Any) -> None:
    backend = factory()
    backend.open()
    slot, log, candle = _stores(backend, namespace)
    seq = 0
    while True:  # runs until killed
        if slot is not None:
            slot.write(expected_slot_value(seq))
            conn.send_bytes(bytes([_ACK_SLOT]) + seq.to_bytes(8, "little"))
        if log is not None:
            log.write([{"id": f"{namespace}kill-{seq:08d}", "seq": seq, "pad": "l" * (seq % 5000)}])
            conn.send_bytes(bytes([_ACK_LOG]) + seq.to_bytes(8, "little"))
        if candle is not None:
            candle.write([{"timestamp": _CANDLE_BASE_MS + seq * 60_000, "close": float(seq)}])
            conn.send_bytes(bytes([_ACK_CANDLE]) + seq.to_bytes(8, "little"))
        seq += 1


@dataclass
class KillReport:
    """What one kill round saw: acknowledged sequence numbers per kind, and what the reopen found."""

    namespace: str
    acked: dict[int, int] = field(default_factory=dict)
    slot_seq_found: int | None = None
    problems: list[str] = field(default_factory=list)


def _verify(backend: Backend, report: KillReport) -> None:
    slot, log, candle = _stores(backend, report.namespace)
    if slot is not None:
        _verify_slot(slot, report)
    if log is not None:
        _verify_log(log, report)
    if candle is not None:
        _verify_candles(candle, report)


def _verify_slot(slot: ObjectSlotStore, report: KillReport) -> None:
    last_slot = report.acked.get(_ACK_SLOT, -1)
    value: dict[str, Any] | None = slot.read()
    if value is None:
        if last_slot >= 0:
            report.problems.append(f"slot lost: acknowledged seq {last_slot}, found nothing")
    else:
        seq = value.get("seq") if isinstance(value, dict) else None
        report.slot_seq_found = seq
        if not isinstance(seq, int) or value != expected_slot_value(seq):
            report.problems.append(f"slot torn or foreign: {str(value)[:200]}")
        elif seq < last_slot or seq > last_slot + 1:
            report.problems.append(f"slot holds seq {seq}, acknowledged {last_slot}: neither old nor new")


def _verify_log(log: CollectionStore, report: KillReport) -> None:
    items: list[dict[str, Any]] = log.read()
    entries = {e["id"]: e for e in items if e["id"].startswith(f"{report.namespace}kill-")}
    for seq in range(report.acked.get(_ACK_LOG, -1) + 1):
        entry = entries.get(f"{report.namespace}kill-{seq:08d}")
        if entry is None:
            report.problems.append(f"acknowledged log entry {seq} lost")
        elif entry != {"id": f"{report.namespace}kill-{seq:08d}", "seq": seq, "pad": "l" * (seq % 5000)}:
            report.problems.append(f"log entry {seq} torn")


def _verify_candles(candle: CandleStore, report: KillReport) -> None:
    last_candle = report.acked.get(_ACK_CANDLE, -1)
    if last_candle >= 0:
        window = candle.read(last_candle + 1, _CANDLE_BASE_MS)
        if window is None:
            report.problems.append(f"acknowledged candles lost (acknowledged up to {last_candle})")
        elif [c["close"] for c in window] != [float(s) for s in range(last_candle + 1)]:
            report.problems.append("candles torn")


def run_kill_test(
    factory: Callable[[], Backend],
    *,
    rounds: int = 3,
    min_delay: float = 0.05,
    max_delay: float = 0.6,
    seed: int = 0,
    namespace: str = "",
    start_timeout: float = 60.0,
) -> list[KillReport]:
    """Kill a writer process ``rounds`` times and verify the backend after each kill.

    Returns one :class:`KillReport` per round; a round's ``problems`` list is empty when the backend kept
    every acknowledged write and no torn record was seen.
    """
    rng = random.Random(seed)
    ctx = multiprocessing.get_context("spawn")
    reports = []
    for round_no in range(rounds):
        report = KillReport(namespace=f"{namespace}r{round_no}-{seed}-")
        kill_writer(
            ctx,
            _writer,
            (factory, report.namespace),
            delay=rng.uniform(min_delay, max_delay),
            start_timeout=start_timeout,
            on_message=functools.partial(_ack, report=report),
        )
        backend = factory()
        try:
            backend.open()
            _verify(backend, report)
        except PersistError as exc:  # a torn record may fail to decode: that is a finding, not a crash
            report.problems.append(f"reopening or reading after the kill failed: {exc!r}")
        finally:
            backend.close()
        reports.append(report)
    return reports


def _ack(message: bytes, report: KillReport) -> None:
    report.acked[message[0]] = int.from_bytes(message[1:], "little")
