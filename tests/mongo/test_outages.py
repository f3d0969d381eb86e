"""Outages: FerretDB killed and restarted, Redis flushed, stopped, restarted and hanging.

MongoDB down means BackendUnavailableError and recovery without reopening; Redis down, flushed or
hanging means every operation goes on against MongoDB alone, one warning per outage, and the cache
refills when Redis is back.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from persist_core.backend import Record
from persist_core.domains import DOMAINS
from persist_core.errors import BackendUnavailableError
from persist_core.ownership import Lease, Owner, ProcessIdentity
from persist_core.stores import make_store
from persist_mongo import MongoBackend
from persist_mongo._cache import cache_key
from tests.mongo import servers

CLOCK_MS = 1_900_000_000_000
CANDLE_BASE = 1_700_000_000_000


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class _Records:
    """A few records in five domains of different kinds, written and read back through the stores."""

    def __init__(self, backend: MongoBackend, tag: str) -> None:
        self.tag = tag
        self.slot = make_store(
            backend, DOMAINS["signal"], {"symbol": f"{tag}BTC/USDT", "strategy_name": "s", "exchange_name": "x"}
        )
        self.keyed = make_store(
            backend, DOMAINS["partial"], {"symbol": f"{tag}BTC/USDT", "strategy_name": "s", "exchange_name": "x"}
        )
        self.bucket = make_store(backend, DOMAINS["memory"], {"signal_id": f"{tag}sig", "bucket_name": "b"})
        self.state = make_store(backend, DOMAINS["state"], {"signal_id": f"{tag}sig", "bucket_name": "b"})
        self.candles = make_store(
            backend,
            DOMAINS["candle"],
            {"symbol": f"{tag}ETH/USDT", "interval": "1m", "exchange_name": "x"},
            clock=lambda: CLOCK_MS,
        )

    def write(self, version: int) -> None:
        self.slot.write({"v": version})
        for n in range(3):
            self.keyed.write(f"sig-{n}", {"v": version, "n": n})
            self.bucket.write(f"m-{n}", [version, n])
        self.state.write({"v": version})
        self.candles.write([{"timestamp": CANDLE_BASE + i * 60_000, "close": float(i)} for i in range(5)])

    def check(self, version: int) -> int:
        """Read every record point-wise (the cached path) and compare; return how many reads were made."""
        assert self.slot.read() == {"v": version}
        for n in range(3):
            assert self.keyed.read(f"sig-{n}") == {"v": version, "n": n}
            assert self.bucket.read(f"m-{n}") == [version, n]
        assert self.state.read() == {"v": version}
        assert self.bucket.keys() == ["m-0", "m-1", "m-2"]
        assert self.candles.read(5, CANDLE_BASE) == [
            {"timestamp": CANDLE_BASE + i * 60_000, "close": float(i)} for i in range(5)
        ]
        return 8  # point reads: slot, 3 keyed, 3 bucket, state

    point_writes = 8  # slot, 3 keyed, 3 bucket, state (the candles are inserts)


@pytest.fixture
def database() -> Iterator[servers.ScratchDatabase]:
    db = servers.ScratchDatabase(servers.shared_mongo_url(), "o")
    yield db
    db.drop()


# ------------------------------------------------------------------------------------------ MongoDB down


def test_ferretdb_killed_mid_run_raises_unavailable_and_recovers_without_reopening(
    private_ferretdb: servers.PrivateFerretDB,
) -> None:
    url = private_ferretdb.url + "outage?serverSelectionTimeoutMS=700"
    backend = MongoBackend.from_url(url, redis_url="none")
    backend.open()
    store = make_store(backend, DOMAINS["measure"], {"bucket": "kill"})
    candles = make_store(
        backend, DOMAINS["candle"], {"symbol": "K", "interval": "1m", "exchange_name": "x"}, clock=lambda: CLOCK_MS
    )
    acked: list[int] = []
    refused: list[int] = []
    other: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            try:
                store.write(f"k{n:06d}", {"n": n})
                acked.append(n)
            except BackendUnavailableError:
                refused.append(n)
                time.sleep(0.05)
            except BaseException as exc:
                other.append(exc)
                return
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        _wait_for(lambda: len(acked) >= 30, 30, "acknowledged writes before the kill")
        private_ferretdb.kill()
        _wait_for(lambda: len(refused) >= 2, 30, "the writer to see the outage")
        outage_ops: list[Callable[[], Any]] = [
            lambda: store.read("k000000"),
            lambda: store.keys(),
            lambda: store.write("during", 1),
            lambda: store.remove("k000000"),
            lambda: candles.write([{"timestamp": CANDLE_BASE, "close": 1.0}]),
            lambda: candles.write([{"timestamp": CANDLE_BASE + i * 60_000} for i in range(3)]),
            lambda: candles.read(3, CANDLE_BASE),
        ]
        for op in outage_ops:
            with pytest.raises(BackendUnavailableError) as info:
                op()
            assert f"127.0.0.1:{private_ferretdb.port}" in str(info.value)
        before_restart = len(acked)
        private_ferretdb.start()  # same port, same SQLite folder
        _wait_for(lambda: len(acked) >= before_restart + 30, 60, "acknowledged writes after the restart")
    finally:
        stop.set()
        thread.join()
    assert other == [], f"the writer saw errors other than BackendUnavailableError: {other[:3]}"
    # The same backend object, never reopened: every acknowledged write is there and whole.
    stored = store.keys()
    missing = [n for n in acked if f"k{n:06d}" not in stored]
    assert missing == [], f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    for n in acked[:: max(1, len(acked) // 50)]:
        assert store.read(f"k{n:06d}") == {"n": n}
    assert "during" not in stored
    assert store.read("k000000") == {"n": 0}  # the refused remove did nothing
    assert candles.read(1, CANDLE_BASE) is None  # refused candle writes stored nothing
    backend.close()


_LEASE = Lease(ProcessIdentity("h", 1, "1"), CLOCK_MS, CLOCK_MS + 3_000)


def test_an_owner_is_refused_during_a_ferretdb_outage_and_owns_the_state_again_after_it(
    private_ferretdb: servers.PrivateFerretDB, caplog: pytest.LogCaptureFixture
) -> None:
    url = private_ferretdb.url + "leases?serverSelectionTimeoutMS=500"
    backend = MongoBackend.from_url(url, redis_url="none")
    backend.open()
    owner = Owner(backend.lease_log(), "outage", ttl_seconds=3, identity=ProcessIdentity("h", 1, "1"))
    try:
        owner.ensure()
        assert owner.generation == 1
        private_ferretdb.kill()
        leases = backend.lease_log()
        for op in (leases.head, lambda: leases.claim(2, _LEASE), lambda: leases.renew(1, _LEASE)):
            with pytest.raises(BackendUnavailableError, match=f"127.0.0.1:{private_ferretdb.port}"):
                op()
        with caplog.at_level(logging.WARNING, logger="persist.mongo"):
            leases.prune(5)  # housekeeping: logged, never raised
        assert "pruning old ownership leases" in caplog.text
        # The lease lapses locally while the heartbeat cannot renew it: writes are refused, not let through.
        time.sleep(3 * 0.8 + 0.2)
        with pytest.raises(BackendUnavailableError):
            owner.ensure()
        private_ferretdb.start()  # same port, same SQLite folder, nobody else took over
        _wait_for(lambda: _ensures(owner), 30, "the owner to own the state again")
        head = leases.head()
        assert head is not None and head[1].holder == owner.identity
        assert head[0] == owner.generation == 2  # re-claimed as the next generation, not renewed
    finally:
        owner.release()
        backend.close()


def _ensures(owner: Owner) -> bool:
    try:
        owner.ensure()  # an OwnershipError (someone else took over) fails the test
    except BackendUnavailableError:
        return False
    return True


def test_unreachable_mongodb_masks_the_password() -> None:
    port = servers.ClosedPort()
    try:
        backend = MongoBackend.from_url(
            f"mongodb://trader:s3cret-pw@127.0.0.1:{port.port}/db?serverSelectionTimeoutMS=300", redis_url="none"
        )
        with pytest.raises(BackendUnavailableError) as info:
            backend.open()
    finally:
        port.close()
    text = str(info.value)
    assert "s3cret-pw" not in text
    assert "trader:***@" in text
    assert f"127.0.0.1:{port.port}" in text
    assert isinstance(info.value, ConnectionError)
    assert "s3cret-pw" not in repr(backend)


# ------------------------------------------------------------------------------------------ Redis flushed


def test_redis_flushed_mid_run_stays_correct_and_refills(
    database: servers.ScratchDatabase, private_redis: servers.PrivateRedis
) -> None:
    backend = MongoBackend.from_url(database.url, redis_url=private_redis.url)
    backend.open()
    records = _Records(backend, "flush-")
    records.write(1)
    reads = records.check(1)
    assert backend.cache_stats.hits == reads  # the writes seeded Redis: every point read hit
    client = redis.Redis.from_url(private_redis.url)
    client.flushdb()
    records.check(1)
    stats = backend.cache_stats
    assert (stats.hits, stats.misses) == (reads, reads)
    records.check(1)
    assert backend.cache_stats.hits == 2 * reads  # the misses wrote the ids back
    client.flushdb()
    records.write(2)  # writes after a flush re-seed the cache
    records.check(2)
    assert backend.cache_stats.hits == 3 * reads
    assert backend.cache_stats.outages == 0
    client.close()
    backend.close()


def test_entries_that_are_not_ours_are_detected_and_replaced(
    database: servers.ScratchDatabase, private_redis: servers.PrivateRedis
) -> None:
    backend = MongoBackend.from_url(database.url, redis_url=private_redis.url)
    backend.open()
    spec = DOMAINS["measure"]
    store = make_store(backend, spec, {"bucket": "poison"})
    for item in "abc":
        store.write(item, {"who": item})
    client = redis.Redis.from_url(private_redis.url)
    keys = {item: cache_key(backend.settings.namespace, spec, ("poison", item)) for item in "abc"}
    assert all(client.get(key) is not None for key in keys.values())
    client.set(keys["a"], "65a1f0c2e4b0a1b2c3d4e5f6")  # an _id, as the id cache of earlier versions left them
    client.set(keys["b"], b"R1|not a version|x|2|{}")  # our prefix, not our format
    client.set(keys["c"], b"\xff\xfe garbage")
    assert [store.read(k) for k in "abc"] == [{"who": k} for k in "abc"]
    assert backend.cache_stats.stale == 3
    hits = backend.cache_stats.hits
    # "b" starts like an entry of ours: it reads as a miss that is not refilled (replaced by the next write).
    assert [store.read(k) for k in "ac"] == [{"who": k} for k in "ac"]
    assert backend.cache_stats.hits == hits + 2  # the others were replaced by copies of their records
    store.write("b", {"who": "b", "n": 2})
    assert store.read("b") == {"who": "b", "n": 2}
    assert backend.cache_stats.hits == hits + 3
    client.close()
    backend.close()


# ------------------------------------------------------------------------------------------ Redis stopped


def test_redis_stopped_mid_run_then_restarted_refills_the_cache(
    database: servers.ScratchDatabase, private_redis: servers.PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="persist.mongo")
    backend = MongoBackend.from_url(database.url, redis_url=private_redis.url, redis_retry_interval=0.3)
    backend.open()
    records = _Records(backend, "stop-")
    records.write(1)
    reads = records.check(1)
    assert backend.cache_stats.hits == reads

    private_redis.kill()
    started = time.monotonic()
    for version in range(2, 12):  # ~200 operations against MongoDB alone
        records.write(version)
        records.check(version)
    elapsed = time.monotonic() - started
    stats = backend.cache_stats
    assert stats.available is False
    assert stats.outages == 1
    # No reconnect storm of reads: they skip Redis but for one probe per retry interval. Each write does try to
    # tell Redis (begin and commit, each refused at once), since a write Redis never heard of could leave an
    # older copy readable when it is back.
    probes = 2 + elapsed / 0.3
    writes = 10 * records.point_writes
    assert stats.bypassed >= 10 * reads - probes
    assert 2 * writes <= stats.errors <= 2 * writes + probes
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "unavailable" in r.getMessage()]
    assert len(warnings) == 1

    private_redis.start()  # same port, empty (no persistence): like a flushed cache
    time.sleep(0.35)
    records.check(11)  # the first command after the back-off finds Redis back; misses write the ids back
    stats = backend.cache_stats
    assert stats.available is True
    hits = stats.hits
    records.check(11)
    assert backend.cache_stats.hits == hits + reads
    assert any("available again" in r.getMessage() for r in caplog.records)
    backend.close()


def test_hanging_redis_costs_one_timeout_per_retry_interval(database: servers.ScratchDatabase) -> None:
    """A Redis that accepts connections but never answers (blackholed) must not stall every operation."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # connections complete in the kernel; nothing ever answers
    port = listener.getsockname()[1]
    try:
        backend = MongoBackend.from_url(
            database.url,
            redis_url=f"redis://127.0.0.1:{port}/0",
            redis_socket_timeout=0.2,
            redis_retry_interval=60,
        )
        started = time.monotonic()
        backend.open()  # its Redis probe times out once
        store = make_store(backend, DOMAINS["state"], {"signal_id": "hang", "bucket_name": "b"})
        for n in range(30):
            store.write({"n": n})
            assert store.read() == {"n": n}
        elapsed = time.monotonic() - started
        assert backend.cache_stats.errors == 1
        assert elapsed < 0.2 + 5.0  # one timeout, then MongoDB alone
        backend.close()
    finally:
        listener.close()


def test_two_databases_sharing_one_redis_do_not_share_keys(private_redis: servers.PrivateRedis) -> None:
    url = servers.shared_mongo_url()
    one, two = servers.ScratchDatabase(url, "n1"), servers.ScratchDatabase(url, "n2")
    try:
        backends = [MongoBackend.from_url(db.url, redis_url=private_redis.url) for db in (one, two)]
        for n, backend in enumerate(backends):
            backend.open()
            make_store(backend, DOMAINS["state"], {"signal_id": "same", "bucket_name": "key"}).write({"db": n})
        for n, backend in enumerate(backends):
            assert make_store(backend, DOMAINS["state"], {"signal_id": "same", "bucket_name": "key"}).read() == {
                "db": n
            }
            assert backend.cache_stats.hits == 1
            assert backend.cache_stats.stale == 0
            backend.close()
    finally:
        one.drop()
        two.drop()


def test_insert_many_seeds_the_cache_only_for_inserted_records(
    database: servers.ScratchDatabase, private_redis: servers.PrivateRedis
) -> None:
    backend = MongoBackend.from_url(database.url, redis_url=private_redis.url)
    backend.open()
    spec = DOMAINS["log"]
    first = [((f"e{n}",), Record(f'{{"id":"e{n}","v":1}}')) for n in range(4)]
    assert backend.insert_many(spec, first[:2]) == 2
    assert backend.insert_many(spec, first) == 2  # e0, e1 exist
    assert backend.cache_stats.stores == 4
    assert [backend.get(spec, key) for key, _ in first] == [record for _, record in first]
    assert backend.cache_stats.hits == 4
    backend.close()
