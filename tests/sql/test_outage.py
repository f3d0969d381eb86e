"""A PostgreSQL server that stops and starts again in the middle of a run of writes.

The server is a private cluster (``initdb`` into a temporary folder, its own free port) so that stopping it
disturbs no other test. Binaries: ``PERSIST_TEST_PG_BINDIR``, else the newest ``/usr/lib/postgresql/*/bin``
(Debian's layout; 15 on Debian 12); ``initdb`` refuses root, so the cluster then runs as ``postgres``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from persist_core.backend import Record
from persist_core.domains import DOMAINS
from persist_core.errors import BackendUnavailableError
from persist_sql import SqlBackend
from tests.services import in_ci

SIGNAL = DOMAINS["signal"]
LOG = DOMAINS["log"]
PASSWORD = "outage-secret-pw"


class PrivateCluster:
    """A PostgreSQL cluster of one test: started, stopped and started again by its own ``pg_ctl``."""

    def __init__(self, bindir: Path, user: str) -> None:
        self.bindir = bindir
        self.user = user
        self.root = Path(tempfile.mkdtemp(prefix="persist-pg-"))  # not under pytest's 0700 tmp folders
        self.data = self.root / "data"
        self.port = _free_port()
        shutil.chown(self.root, user=user)

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout, cwd=self.root)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        # "fast": roll back open transactions and close every client connection, as a restart does.
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self) -> str:
        # trust authentication ignores the password; it is there to prove it never shows in messages.
        return f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _bindir() -> Path:
    configured = os.environ.get("PERSIST_TEST_PG_BINDIR")
    if configured:
        return Path(configured)
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parts[-3].isdigit()]
    installed = sorted(found, key=lambda p: int(p.parts[-3]))
    return installed[-1].parent if installed else Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    bindir = _bindir()
    try:
        user = pwd.getpwnam("postgres").pw_name if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = ""
    if not (bindir / "initdb").exists() or not user:
        message = f"PostgreSQL binaries not found in {bindir} (PERSIST_TEST_PG_BINDIR); run scripts/services.sh"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    server = PrivateCluster(bindir, user)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.mark.slow
def test_restart_in_the_middle_of_writes(cluster: PrivateCluster) -> None:
    backend = SqlBackend(cluster.url())
    backend.open()
    acknowledged: list[int] = []  # sequence numbers whose writes returned
    during_outage: list[BaseException] = []
    unexpected: list[BaseException] = []
    phase = {"name": "before"}
    stop = threading.Event()

    def writer() -> None:
        seq = 0
        while not stop.is_set():
            try:
                backend.insert_many(LOG, [((f"entry-{seq:06d}",), Record(f'{{"seq":{seq}}}'))])
                backend.put(SIGNAL, ("BTC/USDT", "outage", "x"), Record(f'{{"seq":{seq}}}'))
                acknowledged.append(seq)
            except BackendUnavailableError as exc:
                if phase["name"] == "after":
                    unexpected.append(exc)
                else:
                    during_outage.append(exc)
                time.sleep(0.01)
            except BaseException as exc:
                unexpected.append(exc)
            seq += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(1.0)
        phase["name"] = "outage"
        cluster.stop()
        time.sleep(1.0)  # the writer keeps calling while the server is down
        cluster.start()
        time.sleep(0.5)  # the first calls after the start may still meet the old connections
        phase["name"] = "after"
        resumed = len(acknowledged)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(30)

    assert unexpected == []
    assert during_outage, "no call failed while the server was down"
    assert len(acknowledged) > resumed, "no write succeeded after the server came back"
    for exc in during_outage:
        assert "postgresql+psycopg://postgres:***@127.0.0.1" in str(exc)
        assert PASSWORD not in str(exc)

    # Nothing acknowledged was lost: every acknowledged log entry is there, and the slot holds the last
    # acknowledged value (or a newer one whose acknowledgement the outage swallowed).
    stored = {item for item, _ in backend.scan(LOG, ())}
    assert {f"entry-{seq:06d}" for seq in acknowledged} <= stored
    slot = backend.get(SIGNAL, ("BTC/USDT", "outage", "x"))
    assert slot is not None
    assert int(slot.payload.split(":")[1].rstrip("}")) >= acknowledged[-1]
    backend.close()


def test_calls_while_the_server_is_down_fail_fast_and_name_the_url(cluster: PrivateCluster) -> None:
    with SqlBackend(cluster.url()) as backend:
        backend.put(SIGNAL, ("S", "s", "x"), Record("{}"))
        cluster.stop()
        started = time.monotonic()
        for _ in range(3):
            with pytest.raises(BackendUnavailableError) as info:
                backend.get(SIGNAL, ("S", "s", "x"))
            assert f"127.0.0.1:{cluster.port}" in str(info.value)
            assert PASSWORD not in str(info.value)
        assert time.monotonic() - started < 5
        cluster.start()
        assert backend.get(SIGNAL, ("S", "s", "x")) == Record("{}")


def test_opening_while_the_server_is_down(cluster: PrivateCluster) -> None:
    cluster.stop()
    with pytest.raises(BackendUnavailableError, match=r"postgres:\*\*\*@"):
        SqlBackend(cluster.url()).open()
    cluster.start()
    with SqlBackend(cluster.url()) as backend:
        backend.put(SIGNAL, ("S", "s", "x"), Record("{}"))
