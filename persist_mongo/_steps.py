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
face's ``sleep``), made inside the ``try`` that handles its errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Generator
from typing import Any, TypeVar

__all__ = ["Steps", "run", "run_async"]

_T = TypeVar("_T")

#: An operation: yields driver calls' values (sync) or awaitables (asyncio), receives their results.
Steps = Generator[Any, Any, _T]


def run(steps: Steps[_T]) -> _T:
    """Run an operation on the sync face (each yielded value is already the call's result)."""
    value: Any = None
    try:
        while True:
            value = steps.send(value)
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
                value = await step
            except BaseException as exc:  # handed to the body, which re-raises what it does not handle
                step = steps.throw(exc)
            else:
                step = steps.send(value)
    except StopIteration as stop:
        result: _T = stop.value
        return result
