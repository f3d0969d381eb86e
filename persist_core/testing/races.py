"""Concurrency helpers of the contract kit: threads and processes racing on one key.

Child processes are started with the ``spawn`` method so that no driver state (sockets, locks, threads)
is inherited by a fork; the backend factory must therefore be picklable.
"""

from __future__ import annotations

import json
import multiprocessing
import queue as queue_module
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from persist_core.backend import Backend, Record
from persist_core.domains import DOMAINS
from persist_core.stores import BucketStore, CandleStore, CollectionStore, SlotStore, make_store
from persist_core.validation import encode_value

__all__ = [
    "RACE_CLOCK_MS",
    "RaceResult",
    "RemoveWriteRace",
    "race_processes",
    "race_remove_write",
    "race_threads",
    "run_racer",
]

#: The clock of racing candle stores: every candle below it counts as closed.
RACE_CLOCK_MS = 1_900_000_000_000
CANDLE_BASE_MS = 1_700_000_000_000

#: ``(racer id, keys it won or values it wrote)``
RaceResult = tuple[int, list[Any]]


def _clock() -> int:
    return RACE_CLOCK_MS


def race_context(kind: str, namespace: str) -> tuple[str, dict[str, Any]]:
    """The domain and context a race of ``kind`` (``candle``, ``log``, ``slot``) runs on."""
    if kind == "candle":
        return "candle", {"symbol": f"{namespace}RACE/USDT", "interval": "1m", "exchange_name": "race"}
    if kind == "log":
        return "log", {}
    if kind == "slot":
        return "signal", {"symbol": f"{namespace}RACE/USDT", "strategy_name": "race", "exchange_name": "race"}
    raise ValueError(kind)


def slot_value(who: int, round_no: int, size: int) -> dict[str, Any]:
    """A value whose parts all depend on ``who``: a blend of two writes would not be one of these."""
    return {"who": who, "round": round_no, "pad": f"{who}:" * size, "tail": [who] * 64}


def run_racer(
    backend: Backend, kind: str, namespace: str, who: int, keys: int, wait: Callable[[], object]
) -> list[Any]:
    """Race once: write ``keys`` candles / log ids (return the ones this racer won) or slot values."""
    name, context = race_context(kind, namespace)
    store = make_store(backend, DOMAINS[name], context, clock=_clock)
    wait()
    won: list[Any] = []
    if isinstance(store, CandleStore):
        for k in range(keys):
            ts = CANDLE_BASE_MS + k * 60_000
            if store.write([{"timestamp": ts, "who": who, "close": float(who)}]) == 1:
                won.append(ts)
    elif isinstance(store, CollectionStore):
        # The log store's write returns nothing, so race on the backend surface that it is built on:
        # insert_many reports whether this racer's entry was the one stored.
        for k in range(keys):
            entry_id = f"{namespace}race-{k:05d}"
            payload = encode_value({"id": entry_id, "who": who})
            if backend.insert_many(store.domain, [((entry_id,), Record(payload))]) == 1:
                won.append(entry_id)
    elif isinstance(store, SlotStore):
        for k in range(keys):
            store.write(slot_value(who, k, 2000))
            won.append(k)
    return won


def _child(
    factory: Callable[[], Backend], kind: str, namespace: str, who: int, keys: int, barrier: Any, results: Any
) -> None:
    try:
        backend = factory()
        backend.open()
        try:
            results.put((who, run_racer(backend, kind, namespace, who, keys, barrier.wait), None))
        finally:
            backend.close()
    except BaseException:
        # The parent reports this at once (and kills the racers still waiting at the barrier); without it, it
        # would wait out its timeout for a result that never comes, the traceback buried in the child's stderr.
        results.put((who, [], traceback.format_exc()))
        raise


def _collect(procs: list[Any], results: Any, timeout: float) -> list[RaceResult]:
    """Each racer's result; raise at once, with the child's traceback, when one fails or dies."""
    deadline = time.monotonic() + timeout
    out: list[RaceResult] = []
    while len(out) < len(procs):
        try:
            who, won, error = results.get(timeout=0.1)
        except queue_module.Empty:
            dead = [(who, proc.exitcode) for who, proc in enumerate(procs) if proc.exitcode not in (None, 0)]
            if dead:
                try:  # a failure report may still be on its way through the pipe
                    who, won, error = results.get(timeout=2.0)
                except queue_module.Empty:
                    raise AssertionError(
                        f"racing process {dead[0][0]} died with exit code {dead[0][1]} before reporting "
                        "(its stderr above may say why)"
                    ) from None
            elif time.monotonic() > deadline:
                raise AssertionError(f"a racing process did not finish within {timeout}s") from None
            else:
                continue
        if error is not None:
            raise AssertionError(f"racing process {who} failed:\n{error}")
        out.append((who, won))
    return out


def race_processes(
    factory: Callable[[], Backend], kind: str, namespace: str, racers: int = 3, keys: int = 20, timeout: float = 120.0
) -> list[RaceResult]:
    """Start ``racers`` processes that race on the same keys; return what each reported."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(racers, timeout=timeout)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(factory, kind, namespace, who, keys, barrier, results))
        for who in range(racers)
    ]
    for proc in procs:
        proc.start()
    failed = True
    try:
        out = _collect(procs, results, timeout)
        failed = False
    finally:
        for proc in procs:
            proc.join(timeout=1.0 if failed else timeout)  # after a failure, do not wait for the others
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5.0)
    codes = [proc.exitcode for proc in procs]
    if any(code != 0 for code in codes):
        raise AssertionError(f"racing processes exited with {codes}")
    return sorted(out)


def race_threads(backend: Backend, kind: str, namespace: str, racers: int = 4, keys: int = 20) -> list[RaceResult]:
    """Like :func:`race_processes`, with threads sharing one backend instance."""
    barrier = threading.Barrier(racers, timeout=60)
    out: list[RaceResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(who: int) -> None:
        try:
            won = run_racer(backend, kind, namespace, who, keys, barrier.wait)
            with lock:
                out.append((who, won))
        except BaseException as exc:  # re-raised in the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(who,)) for who in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return sorted(out)


@dataclass(frozen=True, slots=True)
class RemoveWriteRace:
    """What :func:`race_remove_write` saw.

    Attributes:
        writes: acknowledged writes; the writer wrote the counters ``1..writes`` in this order.
        removes: acknowledged removes.
        older: checks (one after each remove) that found a stored counter below the last write acknowledged
            before the check began: an older payload put back over an acknowledged write.
        first_older: ``(acknowledged, stored)`` counters of the first such check, or ``None``.
        final: the counter stored after both threads finished (removed records included), or ``None``.
        final_removed: whether that record is marked removed.
    """

    writes: int
    removes: int
    older: int
    first_older: tuple[int, int] | None
    final: int | None
    final_removed: bool | None


def _stored_counter(backend: Backend, domain: Any, key: Any) -> tuple[int | None, bool | None]:
    record = backend.get(domain, key)  # the back door: removed records included
    if record is None:
        return None, None
    return int(json.loads(record.payload)["n"]), record.removed


def race_remove_write(
    backend: Backend,
    domain: str = "measure",
    namespace: str = "",
    *,
    seconds: float = 1.0,
    max_ops: int | None = 400,
) -> RemoveWriteRace:
    """Race a remover against a writer of one bucket key, in two threads, for ``seconds`` or ``max_ops``.

    The writer writes ``{"n": 1}``, ``{"n": 2}``, ... and publishes the last counter acknowledged; the
    remover removes the key again and again, and after each remove reads the record through the back door
    (``backend.get``, removed records included). A remove only sets a flag, so from the moment write ``a``
    was acknowledged the stored counter can never be below ``a``: the final state of a key is the last
    acknowledged operation or one of those still running, never an older one. A remove that is a read
    followed by a write of what it read (issue 9: 1,677 older payloads in 20 s on the file backend) puts
    back the payload of a write that was acknowledged in between.
    """
    spec = DOMAINS[domain]
    if not spec.soft_delete:
        raise ValueError(f"the {domain} domain has no soft delete")
    context: dict[str, Any] = {field.name: f"{namespace}remove-race" for field in spec.context}
    store = make_store(backend, spec, context, clock=_clock)
    assert isinstance(store, BucketStore)
    key = (*tuple(context.values()), "k")
    deadline = time.monotonic() + seconds
    limit = max_ops if max_ops is not None else 1 << 62
    acked = 0
    seen = 0  # the last write the remover saw before it began a remove
    done = threading.Event()
    remover_failed = threading.Event()
    started = threading.Barrier(2, timeout=60)
    errors: list[BaseException] = []
    tally = {"removes": 0, "older": 0}
    first_older: list[tuple[int, int]] = []

    def writer() -> None:
        nonlocal acked
        try:
            started.wait()
            n = 0
            while n < limit and time.monotonic() < deadline:
                n += 1
                store.write("k", {"n": n, "pad": "x" * 64})
                acked = n  # published only once the write returned: acknowledged
                # Write again only once a remove of this write has begun, so that every write races a
                # remove; on a fast backend the writer would otherwise finish before the remover ran once.
                while seen < n and time.monotonic() < deadline and not remover_failed.is_set():
                    time.sleep(0)
        except BaseException as exc:  # re-raised in the calling thread below
            errors.append(exc)
        finally:
            done.set()

    def remover() -> None:
        nonlocal seen
        try:
            started.wait()
            while not done.is_set():
                # Remove only after a new write was acknowledged, so that each remove finds a live record
                # (removing a removed one may do nothing) and races the writer's next write.
                if acked == seen:
                    time.sleep(0)
                    continue
                seen = acked
                store.remove("k")
                tally["removes"] += 1
                before = acked  # read before the check's read: writes after it only raise the counter
                stored, _ = _stored_counter(backend, spec, key)
                if stored is not None and stored < before:
                    tally["older"] += 1
                    if not first_older:
                        first_older.append((before, stored))
        except BaseException as exc:
            errors.append(exc)
            remover_failed.set()

    threads = [threading.Thread(target=writer), threading.Thread(target=remover)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    if errors:
        raise errors[0]
    final, final_removed = _stored_counter(backend, spec, key)
    return RemoveWriteRace(
        writes=acked,
        removes=tally["removes"],
        older=tally["older"],
        first_older=first_older[0] if first_older else None,
        final=final,
        final_removed=final_removed,
    )
