"""Upstream's per-mode table (issue 6), set up as examples/per_mode_config configures it, against real servers.

Every domain is written in both modes, and each record is looked for in the storage of every backend of the
table: MongoDB's ``<domain>-items`` collection (pymongo, directly), the file backend's folder, the JSONL file's
lines and the memory backend's records. It must be in the one the table names and in no other.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from persist_core import Persist
from persist_core.backend import Backend, Key
from persist_core.backends.memory import MemoryBackend
from persist_core.domains import DOMAINS, DomainSpec, Kind
from persist_core.testing.samples import context_for
from tests.services import require

EXAMPLE = Path(__file__).parent.parent / "examples" / "per_mode_config" / "per_mode_config.py"

#: The table of issue 6, as the issue gives it: domain -> (live, backtest).
TABLE = {
    "session": ("mongo", "file"),
    "storage": ("mongo", "memory"),
    "recent": ("mongo", "memory"),
    "notification": ("mongo", "memory"),
    "memory": ("mongo", "file"),
    "state": ("mongo", "file"),
    "candle": ("mongo", "mongo"),
    "log": ("jsonl", "jsonl"),
}
#: The domains the table does not name, as docs/configuration-per-mode.md settles them.
OTHERS = {
    **dict.fromkeys(("signal", "schedule", "strategy", "risk", "partial", "breakeven"), ("mongo", "memory")),
    **dict.fromkeys(("measure", "interval"), ("mongo", "mongo")),
}
MODES = ("live", "backtest")
KINDS = ("mongo", "file", "jsonl", "memory")
CANDLE_MS = 1_700_000_000_000


def expected(mode: str, name: str) -> str:
    live, backtest = {**TABLE, **OTHERS}[name]
    return live if mode == "live" else backtest


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("per_mode_config_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _ping_mongo(url: str) -> None:
    import pymongo

    client: Any = pymongo.MongoClient(url, serverSelectionTimeoutMS=3000)
    try:
        client.admin.command("ping")
    finally:
        client.close()


def _ping_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    finally:
        client.close()


@dataclass
class Servers:
    mongo_url: str  # with a database of this test's own
    database: Any  # pymongo Database
    redis_url: str


@pytest.fixture
def servers() -> Iterator[Servers]:
    import pymongo
    import redis

    base = require("PERSIST_TEST_MONGO_URL", _ping_mongo)
    redis_url = require("PERSIST_TEST_REDIS_URL", _ping_redis)
    name = f"persist_permode_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(base)
    mongo_url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    client: Any = pymongo.MongoClient(base, serverSelectionTimeoutMS=5000)
    try:
        yield Servers(mongo_url, client[name], redis_url)
    finally:
        client.drop_database(name)
        client.close()
        cache = redis.Redis.from_url(redis_url)
        try:  # the Mongo backend namespaces its Redis keys by the database name
            for key in cache.scan_iter(match=f"*{name}*"):
                cache.delete(key)
        finally:
            cache.close()


# --------------------------------------------------------------------------------- writing one record


def token(mode: str, name: str) -> str:
    return f"probe-{mode}-{name}-7c1f"


def context(mode: str, spec: DomainSpec) -> dict[str, Any]:
    """A context per mode: where both modes share a backend, their records must not be one record."""
    ctx = context_for(spec, 1)
    for field in spec.context:
        if field.name == "backtest":
            ctx["backtest"] = mode == "backtest"
        elif field.name in ("symbol", "bucket", "signal_id", "risk_name"):
            ctx[field.name] = f"{mode}-{ctx[field.name]}"
    return ctx


def write(persist: Persist, mode: str, name: str) -> Key:
    """Write one record holding ``token(mode, name)``; return its key."""
    spec = DOMAINS[name]
    store: Any = persist.mode(mode).store(name, **context(mode, spec))
    value = {"probe": token(mode, name)}
    item: Any = None
    if spec.kind is Kind.SLOT:
        store.write(value)
    elif spec.kind in (Kind.KEYED, Kind.BUCKET):
        item = "item-1"
        store.write(item, value)
    elif spec.kind is Kind.CANDLE:
        item = CANDLE_MS
        assert store.write([{"timestamp": item, **value}]) == 1
    else:
        item = f"{mode}-item-1"  # the log has no context: the id tells the modes apart
        store.write([{"id": item, **value}])
    return store.context if item is None else (*store.context, item)


def read(persist: Persist, mode: str, name: str) -> Any:
    spec = DOMAINS[name]
    store: Any = persist.mode(mode).store(name, **context(mode, spec))
    if spec.kind is Kind.SLOT:
        return store.read()
    if spec.kind in (Kind.KEYED, Kind.BUCKET):
        return store.read("item-1")
    if spec.kind is Kind.CANDLE:
        return store.read(1, CANDLE_MS)[0]["probe"]
    return [item for item in store.read() if item["id"] == f"{mode}-item-1"]


# ---------------------------------------------------------------------- looking into each storage


def found_in(kind: str, name: str, key: Key, probe: str, *, servers: Servers, root: Path, persist: Persist) -> bool:
    """Whether the storage of ``kind`` holds the record ``key`` of domain ``name`` with ``probe`` in it."""
    if kind == "mongo":
        collection = servers.database[DOMAINS[name].collection_name]
        return any(probe in str(doc.get("payload", "")) for doc in collection.find({}))
    if kind == "file":
        records = (root / "dump" / name).rglob("*.json")  # the file backend's record files
        return any(probe.encode() in f.read_bytes() for f in records if f.is_file())
    if kind == "jsonl":
        path = root / "dump" / "log" / "log.jsonl"
        return path.is_file() and any(probe in line for line in path.read_text().splitlines())
    memories = {id(b): b for b in _backends(persist) if isinstance(b, MemoryBackend)}
    records = [b.get(DOMAINS[name], key) for b in memories.values()]
    return any(r is not None and probe in r.payload for r in records)


def _backends(persist: Persist) -> list[Backend]:
    return [persist.backend(mode, name) for mode in MODES for name in DOMAINS]


def check_the_table(persist: Persist, servers: Servers, root: Path) -> None:
    keys = {(mode, name): write(persist, mode, name) for mode in MODES for name in DOMAINS}
    wrong = []
    for (mode, name), key in keys.items():
        probe = token(mode, name)
        where = [k for k in KINDS if found_in(k, name, key, probe, servers=servers, root=root, persist=persist)]
        if where != [expected(mode, name)]:
            wrong.append(f"{mode} {name}: found in {where}, the table says {expected(mode, name)}")
    assert wrong == [], "\n".join(wrong)
    for mode in MODES:
        for name in DOMAINS:
            got = read(persist, mode, name)
            probe = token(mode, name)
            assert probe in str(got), f"{mode} {name} reads back {got!r}"


# ------------------------------------------------------------------------------------------- tests


def urls_for(example: ModuleType, servers: Servers, root: Path) -> Any:
    return example.Urls(
        mongo=servers.mongo_url,
        redis=servers.redis_url,
        file=f"file:{root}/dump",
        memory="memory://",
        jsonl=f"jsonl:{root}/dump/log/log.jsonl",
    )


FORMS: dict[str, Callable[[ModuleType, Any], Persist]] = {
    "setup-call": lambda example, urls: example.configure(urls),
    "environment": lambda example, urls: example.configure_from_environment(example.environment(urls)),
}


@pytest.mark.parametrize("form", FORMS)
def test_each_domain_lands_where_the_table_says(servers: Servers, tmp_path: Path, form: str) -> None:
    example = load_example()
    persist = FORMS[form](example, urls_for(example, servers, tmp_path))
    with persist:
        routes = {(mode, name): url for mode, name, url in persist.routes()}
        assert sorted(routes) == sorted((mode, name) for mode in MODES for name in DOMAINS)
        check_the_table(persist, servers, tmp_path)


def test_backtest_shares_live_candles_and_log_but_not_trading_state(servers: Servers, tmp_path: Path) -> None:
    example = load_example()
    with example.configure(urls_for(example, servers, tmp_path)) as persist:
        trade = {"symbol": "BTC/USDT", "strategy_name": "trend", "exchange_name": "binance"}
        candle = {"timestamp": CANDLE_MS, "close": 1.5}
        persist.live.candle(symbol="BTC/USDT", interval="1m", exchange_name="binance").write([candle])
        persist.live.log().write([{"id": "from-live"}])
        persist.live.signal(**trade).write({"position": "long"})
        persist.backtest.signal(**trade).write({"position": "short"})
        assert persist.backtest.candle(symbol="BTC/USDT", interval="1m", exchange_name="binance").read(
            1, CANDLE_MS
        ) == [candle]
        assert persist.backtest.log().read() == [{"id": "from-live"}]
        assert persist.live.signal(**trade).read() == {"position": "long"}
        assert persist.backtest.signal(**trade).read() == {"position": "short"}


def test_the_example_script_runs(servers: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example()
    for form in ("setup", "env"):
        argv = ["--form", form, "--mongo", servers.mongo_url, "--redis", servers.redis_url, "--dir", f"{tmp_path}/d"]
        assert example.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["domain", "live", "backtest"]
    rows = {line.split()[0]: line.split()[1:] for line in out[1:17]}
    assert rows["log"] == [f"jsonl:{tmp_path}/d/log/log.jsonl"] * 2
    assert rows["storage"] == [servers.mongo_url, "memory://"]
    assert (tmp_path / "d" / "log" / "log.jsonl").read_text().count("\n") == 2  # one entry per mode, once
