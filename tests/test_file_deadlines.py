"""The file backend's deadline (issue 10): a write never waits without bound for another writer's lock."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from persist_core import BackendTimeoutError, ConfigurationError, setup
from persist_core.backends.file import FileBackend
from persist_core.deadlines import DEFAULT_TIMEOUT_SECONDS


def test_a_held_folder_lock_times_out_within_the_deadline_and_the_backend_recovers(tmp_path: Path) -> None:
    with setup(f"file:{tmp_path}/dump?timeout=0.5", env={}) as persist:
        bucket = persist.live.measure(bucket="b")
        bucket.write("k", {"v": 1})
        folder = os.open(tmp_path / "dump" / "measure" / "b", os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(folder, fcntl.LOCK_EX)  # another writer, stopped while holding the lock
        try:
            started = time.monotonic()
            with pytest.raises(BackendTimeoutError, match=r"waited 0.5 s .* folder lock") as caught:
                bucket.write("k", {"v": 2})
            elapsed = time.monotonic() - started
            print(f"\nfile: held folder lock -> BackendTimeoutError after {elapsed:.2f} s (timeout 0.5 s)")
            assert 0.5 <= elapsed < 1.5
            assert isinstance(caught.value, TimeoutError)
            with pytest.raises(BackendTimeoutError):
                bucket.remove("k")
            assert bucket.read("k") == {"v": 1}  # nothing half-written
        finally:
            os.close(folder)
        bucket.write("k", {"v": 3})  # the same backend goes on once the lock is free
        assert bucket.read("k") == {"v": 3}


def test_the_timeout_option(tmp_path: Path) -> None:
    assert FileBackend.from_url(f"file:{tmp_path}").timeout == DEFAULT_TIMEOUT_SECONDS == 5.0
    assert FileBackend.from_url(f"file:{tmp_path}?timeout=2").timeout == 2.0
    assert FileBackend.from_url(f"file:{tmp_path}", timeout=0.25).timeout == 0.25
    for bad in ("0", "-1", "abc", "nan", "inf"):
        with pytest.raises(ConfigurationError, match="bad option timeout"):
            FileBackend.from_url(f"file:{tmp_path}?timeout={bad}")
    with setup(f"file:{tmp_path}", options={"file": {"timeout": 1.5}}, env={}) as persist:
        backend = persist.backend("live", "signal")
        assert isinstance(backend, FileBackend)
        assert backend.timeout == 1.5
