"""The file backend's temp file names (issue 13.3): a per-process token and a counter, no system call each."""

from __future__ import annotations

import os
from pathlib import Path

from persist_core.backends import file as file_backend
from persist_core.config import resolve_routes
from persist_core.persist import Persist


def test_a_forked_child_draws_its_own_token() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its token and leave without running the parent's cleanup
        os.write(write_end, file_backend._temp_names.token.encode())
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    child = os.read(read_end, 64).decode()
    os.close(read_end)
    assert status == 0
    assert len(child) == len(file_backend._temp_names.token) == 12
    assert child != file_backend._temp_names.token


def test_temp_names_never_repeat_in_a_process(tmp_path: Path) -> None:
    names = {f"{file_backend._temp_names.token}{next(file_backend._temp_names.counter):x}" for _ in range(1000)}
    assert len(names) == 1000
    persist = Persist(resolve_routes(f"file:{tmp_path}", env={}))
    try:
        store = persist.live.signal(symbol="BTC/USDT", strategy_name="s", exchange_name="x")
        for n in range(20):
            store.write({"n": n})
        assert store.read() == {"n": 19}
    finally:
        persist.close()
    assert not [p for p in tmp_path.rglob(f"{file_backend.TEMP_PREFIX}*") if p.is_file()]
