"""The Mongo backend beyond the contract kit: URLs and configuration, the document layout (through raw
pymongo as a back door), round trips per operation, Redis key encoding, error translation, string order."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from bson.int64 import Int64
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo import errors as mongo_errors
from pymongo import monitoring

from persist_core import setup
from persist_core.backend import Record
from persist_core.domains import DOMAINS, FieldType
from persist_core.errors import (
    BackendUnavailableError,
    ConfigurationError,
    CorruptRecordError,
    InvalidValueError,
    PersistError,
)
from persist_core.ownership import Lease, ProcessIdentity
from persist_core.registry import create_backend
from persist_core.stores import make_store
from persist_core.testing.strategies import key_strings
from persist_mongo import DEFAULT_DATABASE, MongoBackend
from persist_mongo._backend import database_of
from persist_mongo._cache import cache_key
from persist_mongo._errors import translate
from persist_mongo._leases import LEASE_COLLECTION
from tests.mongo import servers

CLOCK_MS = 1_900_000_000_000
CANDLE_BASE = 1_700_000_000_000


class _Commands(monitoring.CommandListener):
    """Records the name of every command the backend's client sends."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def take(self) -> list[str]:
        names, self.names = self.names, []
        return names


@pytest.fixture(scope="module")
def database() -> Iterator[servers.ScratchDatabase]:
    db = servers.ScratchDatabase(servers.shared_mongo_url(), "b")
    yield db
    db.drop()


@pytest.fixture
def raw(database: servers.ScratchDatabase) -> Iterator[pymongo.database.Database[dict[str, Any]]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(database.server_url)
    yield client[database.name]
    client.close()


@pytest.fixture
def backend(database: servers.ScratchDatabase) -> Iterator[MongoBackend]:
    database.wipe(None)
    redis_url = servers.shared_redis_url()
    servers.delete_redis_namespace(redis_url, database.name)
    backend = MongoBackend.from_url(database.url, redis_url=redis_url)
    backend.open()
    yield backend
    backend.close()


# ------------------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("mongodb://127.0.0.1:27017/bot", "bot"),
        ("mongodb://127.0.0.1:27017/bot?wtimeoutMS=15000", "bot"),
        ("mongodb://u:p%40ss@h1:1,h2:2/bot-state?replicaSet=rs", "bot-state"),
        ("mongodb://127.0.0.1:27017", DEFAULT_DATABASE),
        ("mongodb://127.0.0.1:27017/", DEFAULT_DATABASE),
        ("mongodb://127.0.0.1:27017/?w=1", DEFAULT_DATABASE),
        ("mongodb://127.0.0.1/caf%C3%A9", "café"),
    ],
)
def test_database_comes_from_the_url_path(url: str, name: str) -> None:
    assert database_of(url) == name
    assert DEFAULT_DATABASE == "backtest-persist"


@pytest.mark.parametrize("path", ["a.b", "a%2Fb", "a%20b", "a$b", "x" * 64])
def test_bad_database_names_are_configuration_errors(path: str) -> None:
    with pytest.raises(ConfigurationError, match="database name"):
        MongoBackend.from_url(f"mongodb://u:hidden@127.0.0.1:27017/{path}", redis_url="none")


def test_registry_builds_the_backend_and_rejects_unknown_options() -> None:
    backend = create_backend("mongodb://127.0.0.1:27017/bot", redis_url="none")
    assert isinstance(backend, MongoBackend)
    assert backend.redis_url is None
    assert backend.cache_stats.enabled is False
    with pytest.raises(ConfigurationError, match="bad options"):
        create_backend("mongodb://127.0.0.1:27017/bot", redis_url="none", no_such_option=1)


def test_bad_urls_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="bad Redis URL 'http://u:\\*\\*\\*@h/0'"):
        MongoBackend.from_url("mongodb://127.0.0.1:27017/bot", redis_url="http://u:pw@h/0")
    backend = MongoBackend.from_url("mongodb://trader:pw@/bot", redis_url="none")
    with pytest.raises(ConfigurationError, match=r"trader:\*\*\*@") as info:
        backend.open()
    assert "pw" not in str(info.value).replace("trader:***", "")


def test_redis_url_is_resolved_like_setup_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERSIST_REDIS_URL", raising=False)
    monkeypatch.setenv("CC_REDIS_HOST", "10.1.2.3")
    monkeypatch.setenv("CC_REDIS_PORT", "6380")
    monkeypatch.setenv("CC_REDIS_PASSWORD", "redis-secret")
    backend = MongoBackend.from_url("mongodb://127.0.0.1:27017/bot")
    assert backend.redis_url == "redis://:***@10.1.2.3:6380/0"
    monkeypatch.setenv("PERSIST_REDIS_URL", "none")
    assert MongoBackend.from_url("mongodb://127.0.0.1:27017/bot").redis_url is None


def test_setup_routes_upstream_variables_to_the_mongo_backend(database: servers.ScratchDatabase) -> None:
    redis_url = servers.shared_redis_url()
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    env = {"CC_MONGO_CONNECTION_STRING": database.url, "CC_REDIS_HOST": host, "CC_REDIS_PORT": port}
    with setup(env=env) as persist:
        backend = persist.backend("live", "signal")
        assert isinstance(backend, MongoBackend)
        assert backend.database == database.name
        assert backend.redis_url == f"redis://{host}:{port}/0"
        persist.live.state(signal_id="s", bucket_name="b").write({"via": "setup"})
        assert persist.live.state(signal_id="s", bucket_name="b").read() == {"via": "setup"}
    with setup(env={**env, "PERSIST_REDIS_URL": "none"}) as persist:
        backend = persist.backend("backtest", "candle")
        assert isinstance(backend, MongoBackend)
        assert backend.redis_url is None
        assert persist.live.state(signal_id="s", bucket_name="b").read() == {"via": "setup"}


def test_importing_the_core_imports_no_driver() -> None:
    code = (
        "import sys, persist_core, persist_core.stores; print(sorted({'pymongo', 'redis', 'bson'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_without_redis_everything_runs_on_mongodb(database: servers.ScratchDatabase) -> None:
    database.wipe(None)
    backend = MongoBackend.from_url(database.url, redis_url="none")
    backend.open()
    store = make_store(backend, DOMAINS["signal"], {"symbol": "S", "strategy_name": "t", "exchange_name": "x"})
    store.write({"v": 1})
    assert store.read() == {"v": 1}
    assert backend.cache_stats.enabled is False
    assert backend.cache_stats.hits == 0
    backend.close()


# ------------------------------------------------------------------------------------------ document layout


def test_documents_carry_camel_case_keys_and_the_payload_as_canonical_json_text(
    backend: MongoBackend, raw: pymongo.database.Database[dict[str, Any]]
) -> None:
    value = {"nested": [[1, [2]]], "dot.key": {"$dollar": 2**62}, "text": "日本\x01", "neg": -0.0}
    store = make_store(backend, DOMAINS["memory"], {"signal_id": "sig/1", "bucket_name": "b:1"})
    store.write("m.1", value, when=1_700_000_000_000)
    store.remove("m.1")
    doc = raw["memory-items"].find_one({})
    assert doc is not None
    assert {k: doc[k] for k in ("signalId", "bucketName", "memoryId")} == {
        "signalId": "sig/1",
        "bucketName": "b:1",
        "memoryId": "m.1",
    }
    assert isinstance(doc["payload"], str)
    assert json.loads(doc["payload"]) == value
    assert doc["payload"] == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert doc["when"] == 1_700_000_000_000
    assert type(doc["when"]) is Int64
    assert doc["removed"] is True
    assert isinstance(doc["createDate"], dt.datetime)
    assert doc["updatedDate"] >= doc["createDate"]
    assert store.read("m.1") is None


def test_int_keys_are_int64_and_non_bucket_documents_have_no_removed_flag(
    backend: MongoBackend, raw: pymongo.database.Database[dict[str, Any]]
) -> None:
    candles = make_store(
        backend, DOMAINS["candle"], {"symbol": "S", "interval": "1m", "exchange_name": "x"}, clock=lambda: CLOCK_MS
    )
    assert candles.write([{"timestamp": 60_000, "close": 1.0}, {"timestamp": CANDLE_BASE, "close": 2.0}]) == 2
    docs = list(raw["candle-items"].find({}).sort("timestamp", 1))
    assert [type(d["timestamp"]) for d in docs] == [Int64, Int64]  # small ones too: one BSON type per key
    assert all("removed" not in d for d in docs)
    assert [(d["symbol"], d["interval"], d["exchangeName"]) for d in docs] == [("S", "1m", "x")] * 2


def test_every_collection_has_its_unique_key_index(
    backend: MongoBackend, raw: pymongo.database.Database[dict[str, Any]]
) -> None:
    for spec in DOMAINS.values():
        indexes = {ix["name"]: ix for ix in raw[spec.collection_name].list_indexes()}
        index = indexes[f"{spec.name}_items_uq"]
        assert index.get("unique") is True
        assert list(index["key"].items()) == [(f.camel, 1) for f in spec.key_fields]


def test_foreign_documents_are_corrupt_records_not_crashes(
    backend: MongoBackend, raw: pymongo.database.Database[dict[str, Any]]
) -> None:
    raw["state-items"].insert_one({"signalId": "s", "bucketName": "b", "payload": {"native": "object"}})
    with pytest.raises(CorruptRecordError, match="state-items"):
        backend.get(DOMAINS["state"], ("s", "b"))
    raw["measure-items"].insert_one({"bucket": "b", "entryKey": "k", "payload": "1", "when": "yesterday"})
    with pytest.raises(CorruptRecordError):
        backend.scan(DOMAINS["measure"], ("b",))


def test_mark_removed_is_only_for_soft_delete_domains(backend: MongoBackend) -> None:
    with pytest.raises(TypeError, match="soft delete"):
        backend.mark_removed(DOMAINS["signal"], ("S", "t", "x"))


# ------------------------------------------------------------------------------------------ ownership leases


def _lease(host: str, expires_ms: int = CLOCK_MS + 10_000) -> Lease:
    return Lease(ProcessIdentity(host, 4242, "123"), CLOCK_MS, expires_ms)


def test_leases_are_documents_numbered_by_generation_and_never_touch_redis(
    counted: tuple[MongoBackend, _Commands], raw: pymongo.database.Database[dict[str, Any]]
) -> None:
    backend, commands = counted
    leases = backend.lease_log()
    before = backend.cache_stats
    assert leases.head() is None
    assert leases.claim(1, _lease("a"))
    assert not leases.claim(1, _lease("b"))
    leases.renew(1, _lease("a", CLOCK_MS + 20_000))
    assert leases.head() == (1, _lease("a", CLOCK_MS + 20_000))
    assert commands.take() == ["find", "insert", "insert", "find", "update", "find"]  # the lost claim reads once
    doc = raw[LEASE_COLLECTION].find_one({})
    assert doc is not None
    assert set(doc) == {"_id", "lease", "updatedDate"}
    assert type(doc["_id"]) is Int64  # small ones too, like every int key: one BSON type per generation
    assert doc["lease"] == _lease("a", CLOCK_MS + 20_000).to_json()
    assert isinstance(doc["updatedDate"], dt.datetime)
    assert leases.claim(2, _lease("b")) and leases.claim(3, _lease("c"))
    leases.prune(3)
    assert commands.take() == ["insert", "insert", "delete"]
    assert [d["_id"] for d in raw[LEASE_COLLECTION].find({}).sort("_id", 1)] == [3]
    leases.renew(1, _lease("a", CLOCK_MS + 30_000))  # a pruned generation does not come back
    assert [d["_id"] for d in raw[LEASE_COLLECTION].find({}).sort("_id", 1)] == [3]
    after = backend.cache_stats
    assert (after.hits, after.misses, after.stores, after.errors) == (before.hits, before.misses, before.stores, 0)


def test_the_newest_generation_is_the_head_whatever_the_insertion_order(backend: MongoBackend) -> None:
    leases = backend.lease_log()
    for generation in (2, 10, 9, 1):  # 10 sorts before 9 as text: the _id must be a number
        assert leases.claim(generation, _lease(f"g{generation}"))
    assert leases.head() == (10, _lease("g10"))


def test_foreign_lease_documents_are_corrupt_or_ignored(
    backend: MongoBackend, raw: pymongo.database.Database[dict[str, Any]]
) -> None:
    leases = backend.lease_log()
    raw[LEASE_COLLECTION].insert_one({"_id": "notes", "lease": "not a generation"})
    assert leases.head() is None  # only numeric _ids are generations
    raw[LEASE_COLLECTION].insert_one({"_id": Int64(5), "lease": '{"host":"h"}'})
    with pytest.raises(CorruptRecordError, match="persist-leases"):
        leases.head()
    raw[LEASE_COLLECTION].insert_one({"_id": Int64(6), "lease": {"native": "object"}})
    with pytest.raises(CorruptRecordError, match="persist-leases"):
        leases.head()


def test_the_lease_collection_is_created_with_the_indexes(
    database: servers.ScratchDatabase, raw: pymongo.database.Database[dict[str, Any]]
) -> None:
    backend = MongoBackend.from_url(database.url, redis_url="none")
    backend.open()
    try:
        assert LEASE_COLLECTION in raw.list_collection_names()
        raw.client.drop_database(database.name)
        backend.ensure_indexes()  # after a dropped database, as for the domains' indexes
        assert LEASE_COLLECTION in raw.list_collection_names()
        backend.ensure_indexes()  # idempotent
        assert backend.lease_log().claim(1, _lease("a"))
    finally:
        backend.close()


# ------------------------------------------------------------------------------------------ round trips


@pytest.fixture
def counted(database: servers.ScratchDatabase) -> Iterator[tuple[MongoBackend, _Commands]]:
    database.wipe(None)
    redis_url = servers.shared_redis_url()
    servers.delete_redis_namespace(redis_url, database.name)
    listener = _Commands()
    backend = MongoBackend(database.url, redis_url=redis_url, client_options={"event_listeners": [listener]})
    backend.open()
    listener.take()
    yield backend, listener
    backend.close()


def test_each_operation_is_one_command(counted: tuple[MongoBackend, _Commands]) -> None:
    backend, commands = counted
    slot, bucket, log, candle = DOMAINS["signal"], DOMAINS["measure"], DOMAINS["log"], DOMAINS["candle"]
    key = ("BTC/USDT", "s", "x")
    backend.put(slot, key, Record('{"v":1}'))
    assert commands.take() == ["findAndModify"]
    assert backend.get(slot, key) == Record('{"v":1}')
    assert commands.take() == []  # answered by Redis alone: one Redis round trip, no MongoDB command
    backend.put(bucket, ("b", "k"), Record("1"))
    backend.mark_removed(bucket, ("b", "k"))
    # Soft-delete writes hold the key's lock: insert, the update, delete (docs/mongo.md, "Atomicity on FerretDB").
    assert commands.take() == ["insert", "findAndModify", "delete"] * 2
    assert backend.insert_many(log, [(("e1",), Record('{"id":"e1"}'))]) == 1
    assert backend.insert_many(log, [(("e1",), Record('{"id":"e1","x":2}'))]) == 0
    # A plain insert, the unique index deciding (flat on FerretDB, where an upsert's lookup reads the collection).
    assert commands.take() == ["insert", "insert"]
    context = ("S", "1m", "x")
    batch = [((*context, CANDLE_BASE + i * 60_000), Record(f'{{"close":{i}}}')) for i in range(1000)]
    assert backend.insert_many(candle, batch[500:]) == 500
    assert backend.insert_many(candle, batch) == 500
    assert commands.take() == ["insert", "insert"]
    window = backend.read_window(candle, context, CANDLE_BASE, CANDLE_BASE + 1000 * 60_000, 60_000)
    assert [item for item, _ in window] == [k[-1] for k, _ in batch]
    assert commands.take() == ["find"]  # the whole window in one round trip, no getMore
    assert len(backend.scan(candle, context)) == 1000
    assert commands.take() == ["find"]


def test_a_read_that_misses_is_one_indexed_query_then_cached(
    counted: tuple[MongoBackend, _Commands], raw: pymongo.database.Database[dict[str, Any]]
) -> None:
    backend, commands = counted
    # A document written before versions existed (no version field) reads as version 0.
    raw["state-items"].insert_one({"signalId": "s", "bucketName": "b", "payload": "[1]", "when": None})
    assert backend.get_versioned(DOMAINS["state"], ("s", "b")) == (Record("[1]"), 0)
    assert backend.get(DOMAINS["state"], ("s", "b")) == Record("[1]")
    assert commands.take() == ["find"]  # the second read was a hit
    stats = backend.cache_stats
    assert (stats.misses, stats.stores, stats.hits) == (1, 1, 1)
    assert backend.get(DOMAINS["state"], ("s", "missing")) is None
    assert commands.take() == ["find"]


def test_a_foreign_redis_key_of_another_type_is_a_miss_not_an_outage(
    backend: MongoBackend, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    client = redis.Redis.from_url(servers.shared_redis_url())
    spec = DOMAINS["state"]
    keys = [("s", "b1"), ("s", "b2")]
    for key in keys:
        backend.put(spec, key, Record('{"v":1}'))
        ckey = cache_key(backend.settings.namespace, spec, key)
        client.delete(ckey)
        client.rpush(ckey, "planted by another application")  # GET on it answers WRONGTYPE
    with caplog.at_level("WARNING", logger="persist.mongo"):
        for key in keys:
            assert backend.get(spec, key) == Record('{"v":1}')
    stats = backend.cache_stats
    assert (stats.available, stats.outages, stats.errors, stats.stale) == (True, 0, 0, 2)
    foreign = [r for r in caplog.records if "another type" in r.getMessage()]
    assert len(foreign) == 1  # once, not once per key
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()]
    # The foreign key was replaced by the cached id: the next read is a hit.
    assert client.type(cache_key(backend.settings.namespace, spec, keys[0])) == b"string"
    assert backend.get(spec, keys[0]) == Record('{"v":1}')
    assert backend.cache_stats.hits == 1
    client.close()


# ------------------------------------------------------------------------------------------ Redis keys


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_redis_keys_are_injective(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(["recent", "session", "memory", "storage", "candle", "log"]))
    spec = DOMAINS[name]

    def keys() -> st.SearchStrategy[tuple[Any, ...]]:
        parts: list[st.SearchStrategy[Any]] = []
        for field in spec.key_fields:
            if field.type is FieldType.BOOL:
                parts.append(st.booleans())
            elif field.type is FieldType.INT:
                parts.append(st.integers(0, 2**53 - 1))
            elif field.may_be_empty:
                parts.append(st.just("") | key_strings())
            else:
                parts.append(st.sampled_from(["a", "a_b", "b_c", "a:b", "%3A", ":"]) | key_strings())
        return st.tuples(*parts)

    one, two = data.draw(keys()), data.draw(keys())
    db = data.draw(st.sampled_from(["bot", "bot:x", "bot%3Ax"]))
    assert (cache_key(db, spec, one) == cache_key(db, spec, two)) == (one == two)
    assert cache_key(db, spec, one).startswith(f"{db}:{spec.cache_prefix}:")


def test_redis_key_form() -> None:
    spec = DOMAINS["recent"]
    key = ("BTC/USDT:USDT", "my_strat", "binance", "", True)
    assert cache_key("bot", spec, key) == "bot:recent_cache:sBTC%2FUSDT%3AUSDT:smy_strat:sbinance:s:b1"
    assert cache_key("bot", DOMAINS["candle"], ("S", "1m", "x", 5)) == "bot:candle_cache:sS:s1m:sx:i5"


# ------------------------------------------------------------------------------------------ errors


def test_driver_errors_are_translated_with_the_password_masked() -> None:
    url = "mongodb://trader:pw-123@db.internal:27017/bot"
    unavailable = translate(mongo_errors.ServerSelectionTimeoutError("no servers"), url, "reading signal")
    assert isinstance(unavailable, BackendUnavailableError)
    assert "pw-123" not in str(unavailable)
    assert "trader:***@db.internal" in str(unavailable)
    assert "reading signal" in str(unavailable)
    denied = translate(mongo_errors.OperationFailure("auth failed", code=18), url, "opening")
    assert isinstance(denied, ConfigurationError)
    too_big = translate(mongo_errors.DocumentTooLarge("16 MiB"), url, "writing")
    assert isinstance(too_big, InvalidValueError)
    leaking = translate(mongo_errors.OperationFailure(f"bad thing at {url}", code=2), url, "writing")
    assert type(leaking) is PersistError
    assert "pw-123" not in str(leaking)


_BIG = 17 * 1024 * 1024  # over MongoDB's 16 MiB document limit, under the raised store limit below


def test_a_value_over_16_mib_is_an_invalid_value_and_nothing_is_written(backend: MongoBackend) -> None:
    limit = 32 * 1024 * 1024
    state = make_store(backend, DOMAINS["state"], {"signal_id": "s", "bucket_name": "b"}, max_value_bytes=limit)
    with pytest.raises(InvalidValueError, match="MongoDB document"):
        state.write({"blob": "x" * _BIG})
    assert backend.get(DOMAINS["state"], ("s", "b")) is None
    log = make_store(backend, DOMAINS["log"], {}, max_value_bytes=limit)
    # A batch with one oversized item writes none of its items (FerretDB would even store the big one).
    with pytest.raises(InvalidValueError):
        log.write([{"id": "e1"}, {"id": "e2", "blob": "x" * _BIG}])
    assert backend.scan(DOMAINS["log"], ()) == []
    storage = make_store(backend, DOMAINS["storage"], {"backtest": True}, max_value_bytes=limit)
    with pytest.raises(InvalidValueError):
        storage.write([{"id": "a"}, {"id": "b", "blob": "x" * _BIG}])
    assert backend.scan(DOMAINS["storage"], (True,)) == []


def test_the_drivers_document_too_large_is_translated(backend: MongoBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the backend's own size check the driver refuses the command itself, raising
    # DocumentTooLarge, a bson InvalidDocument rather than a PyMongoError: it must still come out typed.
    monkeypatch.setattr("persist_mongo._operations._MAX_PAYLOAD_BYTES", 1 << 30)
    with pytest.raises(InvalidValueError, match="too large") as info:
        backend.put(DOMAINS["state"], ("s", "b"), Record(json.dumps({"blob": "x" * _BIG})))
    # The chain keeps the driver's exception type, through the stand-in that masks driver errors.
    assert getattr(info.value.__cause__, "driver_type", "") == "pymongo.errors.DocumentTooLarge"
    assert backend.get(DOMAINS["state"], ("s", "b")) is None


# ------------------------------------------------------------------------------------------ string order


def _check_order(backend: MongoBackend, tag: str, keys: list[str], bounds: tuple[str, str]) -> None:
    spec = DOMAINS["measure"]
    backend.put_many(spec, [((tag, k), Record("0")) for k in keys])
    expected = sorted(set(keys))
    assert [item for item, _ in backend.scan(spec, (tag,))] == expected
    low, high = sorted(bounds)
    assert [item for item, _ in backend.scan(spec, (tag,), low, high)] == [k for k in expected if low <= k < high]


_ORDER_KEYS = st.lists(key_strings(), min_size=1, max_size=12)


@given(keys=_ORDER_KEYS, bounds=st.tuples(key_strings(), key_strings()))
@settings(max_examples=40, deadline=None)
def test_strings_sort_by_code_point_on_the_shared_server(
    database: servers.ScratchDatabase, keys: list[str], bounds: tuple[str, str]
) -> None:
    backend = MongoBackend.from_url(database.url, redis_url="none")
    backend.open()
    try:
        _check_order(backend, f"o{len(keys)}-{hash((tuple(keys), bounds)) & 0xFFFFFF}", keys, bounds)
    finally:
        backend.close()


def test_strings_sort_by_code_point_on_ferretdb_sqlite(private_ferretdb: servers.PrivateFerretDB) -> None:
    backend = MongoBackend.from_url(private_ferretdb.url + "order", redis_url="none")
    backend.open()
    keys = ["b", "a", "B", "é", "z", "10", "9", "日本", "~", "a_b", "\U0001f680", "\uffff", "\ue000", " ", "%", "a.b"]
    _check_order(backend, "fixed", keys, ("B", "é"))
    _check_order(backend, "emoji", keys, ("\ue000", "\U0001f680"))
    backend.close()
