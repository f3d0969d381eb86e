"""Ownership inside one process: every facade on one storage shares one owner (issue 9.2)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from persist_core import OwnershipError, setup
from persist_core.guarded import _owners
from tests.ownership.child import CONTEXT as CHILD_CONTEXT

CONTEXT = {"symbol": "BTC/USDT", "strategy_name": "s", "exchange_name": "e"}


def test_a_second_setup_keeps_ownership_through_the_closing_facade(tmp_path: Path) -> None:
    first = setup(f"file:{tmp_path}/dump", env={}, lease_seconds=0.3)
    first.live.signal(**CONTEXT).write({"n": 1})
    second = setup(f"file:{tmp_path}/dump/", env={}, lease_seconds=0.3)  # closes the first; one folder, two spellings
    try:
        for n in range(2, 8):  # past several renewals, which now read leases through the second facade's backend
            time.sleep(0.1)
            second.live.signal(**CONTEXT).write({"n": n})
        assert second.live.signal(**CONTEXT).read() == {"n": 7}
        assert len(list((tmp_path / "dump" / ".owner").glob("*.json"))) == 1  # no takeover happened
    finally:
        second.close()
    assert not _owners


def test_a_closed_facade_releases_the_lease_for_the_next_process(tmp_path: Path) -> None:
    from tests.ownership.test_processes import Child

    url = f"file:{tmp_path}/dump"
    with setup(url, env={}) as persist:
        persist.claim_ownership()
    child = Child(url, 2.0, {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}, tmp_path / "child.err")
    try:
        child.expect("owned", timeout=30)  # at once: the lease was released, not left to expire
    finally:
        child.kill()


def test_claim_ownership_fails_fast_at_start_up(tmp_path: Path) -> None:
    from tests.ownership.test_processes import Child

    url = f"file:{tmp_path}/dump"
    child = Child(url, 2.0, {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}, tmp_path / "child.err")
    try:
        child.expect("ack", timeout=30)
        with setup(url, env={}) as persist:
            with pytest.raises(OwnershipError, match=f"pid {child.proc.pid}"):
                persist.claim_ownership()
            assert persist.live.signal(**CHILD_CONTEXT).read()["writer"] == child.proc.pid  # reads need no ownership
    finally:
        child.kill()


def test_deleting_records_is_a_write_that_needs_ownership(tmp_path: Path) -> None:
    """delete_records goes through the ownership guard like every live write; listing does not (3.7, 3.8)."""
    from persist_core.domains import DOMAINS
    from tests.ownership.test_processes import Child

    url = f"file:{tmp_path}/dump"
    child = Child(url, 2.0, {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}, tmp_path / "child.err")
    try:
        child.expect("ack", timeout=30)
        with setup(url, env={}) as persist:
            guarded = persist.store_backend("live", "signal")
            spec = DOMAINS["signal"]
            listed = guarded.list_records(spec)
            assert [key for key, _ in listed] == [tuple(CHILD_CONTEXT.values())]
            with pytest.raises(OwnershipError):
                guarded.delete_records(spec, [key for key, _ in listed])
            assert guarded.list_records(spec) == listed  # nothing deleted
    finally:
        child.kill()
