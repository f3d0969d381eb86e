"""``null://`` (CONTRACTS.md 6.5): reads return the missing value, writes are discarded, on both faces."""

from __future__ import annotations

import asyncio

import pytest

from persist_core import asetup, setup
from persist_core.backend import Record
from persist_core.backends.null import NullBackend
from persist_core.domains import DOMAINS
from persist_core.errors import ConfigurationError, InvalidValueError

CONTEXT = {"symbol": "BTC/USDT", "strategy_name": "s", "exchange_name": "e"}
CANDLE = {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0}


def test_every_store_reads_its_missing_value_after_a_write() -> None:
    persist = setup("null://", env={})
    try:
        live = persist.live
        signal = live.signal(**CONTEXT)
        signal.write({"position": "long"})
        assert signal.read() is None
        risk = live.risk(risk_name="r", exchange_name="e")
        risk.write({"limit": 1})
        assert risk.read() == {}
        candles = live.candle(symbol="BTC/USDT", interval="1m", exchange_name="e")
        assert candles.write([{"timestamp": 0, **CANDLE}]) == 0  # nothing was stored
        assert candles.read(limit=1, since=0) is None
        log = live.log()
        log.write([{"id": "a", "text": "x"}])
        assert log.read() == []
        memory = live.memory(signal_id="sig", bucket_name="b")
        memory.write("m1", {"v": 1})
        assert memory.read("m1") is None and not memory.has("m1")
        memory.remove("m1")
    finally:
        persist.close()


def test_the_asyncio_face_discards_too() -> None:
    async def main() -> None:
        async with await asetup("null://", env={}) as persist:
            signal = persist.live.signal(**CONTEXT)
            await signal.write({"position": "long"})
            assert await signal.read() is None

    asyncio.run(main())


def test_bad_input_is_still_refused() -> None:
    """A dry run must fail where the real run would: validation happens before the backend."""
    persist = setup("null://", env={})
    try:
        with pytest.raises(InvalidValueError, match=r"NaN|nan"):
            persist.live.signal(**CONTEXT).write({"price": float("nan")})
    finally:
        persist.close()


def test_both_modes_may_route_to_null_without_share_modes() -> None:
    """null:// stores nothing, so it is no storage two modes could share."""
    persist = setup("null://", backtest={"signal": "null://"}, env={})
    try:
        assert ("backtest", "signal", "null://") in persist.routes()
    finally:
        persist.close()


def test_options_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="no options"):
        setup("null://?x=1", env={})


def test_backend_level_operations() -> None:
    backend = NullBackend()
    spec = DOMAINS["measure"]
    backend.put(spec, ("b", "k"), Record("1"))
    assert backend.get(spec, ("b", "k")) is None
    assert backend.scan(spec, ("b",)) == []
    assert backend.insert_many(spec, [(("b", "k"), Record("1"))]) == 0
    assert backend.list_records(spec) == [] and backend.list_contexts(spec) == []
    assert backend.delete_records(spec, [("b", "k")]) == 0
    assert not backend.capabilities.blocks and not backend.capabilities.survives_process_kill
