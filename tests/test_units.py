"""Units of work on the facade (both faces): collected, applied at the end of the block, all or none.

The backends' own atomicity is tested by the kit clause on ``apply_unit`` and by tests/test_unit_kill.py;
this module tests what the facade adds: collecting, the commit, refusals, and the guarantee across backends.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persist_core import asetup, setup
from persist_core.errors import InvalidValueError, UnitIncompleteError, UnitOfWorkError
from persist_core.persist import Persist, build_persist

CTX = {"symbol": "BTCUSDT", "strategy_name": "s", "exchange_name": "x"}


def step(unit: Any, n: int) -> None:
    """The demo's five-domain step, as one unit."""
    unit.signal(**CTX).write({"id": f"sig-{n}", "n": n})
    unit.risk(risk_name="r", exchange_name="x").write({f"pos-{n}": {"n": n}})
    unit.storage(backtest=False).write([{"id": f"sig-{n}", "n": n}])
    unit.log().write([{"id": f"log-{n}", "n": n}])
    unit.strategy(**CTX).write({"cursor": n})


def seen(persist: Persist, n: int) -> list[bool]:
    live = persist.live
    signal = live.signal(**CTX).read()
    strategy = live.strategy(**CTX).read()
    return [
        signal is not None and signal["n"] == n,
        f"pos-{n}" in live.risk(risk_name="r", exchange_name="x").read(),
        any(row["id"] == f"sig-{n}" for row in live.storage(backtest=False).read()),
        any(row["id"] == f"log-{n}" for row in live.log().read()),
        strategy is not None and strategy["cursor"] == n,
    ]


@pytest.fixture(params=["memory", "file"])
def persist(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    url = "memory://" if request.param == "memory" else f"file:{tmp_path / 'state'}"
    with setup(url) as facade:
        yield facade


def test_writes_appear_at_the_end_of_the_block_only(persist: Persist) -> None:
    with persist.live.unit() as unit:
        step(unit, 1)
        assert len(unit) == 5
        assert seen(persist, 1) == [False] * 5
    assert seen(persist, 1) == [True] * 5


def test_a_block_that_raises_writes_nothing(persist: Persist) -> None:
    with pytest.raises(RuntimeError, match="exchange said no"), persist.live.unit() as unit:
        step(unit, 2)
        raise RuntimeError("exchange said no")
    assert seen(persist, 2) == [False] * 5


def test_bad_input_raises_at_the_call_and_the_unit_writes_nothing(persist: Persist) -> None:
    with pytest.raises(InvalidValueError), persist.live.unit() as unit:
        step(unit, 3)
        unit.state(signal_id="sig-3", bucket_name="b").write(float("nan"))
    assert seen(persist, 3) == [False] * 5


def test_reads_through_a_unit_are_refused(persist: Persist) -> None:
    with persist.live.unit() as unit:
        with pytest.raises(UnitOfWorkError, match="collects writes only"):
            unit.signal(**CTX).read()
        with pytest.raises(UnitOfWorkError):
            unit.measure(bucket="b").keys()


def test_a_spent_unit_refuses_writes_and_a_second_commit(persist: Persist) -> None:
    unit = persist.live.unit()
    step(unit, 4)
    unit.commit()
    with pytest.raises(UnitOfWorkError, match="committed"):
        unit.log().write([{"id": "late"}])
    with pytest.raises(UnitOfWorkError, match="committed"):
        unit.commit()
    discarded = persist.live.unit()
    discarded.discard()
    with pytest.raises(UnitOfWorkError, match="discarded"):
        discarded.strategy(**CTX).write({"cursor": 0})
    assert all(seen(persist, 4))


def test_first_write_wins_and_last_put_wins_within_a_unit(persist: Persist) -> None:
    candles = [
        {"timestamp": 60_000 * i, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0} for i in range(3)
    ]
    with persist.live.unit() as unit:
        unit.log().write([{"id": "a", "v": 1}])
        unit.log().write([{"id": "a", "v": 2}])
        unit.storage(backtest=False).write([{"id": "s", "v": 1}])
        unit.storage(backtest=False).write([{"id": "s", "v": 2}])
        unit.candle(symbol="B", interval="1m", exchange_name="x").write(candles)
        unit.measure(bucket="m").write("k", 1)
        unit.measure(bucket="m").remove("k")
    assert persist.live.log().read() == [{"id": "a", "v": 1}]
    assert persist.live.storage(backtest=False).read() == [{"id": "s", "v": 2}]
    assert persist.live.candle(symbol="B", interval="1m", exchange_name="x").read(3, 0) is not None
    assert not persist.live.measure(bucket="m").has("k")


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["put", "insert", "remove"]), st.integers(0, 3), st.integers(0, 9)), max_size=20)
)
def test_a_unit_ends_as_the_same_calls_made_one_by_one(ops: list[tuple[str, int, int]]) -> None:
    """Property: a unit's result equals its writes applied one at a time, in order (memory backend)."""

    def play(target: Any) -> None:
        for op, key, value in ops:
            if op == "put":
                target.measure(bucket="b").write(f"k{key}", value)
            elif op == "insert":
                target.log().write([{"id": f"k{key}", "v": value}])
            else:
                target.measure(bucket="b").remove(f"k{key}")

    with build_persist("memory://one") as direct, build_persist("memory://two") as batched:
        play(direct.live)
        with batched.live.unit() as unit:
            play(unit)
        assert direct.live.log().read() == batched.live.log().read()
        assert list(direct.live.measure(bucket="b").entries()) == list(batched.live.measure(bucket="b").entries())


def test_across_backends_a_failed_later_part_names_what_was_stored(tmp_path: Path) -> None:
    """Domains on two backends: the first group is stored, the second fails whole (a SQLite file locked by
    another connection), and the error says which is which."""
    pytest.importorskip("sqlalchemy")
    db = tmp_path / "log.db"
    with setup(f"file:{tmp_path / 'state'}", domains={"log": f"sqlite:///{db}?timeout=0.3"}) as persist:
        persist.live.log().write([{"id": "warm-up"}])  # creates the schema
        blocker = sqlite3.connect(db, timeout=0)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(UnitIncompleteError) as caught, persist.live.unit() as unit:
                step(unit, 5)
        finally:
            blocker.rollback()
            blocker.close()
        assert len(caught.value.applied) == 1 and "state" in caught.value.applied[0]
        assert len(caught.value.not_applied) == 1 and "log.db" in caught.value.not_applied[0]
        assert seen(persist, 5) == [True, True, True, False, True]


def test_across_backends_a_failed_first_part_stores_nothing(tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    db = tmp_path / "log.db"
    with setup(f"file:{tmp_path / 'state'}", domains={"log": f"sqlite:///{db}?timeout=0.3"}) as persist:
        persist.live.log().write([{"id": "warm-up"}])
        blocker = sqlite3.connect(db, timeout=0)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(Exception) as caught, persist.live.unit() as unit:
                unit.log().write([{"id": "log-6"}])  # the log's backend is written first
                step(unit, 6)
        finally:
            blocker.rollback()
            blocker.close()
        assert not isinstance(caught.value, UnitIncompleteError)
        assert seen(persist, 6) == [False] * 5


def test_a_backend_without_atomic_units_is_named_in_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with setup(f"file:{tmp_path / 'state'}", domains={"log": f"jsonl:{tmp_path / 'log.jsonl'}"}) as persist:
        with caplog.at_level(logging.WARNING, logger="persist"), persist.live.unit() as unit:
            unit.log().write([{"id": "a"}, {"id": "b"}])
        assert any("cannot apply a unit of work atomically" in r.getMessage() for r in caplog.records)
        assert [row["id"] for row in persist.live.log().read()] == ["a", "b"]


def test_the_asyncio_face_collects_and_commits_the_same(tmp_path: Path) -> None:
    async def main() -> None:
        persist = await asetup(f"file:{tmp_path / 'state'}")
        async with persist:
            async with persist.live.unit() as unit:
                await unit.signal(**CTX).write({"id": "sig-7", "n": 7})
                await unit.log().write([{"id": "log-7"}])
                assert await persist.live.signal(**CTX).read() is None
                with pytest.raises(UnitOfWorkError):
                    await unit.signal(**CTX).read()
            assert (await persist.live.signal(**CTX).read()) == {"id": "sig-7", "n": 7}
            with pytest.raises(KeyError):
                async with persist.live.unit() as unit:
                    await unit.strategy(**CTX).write({"cursor": 8})
                    raise KeyError("no")
            assert await persist.live.strategy(**CTX).read() is None

    asyncio.run(main())
