"""One body for both faces: an operation is a generator that yields its driver calls (issue 10).

The Mongo backend's operations (:mod:`persist_mongo._operations`) and the value cache's commands
(:mod:`persist_mongo._cache`) are written once, as generators, against the driver objects they are given.
Each time one needs the server it yields the value of the driver call, ``doc = yield collection.find_one(q)``:

- with pymongo's and redis-py's sync objects the call has already run (its error, if any, raised right at
  the call) and :func:`run` sends its result straight back;
- with ``AsyncMongoClient``'s and ``redis.asyncio``'s objects the call is a coroutine: :func:`run_async`
  awaits it and sends its result back, or throws its error in at the same ``yield``, so the generator's own
  ``try``/``except`` clauses translate it exactly as on the sync face.

So the queries, documents, cache logic, key locks and error translation are the same code on both faces,
and only the I/O differs. The rule for a body: every ``yield`` is the value of one driver call (or of the
face's ``sleep``), made inside the ``try`` that handles its errors, or a :class:`Together` of independent
operations, which each face runs at the same time.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Awaitable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Steps", "Together", "run", "run_async"]

_T = TypeVar("_T")

#: An operation: yields driver calls' values (sync) or awaitables (asyncio), receives their results.
Steps = Generator[Any, Any, _T]

# Threads of the sync face's Together steps: at most this many operations run at once beside the caller.
_THREADS = 8
_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


class Together:
    """A step that runs independent operations at the same time (each its own generator, on the same driver
    objects): ``results = yield Together([op1, op2])`` receives their results in order, or the first error in
    order once all have ended. The sync face runs them in threads (each in a copy of the caller's context, so
    under its deadline), the asyncio face gathers them."""

    __slots__ = ("operations",)

    def __init__(self, operations: list[Steps[Any]]) -> None:
        self.operations = operations


def _threads() -> ThreadPoolExecutor:
    """The process's pool for :class:`Together` (a forked child makes its own: its parent's threads are gone)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(_THREADS, thread_name_prefix="persist-mongo"))
        return _pool[1]


def _ended(outcomes: list[Any]) -> list[Any]:
    """The results of a :class:`Together` step, or its first error (in order of its operations)."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes


def _together(step: Together) -> list[Any]:
    first, *rest = step.operations
    futures: list[Future[Any]] = [_threads().submit(contextvars.copy_context().run, run, op) for op in rest]
    outcomes: list[Any] = []
    try:
        outcomes.append(run(first))
    except BaseException as exc:  # the others still run to their end (their locks released) before it is raised
        outcomes.append(exc)
    for future in futures:
        error = future.exception()
        outcomes.append(future.result() if error is None else error)
    return _ended(outcomes)


async def _gather(step: Together) -> list[Any]:
    return _ended(list(await asyncio.gather(*(run_async(op) for op in step.operations), return_exceptions=True)))


def run(steps: Steps[_T]) -> _T:
    """Run an operation on the sync face (each yielded value is already the call's result)."""
    value: Any = None
    try:
        while True:
            value = steps.send(value)
            while isinstance(value, Together):
                try:
                    results = _together(value)
                except BaseException as exc:  # handed to the body, which re-raises what it does not handle
                    value = steps.throw(exc)
                else:
                    value = steps.send(results)
    except StopIteration as stop:
        result: _T = stop.value
        return result


async def run_async(steps: Steps[_T]) -> _T:
    """Run an operation on the asyncio face: await each yielded awaitable, send back its result or throw in its
    error (a cancellation too: the body's ``finally`` clauses may then still await, e.g. to release a lock)."""
    try:
        step: Awaitable[Any] = steps.send(None)
        while True:
            try:
                value = await (_gather(step) if isinstance(step, Together) else step)
            except BaseException as exc:  # handed to the body, which re-raises what it does not handle
                step = steps.throw(exc)
            else:
                step = steps.send(value)
    except StopIteration as stop:
        result: _T = stop.value
        return result
