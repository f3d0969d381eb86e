"""The crash/resume demo: a reference run, a live run killed with SIGKILL mid-trade, a restart, a check.

See ``docs/demo.md`` for what it shows and how to read its account.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import persist_core
from persist_core.demo.market import Market, SimClock
from persist_core.demo.strategy import INTERVAL, SYMBOL, LiveStrategy, Names, run_items, setup_env
from persist_core.errors import ConfigurationError
from persist_core.persist import Persist, setup
from persist_core.urls import mask_url, path_of, scheme_of

__all__ = ["DemoError", "DemoOptions", "compare", "run_demo", "snapshot"]

#: The domains the demo writes (live mode); the target must store all of them.
DOMAINS_USED = ("signal", "strategy", "risk", "partial", "candle", "storage", "log")


class DemoError(Exception):
    """The demo could not run to its check (a child process failed or hung)."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``backtest-persist demo`` was asked to do.

    Attributes:
        url: the target backend; ``None`` means the file backend in a new temp folder.
        seed: picks the synthetic market and the moment of the kill (same seed, same run).
        keep: keep the temp folder of the default target.
        reference_url: where the uninterrupted reference run keeps its state.
        candles: length of the synthetic market (the run handles all but the first 20 and the last).
        pace_ms: sleep per step of the live processes.
        timeout_s: longest a live process may run.
        resume_url: when set, the killed run's state is copied there (``persist_core.transfer.copy``, verified)
            and the restart and the check run on it: a bot moved to another backend between crash and restart.
    """

    url: str | None = None
    seed: int = 1
    keep: bool = False
    reference_url: str = "memory://"
    candles: int = 262
    pace_ms: float = 2.0
    timeout_s: float = 120.0
    resume_url: str | None = None


# ----------------------------------------------------------------------------------------- state


def snapshot(persist: Persist, names: Names, market: Market) -> dict[str, Any]:
    """Everything the run persisted, read back through the public API."""
    live = persist.live
    triple = {"symbol": SYMBOL, "strategy_name": names.strategy_name, "exchange_name": names.exchange_name}
    trades = run_items(live.storage(backtest=False).read(), names.signal_prefix)
    partial = live.partial(**triple)
    candles = live.candle(symbol=SYMBOL, interval=INTERVAL, exchange_name=names.exchange_name)
    return {
        "trades": trades,
        "log": run_items(live.log().read(), names.log_prefix),
        "signal": live.signal(**triple).read(),
        "risk": live.risk(risk_name=names.risk_name, exchange_name=names.exchange_name).read(),
        "strategy": live.strategy(**triple).read(),
        "partial": {sid: partial.read(sid) for sid in trades},
        "candles": candles.read(len(market.candles) - 1, market.timestamp(0)),
    }


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _differing_fields(a: dict[str, Any], b: dict[str, Any]) -> str:
    return ", ".join(sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)))


def compare(reference: dict[str, Any], final: dict[str, Any]) -> list[str]:
    """The ways ``final`` disagrees with ``reference`` (empty when they agree)."""
    problems: list[str] = []
    ref_trades, trades = reference["trades"], final["trades"]
    problems += [f"trade {sid} was lost" for sid in sorted(ref_trades.keys() - trades.keys())]
    problems += [f"trade {sid} is not in the reference run" for sid in sorted(trades.keys() - ref_trades.keys())]
    for sid in sorted(ref_trades.keys() & trades.keys()):
        if ref_trades[sid] != trades[sid]:
            problems.append(f"trade {sid} differs in: {_differing_fields(ref_trades[sid], trades[sid])}")
    ref_log, log = reference["log"], final["log"]
    missing_log, extra_log = sorted(ref_log.keys() - log.keys()), sorted(log.keys() - ref_log.keys())
    if missing_log:
        problems.append(f"{_count(len(missing_log), 'log entry', 'log entries')} missing: {', '.join(missing_log[:3])}")
    if extra_log:
        problems.append(f"{_count(len(extra_log), 'log entry', 'log entries')} not in the reference: {extra_log[0]}")
    changed = [k for k in sorted(ref_log.keys() & log.keys()) if ref_log[k] != log[k]]
    if changed:
        problems.append(f"{_count(len(changed), 'log entry', 'log entries')} changed: {', '.join(changed[:3])}")
    opened = Counter(e["signalId"] for e in log.values() if e["topic"] == "signal.opened")
    problems += [f"signal {sid} was opened {n} times" for sid, n in sorted(opened.items()) if n > 1]
    for name in ("signal", "risk", "strategy", "partial"):
        if reference[name] != final[name]:
            problems.append(f"the {name} state differs from the reference")
    if final["candles"] is None:
        problems.append("the candle cache is missing candles it had accepted")
    elif reference["candles"] != final["candles"]:
        problems.append("the candle cache differs from the reference")
    return problems


# ------------------------------------------------------------------------------ child processes


class _Child:
    """A live process started with its configuration on stdin and read line by line."""

    def __init__(self, config: dict[str, Any], timeout_s: float) -> None:
        env = dict(os.environ)
        # The child must import this very persist_core, also when it runs from a source tree.
        package_parent = str(Path(persist_core.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child; close() ends it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "persist_core.demo.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        if self.proc.stdin is None or self.proc.stdout is None:  # pragma: no cover - PIPE always gives both
            raise DemoError("could not talk to the live process")
        self.proc.stdin.write(json.dumps(config).encode() + b"\n")
        self.proc.stdin.close()
        self._fd = self.proc.stdout.fileno()
        self._buffer = b""
        self._deadline = time.monotonic() + timeout_s
        self._timeout_s = timeout_s

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def lines(self) -> Iterator[str]:
        """Progress lines as they arrive, until the process closes its stdout."""
        while True:
            while b"\n" in self._buffer:
                line, _, self._buffer = self._buffer.partition(b"\n")
                yield line.decode()
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise DemoError(f"the live process (pid {self.pid}) did not finish within {self._timeout_s:.0f} s")
            ready, _, _ = select.select([self._fd], [], [], remaining)
            if ready:
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    return
                self._buffer += chunk

    def kill(self) -> None:
        """SIGKILL: no handler runs, no buffer is flushed, no ``finally`` block, no ``atexit``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def wait(self) -> int:
        """Wait for the exit status."""
        return self.proc.wait(timeout=max(1.0, self._deadline - time.monotonic()))

    def stderr_tail(self) -> str:
        """The last line the process wrote to stderr (the error of a traceback), passwords masked."""
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return mask_url(lines[-1]) if lines else ""

    def close(self) -> None:
        """Release the pipes and the stderr file."""
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


# ------------------------------------------------------------------------------------------ run


def _check_target(url: str) -> None:
    """Open the target once (fail fast if it is unusable) and check that it can hold the demo's state."""
    with setup(url, env=setup_env()) as persist:
        for name in DOMAINS_USED:
            backend = persist.backend("live", name)
            caps = backend.capabilities
            if not caps.survives_process_kill or not caps.shared_between_processes:
                raise ConfigurationError(
                    f"the demo kills the process that writes the state and resumes in a new one; {backend.url} "
                    "does not keep state across processes (pick a file, SQL or MongoDB URL)"
                )


def _trade_text(trade: dict[str, Any]) -> str:
    return (
        f"{trade['id']} {trade['position']} @ {trade['priceOpen']} "
        f"(TP {trade['priceTakeProfit']}, SL {trade['priceStopLoss']})"
    )


def _where(url: str, names: Names, signal_id: str, *, removed: bool) -> list[str]:
    """Where the state is and, unless the folder is removed at exit, how to look at it."""
    if scheme_of(url) != "file":
        tag = names.tag
        return [f"state:       {mask_url(url)}; this run's keys are tagged {tag} (sig-{tag}-*, log-{tag}-*)"]
    root = Path(path_of(url, "./dump")).absolute()
    state = f"state:       {root} (a file per record: <domain>/<key fields>/<item>.json)"
    if removed:  # a "look:" hint would name a folder that is gone by the time it is read
        return [state, "             (a temp folder, removed at exit; run with --keep to look at it)"]
    return [state, f"look:        cd {root} && ls storage/false && jq . storage/false/{signal_id}.json"]


def run_demo(options: DemoOptions) -> tuple[int, list[str]]:
    """Run the demo; return its exit status (0 if the resumed run agrees, else 1) and its account.

    The last line of the account is the verdict.

    Raises:
        ConfigurationError: the target cannot hold the demo's state across processes.
        PersistError: the target or the reference store cannot be used.
    """
    if os.name != "posix":
        raise ConfigurationError("the demo needs a POSIX system: it kills its live process with SIGKILL")
    started = time.monotonic()
    temp_root = None
    url = options.url
    if url is None:
        temp_root = tempfile.mkdtemp(prefix="backtest-persist-demo-")
        url = f"file:{temp_root}"
    lines: list[str] = []
    try:
        code = _run(options, url, started, lines)
    except DemoError as exc:
        code = 1
        lines.append(f"FAILED: {mask_url(str(exc))}")
    finally:
        if temp_root is not None and not options.keep:
            shutil.rmtree(temp_root, ignore_errors=True)
    return code, lines


def _run(options: DemoOptions, url: str, started: float, out: list[str]) -> int:
    """Run the four stages, appending the account to ``out``; return the exit status."""
    for target in (url, options.resume_url):
        if target is not None:
            _check_target(target)
    if options.reference_url == url:
        # The reference would commit every step first and the live run would find nothing left to do.
        raise ConfigurationError("the reference run needs a store of its own: --reference-url must differ from --url")
    names = Names(os.urandom(3).hex())
    market = Market(options.seed, options.candles)
    out.append(
        f"backtest-persist demo, seed {options.seed}: a moving-average-cross strategy trading {SYMBOL} "
        f"live on {options.candles} synthetic 1m candles"
    )

    # 1. The reference: the same strategy, uninterrupted, into a scratch store.
    clock = SimClock()
    with setup(options.reference_url, clock=clock, env=setup_env()) as persist:
        ref_strategy = LiveStrategy(persist, market, clock, names)
        ref_strategy.run(ref_strategy.recover().start)
        reference = snapshot(persist, names, market)
    events = ref_strategy.events
    levels = sum(1 for e in events if e.kind == "partial")
    out.append(
        f"1 reference  an uninterrupted run into {mask_url(options.reference_url)}: "
        f"{len(reference['trades'])} trades, {levels} partial-level steps, {len(reference['log'])} log entries"
    )

    # 2. The live run in a child process, killed inside the commit of a step while a trade is open.
    candidates = [(e, k) for e in events if e.kind != "open" for k in range(e.writes)]
    if not candidates:
        raise DemoError(f"seed {options.seed} makes no trade to interrupt; try another --seed")
    event, write_index = random.Random(options.seed).choice(candidates)
    config = {
        "url": url,
        "seed": options.seed,
        "tag": names.tag,
        "candles": options.candles,
        "pace_ms": options.pace_ms,
    }
    first = _Child(config, options.timeout_s)
    try:
        killed_on = None
        for line in first.lines():
            words = line.split()
            if words[:3] == ["op", str(event.step), str(write_index)]:
                first.kill()
                killed_on = words[3]
                break
        if killed_on is None:
            code = first.wait()
            raise DemoError(
                f"the live process ended (exit {code}) before step {event.step}: {first.stderr_tail() or 'no message'}"
            )
    finally:
        first.kill()
        first.close()
    trade = reference["trades"][event.signal_id]
    out.append(
        f"2 live run   pid {first.pid} on the target; SIGKILL at step {event.step} ({event.kind}), "
        f"before write {write_index + 1} of {event.writes} ({killed_on}) of its unit of work"
    )
    out.append(f"             open trade: {_trade_text(trade)}, opened at step {int(event.signal_id[-4:])}")
    if options.resume_url is not None:
        url = config["url"] = _moved(url, options.resume_url, out)

    # 3. The restart: recover from what the backend holds, then go on to the end.
    second = _Child(config, options.timeout_s)
    try:
        found: dict[str, Any] | None = None
        changes = 0
        done = False
        for line in second.lines():
            if line.startswith("found "):
                found = json.loads(line[len("found ") :])
            elif line.startswith("plan "):
                changes += 1
            elif line.startswith("done "):
                done = True
        code = second.wait()
        if code != 0 or not done or found is None:
            raise DemoError(f"the restarted process failed (exit {code}): {second.stderr_tail() or 'no message'}")
    finally:
        second.kill()
        second.close()
    out += _recovery_lines(second.pid, found, changes, event.step)

    # 4. The check: the persisted state after the crash and the restart against the reference.
    with setup(url, clock=SimClock(), env=setup_env()) as persist:
        final = snapshot(persist, names, market)
    problems = compare(reference, final)
    closed = [t for t in final["trades"].values() if t["status"] == "closed"]
    reasons = Counter(t["closeReason"] for t in closed)
    pnl = sum(t["pnl"] for t in closed)
    if problems:
        count = _count(len(problems), "problem", "problems")
        out.append(f"4 check      the final state DISAGREES with the reference ({count}):")
        out += [f"             - {p}" for p in problems[:8]]
    else:
        out.append(
            f"4 check      final state = reference: the same {len(final['trades'])} trades (ids, exits, PnL), "
            f"{len(final['log'])} log entries,"
        )
        out.append(
            f"             signal and risk slots, strategy record, partial levels, {len(final['candles'] or [])} "
            "cached candles"
        )
    summary = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(reasons.items()))
    out.append(f"trades:      {len(closed)} closed ({summary}), total PnL {pnl:+.2f} %")
    out += _where(url, names, event.signal_id, removed=options.url is None and not options.keep)
    elapsed = time.monotonic() - started
    if problems:
        out.append(f"FAILED: the resumed run lost or changed state ({elapsed:.1f} s)")
        return 1
    out.append(f"OK: killed mid-trade, resumed, no trade lost, no signal duplicated ({elapsed:.1f} s)")
    return 0


def _moved(url: str, resume_url: str, out: list[str]) -> str:
    """Copy the killed run's state from ``url`` to ``resume_url`` and verify it; return where to resume."""
    from persist_core.transfer import copy

    moved = copy(url, resume_url, env=setup_env())
    if not moved.ok:
        differ = ", ".join(check.domain for check in moved.checks if not check.ok)
        raise DemoError(f"the copy to {mask_url(resume_url)} did not verify ({differ} differ)")
    out.append(
        f"  copy       {moved.written} records from {mask_url(url)} to {mask_url(resume_url)}, verified "
        f"(counts and digests of {len(moved.checks)} domains)"
    )
    return resume_url


def _recovery_lines(pid: int, found: dict[str, Any], changes: int, killed_step: int) -> list[str]:
    lines = []
    cursor = found["cursor"]
    if cursor is None:
        lines.append(f"3 restart    pid {pid} found no strategy state; started from the beginning")
    else:
        lines.append(
            f"3 restart    pid {pid} found step {cursor} ({found['event']}) committed in the strategy slot, "
            "the last whole unit of work"
        )
    if cursor is None or cursor < killed_step:
        lines.append(
            f"             step {killed_step} is not committed (the kill cut its unit short): "
            "the restart decides it again"
        )
    else:
        lines.append(f"             the kill came after step {killed_step}'s unit was stored: it is whole")
    trade = found["open_trade"]
    if trade is None:
        lines.append("             no open trade in the signal slot")
    else:
        profit = found["levels"].get("profitLevels", [])
        loss = found["levels"].get("lossLevels", [])
        lines.append(f"             open trade in the signal slot: {_trade_text(trade)}")
        lines.append(f"             partial levels reached so far: profit {profit}, loss {loss}")
    lines.append(
        f"             {found['trades']} trades already in storage; resumed at step {found['start']} "
        f"and made {changes} more state changes"
    )
    return lines
