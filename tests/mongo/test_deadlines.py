"""Deadlines of the Mongo backend (issue 10): every operation completes or raises within ``timeout``.

A :class:`tests.proxy.FreezableProxy` sits between the backend and the real FerretDB (or Redis): frozen, it keeps
the connections open and forwards nothing, as a SIGSTOPped server would. Each case asserts that the call raises
BackendTimeoutError within the deadline + 1 s and that the same backend object works once the server answers
again. The measured times are printed (``pytest -s``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pymongo
import pytest
from bson.int64 import Int64
from bson.objectid import ObjectId
from pymongo import monitoring

from persist_core import setup
from persist_core.domains import DOMAINS
from persist_core.errors import BackendTimeoutError, BackendUnavailableError, ConfigurationError
from persist_core.stores import make_store
from persist_mongo import MongoBackend
from persist_mongo._backend import LOCK_COLLECTION
from persist_mongo._cache import cache_key, namespace_of
from tests.mongo import servers
from tests.proxy import FreezableProxy

TIMEOUT = 1.0
SLACK = 1.0  # the bound: the deadline + 1 s
CLOCK_MS = 1_900_000_000_000
CANDLE_BASE = 1_700_000_000_000
SIGNAL_CTX = {"symbol": "BTC/USDT", "strategy_name": "s", "exchange_name": "x"}
CANDLE_CTX = {"symbol": "ETH/USDT", "interval": "1m", "exchange_name": "x"}


def _via(url: str, port: int, **query: str) -> str:
    """``url`` pointed at 127.0.0.1:``port`` (the proxy), with ``query`` options added."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    merged = "&".join(q for q in (parts.query, "&".join(f"{k}={v}" for k, v in query.items())) if q)
    return urlunsplit((parts.scheme, netloc, parts.path, merged, ""))


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, f"the test server's URL names no port: {url}"
    return port


def _times_out(case: str, call: Callable[[], object], deadline: float = TIMEOUT) -> BackendTimeoutError:
    """Run ``call``, which must raise BackendTimeoutError within ``deadline`` + 1 s; print the time."""
    started = time.monotonic()
    with pytest.raises(BackendTimeoutError) as info:
        call()
    elapsed = time.monotonic() - started
    print(f"\n[deadline {deadline:g} s] {case}: BackendTimeoutError after {elapsed:.3f} s")
    assert elapsed <= deadline + SLACK, f"{case}: {elapsed:.3f} s"
    error = info.value
    assert isinstance(error, BackendUnavailableError)
    assert isinstance(error, TimeoutError)
    return error


class _Closed(monitoring.ConnectionPoolListener):
    """Counts pooled connections that pymongo closed because of an error (CMAP ``ConnectionClosed``, reason error),
    and the connections checked out and checked in."""

    def __init__(self) -> None:
        self.errors = 0
        self.checked_out = 0
        self.checked_in = 0

    def connection_closed(self, event: monitoring.ConnectionClosedEvent) -> None:
        if event.reason == monitoring.ConnectionClosedReason.ERROR:
            self.errors += 1

    def pool_created(self, event: monitoring.PoolCreatedEvent) -> None:
        pass

    def pool_ready(self, event: monitoring.PoolReadyEvent) -> None:
        pass

    def pool_cleared(self, event: monitoring.PoolClearedEvent) -> None:
        pass

    def pool_closed(self, event: monitoring.PoolClosedEvent) -> None:
        pass

    def connection_created(self, event: monitoring.ConnectionCreatedEvent) -> None:
        pass

    def connection_ready(self, event: monitoring.ConnectionReadyEvent) -> None:
        pass

    def connection_check_out_started(self, event: monitoring.ConnectionCheckOutStartedEvent) -> None:
        pass

    def connection_check_out_failed(self, event: monitoring.ConnectionCheckOutFailedEvent) -> None:
        pass

    def connection_checked_out(self, event: monitoring.ConnectionCheckedOutEvent) -> None:
        self.checked_out += 1

    def connection_checked_in(self, event: monitoring.ConnectionCheckedInEvent) -> None:
        self.checked_in += 1


@pytest.fixture(scope="module")
def database() -> Iterator[servers.ScratchDatabase]:
    db = servers.ScratchDatabase(servers.shared_mongo_url(), "dl")
    yield db
    db.drop()


@pytest.fixture
def mongo_proxy(database: servers.ScratchDatabase) -> Iterator[FreezableProxy]:
    with FreezableProxy(_port(database.server_url)) as proxy:
        yield proxy


def _backend(database: servers.ScratchDatabase, proxy: FreezableProxy, **options: Any) -> MongoBackend:
    return MongoBackend.from_url(_via(database.url, proxy.port, timeout=str(TIMEOUT)), **options)


# ------------------------------------------------------------------------------------------ the setting


def test_a_url_without_the_option_gets_the_five_second_default() -> None:
    backend = MongoBackend("mongodb://127.0.0.1:27017/bot", redis_url="redis://127.0.0.1:6379/0")
    assert backend.timeout == 5.0
    assert backend.client_options == {
        "serverSelectionTimeoutMS": 5000,
        "connectTimeoutMS": 5000,
        "socketTimeoutMS": 5000,
    }
    assert backend.redis_socket_timeout == 0.25  # min(redis_socket_timeout 0.25 s, a quarter of the deadline)
    assert MongoBackend("mongodb://127.0.0.1:27017/bot", redis_url="none").redis_socket_timeout is None


def test_the_option_from_the_url_the_constructor_and_setup(database: servers.ScratchDatabase) -> None:
    backend = MongoBackend("mongodb://127.0.0.1:27017/bot?timeout=2&appname=x", redis_url="redis://h:1/0")
    assert backend.timeout == 2.0
    assert backend._client_url == "mongodb://127.0.0.1:27017/bot?appname=x"  # pymongo never sees it
    assert backend.client_options["socketTimeoutMS"] == 2000
    assert backend.redis_socket_timeout == 0.25
    short = MongoBackend("mongodb://127.0.0.1:27017/bot?TimeOut=0.4", redis_url="redis://h:1/0")
    assert short.timeout == 0.4
    assert short.redis_socket_timeout == pytest.approx(0.1)  # a quarter of the deadline
    assert short._client_url == "mongodb://127.0.0.1:27017/bot"
    keyword = MongoBackend("mongodb://127.0.0.1:27017/bot?timeout=2", redis_url="none", timeout=3)
    assert keyword.timeout == 3.0  # keyword options override the query, as for every backend
    explicit = MongoBackend("mongodb://127.0.0.1:27017/bot?socketTimeoutMS=900&timeout=2", redis_url="none")
    assert "socketTimeoutMS" not in explicit.client_options  # the URL's own pymongo setting is kept
    persist = setup(database.url, redis_url="none", options={"mongodb": {"timeout": 2}})
    try:
        backend = persist.backend("live", "signal")
        assert isinstance(backend, MongoBackend)
        assert backend.timeout == 2.0
    finally:
        persist.close()


@pytest.mark.parametrize("value", ["0", "-1", "abc", "", "nan", "inf", "1e400"])
def test_a_bad_timeout_in_the_url_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        MongoBackend(f"mongodb://127.0.0.1:27017/bot?timeout={value}", redis_url="none")


@pytest.mark.parametrize("value", [0, -2.5, True, math.nan, math.inf, "x", [1]])
def test_a_bad_timeout_keyword_is_a_configuration_error(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        MongoBackend("mongodb://127.0.0.1:27017/bot", redis_url="none", timeout=value)


def test_pymongos_own_timeout_ms_is_refused_for_ours() -> None:
    with pytest.raises(ConfigurationError, match="timeout=<seconds>"):
        MongoBackend("mongodb://127.0.0.1:27017/bot?timeoutMS=2000", redis_url="none")
    with pytest.raises(ConfigurationError, match="timeout=<seconds>"):
        MongoBackend("mongodb://127.0.0.1:27017/bot", redis_url="none", client_options={"timeoutMS": 2000})


# ------------------------------------------------------------------------------------------ MongoDB frozen


def test_frozen_mongodb_while_connected_times_out_and_the_same_backend_recovers(
    database: servers.ScratchDatabase, mongo_proxy: FreezableProxy
) -> None:
    closed = _Closed()
    backend = _backend(database, mongo_proxy, redis_url="none", client_options={"event_listeners": [closed]})
    backend.open()
    signal = make_store(backend, DOMAINS["signal"], SIGNAL_CTX)
    candles = make_store(backend, DOMAINS["candle"], CANDLE_CTX, clock=lambda: CLOCK_MS)
    bucket = make_store(backend, DOMAINS["measure"], {"bucket": "frozen"})
    signal.write({"v": 1})
    first = [{"timestamp": CANDLE_BASE + i * 60_000, "close": float(i)} for i in range(1000)]
    assert candles.write(first[:10]) == 10
    bucket.write("k", {"v": 1})
    batch = first[10:]
    cases: list[tuple[str, Callable[[], object]]] = [
        ("read (signal)", signal.read),
        ("write (signal)", lambda: signal.write({"v": 2})),
        ("candle window (1000)", lambda: candles.read(1000, CANDLE_BASE)),
        ("bulk insert (990 candles)", lambda: candles.write(batch)),
        ("scan (bucket keys)", bucket.keys),
        ("bucket write (key lock)", lambda: bucket.write("other", {"v": 2})),
        ("bucket remove (key lock)", lambda: bucket.remove("k")),
    ]
    try:
        for case, call in cases:
            mongo_proxy.freeze()
            errors_before = closed.errors
            error = _times_out(f"frozen MongoDB, {case}", call)
            assert f"127.0.0.1:{mongo_proxy.port}" in str(error)
            assert "within its 1 s deadline" in str(error)
            # pymongo closed the connection that timed out: it is never handed out again half-read.
            assert closed.errors > errors_before, f"{case}: no pooled connection was discarded"
            mongo_proxy.thaw()
            started = time.monotonic()
            assert signal.read() in ({"v": 1}, {"v": 2})  # the same backend object answers again
            print(f"  next call after thaw answered in {time.monotonic() - started:.3f} s")
    finally:
        mongo_proxy.thaw()
    time.sleep(0.3)  # a timed-out command may still reach the server when it thaws (docs/mongo.md, Deadlines)
    # Nothing half-written: each timed-out write took effect whole or not at all.
    assert signal.read() in ({"v": 1}, {"v": 2})
    stored = candles.read(1000, CANDLE_BASE)
    assert all(candle is None or candle == first[i] for i, candle in enumerate(stored))
    # A retry stores the rest: first write wins. (Through a backend with the default deadline: on FerretDB an
    # insert_many of 990 keys that mostly exist already takes close to 1 s on a busy machine.)
    checker = MongoBackend.from_url(database.url, redis_url="none")
    again = make_store(checker, DOMAINS["candle"], CANDLE_CTX, clock=lambda: CLOCK_MS)
    started = time.monotonic()
    assert again.write(batch) == sum(1 for candle in stored[10:] if candle is None)
    print(f"  retrying the 990-candle batch took {time.monotonic() - started:.3f} s")
    assert again.read(1000, CANDLE_BASE) == first
    checker.close()
    assert bucket.read("k") in ({"v": 1}, None)
    signal.write({"v": 3})
    assert signal.read() == {"v": 3}
    backend.close()


def test_frozen_before_connecting_open_times_out_and_opens_after_thaw(
    database: servers.ScratchDatabase, mongo_proxy: FreezableProxy
) -> None:
    backend = _backend(database, mongo_proxy, redis_url="none")
    mongo_proxy.freeze()
    try:
        error = _times_out("frozen before connecting, open()", backend.open)
        assert "opening" in str(error)
        store = make_store(backend, DOMAINS["signal"], SIGNAL_CTX)
        _times_out("frozen before connecting, first read (opens lazily)", store.read)
    finally:
        mongo_proxy.thaw()
    backend.open()
    store.write({"v": "after"})
    assert store.read() == {"v": "after"}
    backend.close()


def test_the_message_of_a_timeout_masks_the_password(
    database: servers.ScratchDatabase, mongo_proxy: FreezableProxy
) -> None:
    url = _via(f"mongodb://trader:s3cret-pw@127.0.0.1:1/{database.name}", mongo_proxy.port, timeout="1")
    backend = MongoBackend.from_url(url, redis_url="none")
    mongo_proxy.freeze()
    try:
        error = _times_out("frozen before connecting, open() with a password", backend.open)
    finally:
        mongo_proxy.thaw()
    assert "s3cret-pw" not in str(error)
    assert "trader:***@" in str(error)
    assert "opening" in str(error)


def test_a_frozen_ownership_lease_call_times_out(
    database: servers.ScratchDatabase, mongo_proxy: FreezableProxy
) -> None:
    backend = _backend(database, mongo_proxy, redis_url="none")
    backend.open()
    leases = backend.lease_log()
    leases.head()
    mongo_proxy.freeze()
    try:
        _times_out("frozen MongoDB, ownership lease head()", leases.head)
    finally:
        mongo_proxy.thaw()
    leases.head()
    backend.close()


# ------------------------------------------------------------------------------------------ Redis frozen


def test_frozen_redis_counts_as_an_outage_and_operations_meet_the_deadline(
    database: servers.ScratchDatabase, private_redis: servers.PrivateRedis
) -> None:
    with FreezableProxy(private_redis.port) as redis_proxy:
        backend = MongoBackend.from_url(
            f"{database.url}?timeout=1",
            redis_url=_via(private_redis.url, redis_proxy.port),
            redis_retry_interval=0.3,
        )
        backend.open()
        signal = make_store(backend, DOMAINS["state"], {"signal_id": "redis-freeze", "bucket_name": "b"})
        signal.write({"v": 1})
        assert signal.read() == {"v": 1}
        assert backend.cache_stats.hits == 1
        redis_proxy.freeze()
        try:
            for n in range(2, 6):
                started = time.monotonic()
                signal.write({"v": n})
                assert signal.read() == {"v": n}
                elapsed = time.monotonic() - started
                print(f"\n[deadline 1 s] frozen Redis, write + read {n - 1}: {elapsed:.3f} s, against MongoDB alone")
                assert elapsed < TIMEOUT
                time.sleep(0.1)
            stats = backend.cache_stats
            assert stats.available is False
            assert stats.outages == 1
            assert stats.errors >= 1
            assert stats.bypassed > 0
        finally:
            redis_proxy.thaw()
        time.sleep(0.35)  # past the retry interval: the next command probes Redis again
        # Redis still holds the copy of {"v": 1} (and the markers of the writes whose commands it got late): the
        # key written while it was frozen is forgotten there before anything else is sent, so the first read
        # comes from MongoDB and refills Redis, and the second is a hit.
        assert signal.read() == {"v": 5}
        assert signal.read() == {"v": 5}
        stats = backend.cache_stats
        assert stats.available is True
        assert stats.outages == 1
        assert stats.hits == 1 + 1
        signal.write({"v": 6})
        assert signal.read() == {"v": 6}
        assert backend.cache_stats.hits == 3
        backend.close()


# ------------------------------------------------------------------------------------------ a held key lock


def _hold_lock(database: servers.ScratchDatabase, bucket: str, key: str, lease_ms: int) -> ObjectId:
    """Insert the lock document of a measure key by hand, as another writer holding it would have."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(database.server_url)
    try:
        lock_id = ObjectId()
        name = cache_key(namespace_of(database.name), DOMAINS["measure"], (bucket, key))
        expires = Int64(time.time_ns() // 1_000_000 + lease_ms)
        client[database.name][LOCK_COLLECTION].insert_one({"_id": lock_id, "lock": name, "expires": expires})
        return lock_id
    finally:
        client.close()


def _release(database: servers.ScratchDatabase, lock_id: ObjectId) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(database.server_url)
    try:
        client[database.name][LOCK_COLLECTION].delete_one({"_id": lock_id})
    finally:
        client.close()


def test_a_key_lock_held_by_another_writer_times_out_at_the_deadline(database: servers.ScratchDatabase) -> None:
    backend = MongoBackend.from_url(f"{database.url}?timeout=1", redis_url="none")
    backend.open()
    store = make_store(backend, DOMAINS["measure"], {"bucket": "held"})
    store.write("k", {"v": 1})
    lock_id = _hold_lock(database, "held", "k", lease_ms=60_000)  # the lease outlasts the deadline
    try:
        error = _times_out("key lock held by another writer, write", lambda: store.write("k", {"v": 2}))
        assert "held by another writer" in str(error)
        assert "writing measure" in str(error)
        _times_out("key lock held by another writer, remove", lambda: store.remove("k"))
        store.write("free", {"v": 1})  # other keys are not blocked
    finally:
        _release(database, lock_id)
    assert store.read("k") == {"v": 1}  # neither timed-out call wrote anything
    store.write("k", {"v": 3})
    assert store.read("k") == {"v": 3}
    backend.close()


def test_a_key_lock_whose_lease_ends_before_the_deadline_is_broken(database: servers.ScratchDatabase) -> None:
    backend = MongoBackend.from_url(f"{database.url}?timeout=1", redis_url="none")
    backend.open()
    store = make_store(backend, DOMAINS["measure"], {"bucket": "lapsing"})
    _hold_lock(database, "lapsing", "k", lease_ms=300)  # a writer that died holding the lock
    started = time.monotonic()
    store.write("k", {"v": 1})
    elapsed = time.monotonic() - started
    print(f"\n[deadline 1 s] key lock with a 0.3 s lease left: broken, write done after {elapsed:.3f} s")
    assert 0.25 <= elapsed < TIMEOUT
    assert store.read("k") == {"v": 1}
    backend.close()
