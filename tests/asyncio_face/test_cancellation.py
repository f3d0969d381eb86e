"""A cancelled ``await`` leaves no half-written record and no leaked connection (issue 10, CONTRACTS.md 3.9)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from persist_core import asetup
from persist_core.async_backend import DEFAULT_THREADS

CONTEXT = {"symbol": "BTC/USDT", "strategy_name": "s", "exchange_name": "e"}
BLOB = "x" * 200_000  # large enough that a torn write would show


async def _cancel_writes(url: str, rounds: int) -> tuple[list[Any], Any]:
    seen: list[Any] = []
    async with await asetup(url, env={}) as persist:
        store = persist.live.signal(**CONTEXT)
        await store.write({"n": 0, "blob": BLOB})
        rng = random.Random(7)
        for n in range(1, rounds + 1):
            task = asyncio.ensure_future(store.write({"n": n, "blob": BLOB}))
            await asyncio.sleep(rng.random() * 0.002)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            seen.append(await store.read())
        await asyncio.sleep(0.3)  # let every cancelled write's thread finish
        native = persist._natives.get(persist.sync.route("live", "signal")[0])
        if native is not None:  # the native asyncio backend (PostgreSQL, MariaDB): its own pool
            assert native.pool.in_use == 0, "a cancelled call kept its connection"  # type: ignore[attr-defined]
        state = getattr(persist.sync.backend("live", "signal"), "_state", None)
        if state is not None:  # a SQL backend in the thread pool: every connection is back in its pool
            assert state.pool._in_use == 0, "a cancelled call kept its connection"
        return seen, persist


def _assert_whole(values: list[Any]) -> None:
    for value in values:
        assert value["blob"] == BLOB, "a cancelled write left a torn record"
        assert isinstance(value["n"], int)


def test_cancelled_writes_leave_whole_records_on_files(tmp_path: Path) -> None:
    before = threading.active_count()
    values, _ = asyncio.run(_cancel_writes(f"file:{tmp_path}/dump", rounds=60))
    _assert_whole(values)
    assert threading.active_count() <= before + DEFAULT_THREADS + 1  # the pool is bounded; nothing else leaked


def test_cancelled_writes_leave_whole_records_and_no_connection_on_sqlite(tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    values, _ = asyncio.run(_cancel_writes(f"sqlite:///{tmp_path}/state.db", rounds=60))
    _assert_whole(values)


def test_cancelled_writes_leave_whole_records_and_no_connection_on_postgresql() -> None:
    pytest.importorskip("psycopg")
    from tests.sql import servers

    with servers.scratch_database(servers.server_url(servers.POSTGRES)) as url:
        values, _ = asyncio.run(_cancel_writes(url, rounds=40))
    _assert_whole(values)


def test_cancelled_writes_leave_whole_records_and_no_connection_on_mariadb() -> None:
    pytest.importorskip("asyncmy")
    from tests.sql import servers

    with servers.scratch_database(servers.server_url(servers.MYSQL)) as url:
        values, _ = asyncio.run(_cancel_writes(url, rounds=40))
    _assert_whole(values)


def test_cancelled_writes_leave_whole_records_no_lock_and_no_connection_on_mongodb() -> None:
    """The native Mongo backend (AsyncMongoClient, redis.asyncio): a MongoDB write is one command, whole or not
    at all; a cancelled write (under its key's marker in Redis, and in a soft-delete domain under its key lock
    in MongoDB too) runs on to its end and leaves neither behind; every pooled connection (pymongo's and
    redis.asyncio's) is back or closed."""
    pytest.importorskip("pymongo")
    from persist_mongo import AsyncMongoBackend
    from tests.mongo import servers
    from tests.mongo.test_deadlines import _Closed

    database = servers.ScratchDatabase(servers.shared_mongo_url(), "cancel")
    database.wipe(servers.shared_redis_url())
    checkouts = _Closed()

    async def main() -> list[Any]:
        options = {"mongodb": {"client_options": {"event_listeners": [checkouts]}}}
        env = {"PERSIST_REDIS_URL": servers.shared_redis_url()}
        async with await asetup(database.url, env=env, options=options) as persist:  # type: ignore[arg-type]
            seen: list[Any] = []
            signal = persist.live.signal(**CONTEXT)
            bucket = persist.live.memory(signal_id="sig", bucket_name="b")
            await signal.write({"n": 0, "blob": BLOB})
            await bucket.write("k", {"n": 0, "blob": BLOB})
            rng = random.Random(7)
            for n in range(1, 41):
                for task in (
                    asyncio.ensure_future(signal.write({"n": n, "blob": BLOB})),
                    asyncio.ensure_future(bucket.write("k", {"n": n, "blob": BLOB})),
                ):
                    await asyncio.sleep(rng.random() * 0.003)
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                seen += [await signal.read(), await bucket.read("k")]
            native = persist._natives[persist.sync.route("live", "signal")[0]]
            assert isinstance(native, AsyncMongoBackend)
            state = native._state
            assert state is not None and state.redis is not None
            client = state.redis.client
            locks, markers = -1, [b""]
            for _ in range(100):  # cancelled writes run on to their ends in their own tasks, one after the other
                await asyncio.sleep(0.1)
                locks = await state.locks.count_documents({})
                entries = [(k, await client.get(k)) async for k in client.scan_iter(f"{database.name}:*_cache:*")]
                markers = [k for k, e in entries if e and e.startswith(b"W|")]
                if not locks and not markers:
                    break
            assert locks == 0, "a cancelled write left its key lock behind"
            assert markers == [], "a cancelled write left its Redis marker"
            started = asyncio.get_running_loop().time()
            await bucket.write("k", {"n": 99, "blob": BLOB})  # the key is free: no wait for a lease
            assert asyncio.get_running_loop().time() - started < 0.5
            assert not client.connection_pool._in_use_connections
            assert len(state.redis.wire._pool._in_use_connections) <= 1  # the connection the wire keeps
            # pymongo's monitor and the ownership lease's renewals check connections out too: wait (bounded) until
            # all are back; a connection a cancelled call kept would never be.
            for _ in range(30):
                await asyncio.sleep(0.1)
                if checkouts.checked_out == checkouts.checked_in:
                    break
            assert checkouts.checked_out == checkouts.checked_in, "a cancelled call kept its MongoDB connection"
            return seen

    try:
        values = asyncio.run(main())
    finally:
        database.drop()
    _assert_whole(values)
