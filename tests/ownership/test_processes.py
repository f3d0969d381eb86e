"""Ownership with real processes on every backend that keeps leases (CONTRACTS.md 3.7, issue 9.2).

A child process (:mod:`tests.ownership.child`) owns the live state and writes its signal slot; this test
process plays the second bot. Takeover times are printed (``-s``) for the closing note.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from persist_core import OwnershipError, setup
from tests.ownership.child import CONTEXT

ROOT = Path(__file__).resolve().parents[2]
LEASE = 2.0


class Child:
    """A running :mod:`tests.ownership.child` with its output lines in a queue."""

    def __init__(self, url: str, lease: float, env: dict[str, str], stderr: Path, host: str | None = None) -> None:
        args = [sys.executable, "-m", "tests.ownership.child", url, str(lease), *([host] if host else [])]
        self.stderr = stderr
        with stderr.open("w") as err:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("<eof>")

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the child printed no {prefix!r} within {timeout} s") from None
            if line.startswith(prefix):
                return line
            if line == "<eof>":
                self.proc.wait(timeout=30)
                stderr = self.stderr.read_text()
                raise AssertionError(f"the child ended before {prefix!r}: {stderr[-2000:]}")

    def drain(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.lines.get_nowait())
            except queue.Empty:
                return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def spawn(target: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[object]:
    children: list[Child] = []
    url, extra_env = target

    def start(lease: float = LEASE, host: str | None = None) -> Child:
        env = {**os.environ, **extra_env, "PYTHONPATH": str(ROOT)}
        child = Child(url, lease, env, tmp_path / f"child-{len(children)}.err", host)
        children.append(child)
        child.expect("owned")
        child.expect("ack")
        return child

    yield start
    for child in children:
        child.kill()


def _setup(target: tuple[str, dict[str, str]]):  # type: ignore[no-untyped-def]
    url, extra_env = target
    return setup(url, lease_seconds=LEASE, env={**os.environ, **extra_env})


def _write_until_owned(target: tuple[str, dict[str, str]], value: dict[str, object], limit: float) -> float:
    """Write ``value`` as a second bot, retrying while refused; return the seconds until it was accepted."""
    started = time.monotonic()
    with _setup(target) as persist:
        store = persist.live.signal(**CONTEXT)
        while True:
            try:
                store.write(value)
                return time.monotonic() - started
            except OwnershipError:
                if time.monotonic() - started > limit:
                    raise
                time.sleep(0.02)


def test_a_second_live_process_is_refused_before_it_writes(target: tuple[str, dict[str, str]], spawn) -> None:  # type: ignore[no-untyped-def]
    owner = spawn()
    with _setup(target) as persist:
        with pytest.raises(
            OwnershipError, match=rf"owned by another live process \(host \S+ pid {owner.proc.pid} since"
        ):
            persist.live.signal(**CONTEXT).write({"writer": "intruder"})
        with pytest.raises(OwnershipError):
            persist.claim_ownership()
        # A backtest takes no ownership: it may run beside the live bot (in its own records).
        persist.backtest.signal(**CONTEXT).write({"writer": "backtest"})
        persist.backtest.storage(backtest=True).write([{"id": "bt-1"}])
        owner.expect("ack")
        assert persist.live.signal(**CONTEXT).read()["writer"] == owner.proc.pid
    assert not [line for line in owner.drain() if line.startswith("lost")]


def test_a_killed_owner_is_replaced_at_once_on_its_host(target: tuple[str, dict[str, str]], spawn) -> None:  # type: ignore[no-untyped-def]
    owner = spawn()
    owner.proc.kill()
    owner.proc.wait()
    took = _write_until_owned(target, {"writer": "successor"}, limit=LEASE + 5)
    print(f"\ntakeover after SIGKILL on the same host: {took * 1000:.0f} ms ({target[0].split(':')[0]})")
    assert took < 1.0


def test_a_killed_owner_on_another_host_is_replaced_when_its_lease_expires(
    target: tuple[str, dict[str, str]],
    spawn,  # type: ignore[no-untyped-def]
) -> None:
    owner = spawn(host="elsewhere.example")
    owner.proc.kill()
    owner.proc.wait()
    took = _write_until_owned(target, {"writer": "successor"}, limit=LEASE + 5)
    print(f"\ntakeover after SIGKILL on another host: {took * 1000:.0f} ms (lease {LEASE} s)")
    assert took <= LEASE + 1.0


def test_a_stopped_owner_that_lost_ownership_cannot_write(target: tuple[str, dict[str, str]], spawn) -> None:  # type: ignore[no-untyped-def]
    owner = spawn()
    os.kill(owner.proc.pid, signal.SIGSTOP)
    try:
        took = _write_until_owned(target, {"writer": "successor", "n": 0}, limit=LEASE + 5)
        print(f"\ntakeover from a SIGSTOPped owner: {took * 1000:.0f} ms (lease {LEASE} s)")
        assert took <= LEASE + 1.0
        owner.drain()
    finally:
        os.kill(owner.proc.pid, signal.SIGCONT)
    line = owner.expect("lost", timeout=10)
    assert "lost ownership" in line
    assert owner.proc.wait(timeout=10) == 3
    assert not [entry for entry in owner.drain() if entry.startswith("ack")]
    with _setup(target) as persist:
        assert persist.live.signal(**CONTEXT).read() == {"writer": "successor", "n": 0}
