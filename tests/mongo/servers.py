"""Test servers of the Mongo backend: the shared FerretDB and Redis, and private ones tests may kill.

Private servers listen on a free 127.0.0.1 port, keep their data in a temporary folder, and are stopped by
their own PID, never by name. FerretDB always runs with ``--telemetry=disable``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pymongo
import redis

from persist_core.domains import DOMAINS
from persist_mongo._leases import LEASE_COLLECTION
from persist_mongo._units import JOURNAL_COLLECTION
from tests.services import require

MONGO = "PERSIST_TEST_MONGO_URL"
REDIS = "PERSIST_TEST_REDIS_URL"


def probe_mongo(url: str) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url, serverSelectionTimeoutMS=2000)
    try:
        client.admin.command("ping")
    finally:
        client.close()


def probe_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def shared_mongo_url() -> str:
    """The shared FerretDB's URL (skip, or fail under CI, if it does not answer)."""
    return require(MONGO, probe_mongo)


def shared_redis_url() -> str:
    """The shared Redis's URL (skip, or fail under CI, if it does not answer)."""
    return require(REDIS, probe_redis)


def with_database(url: str, database: str, **query: str) -> str:
    """``url`` naming ``database`` instead of its own, with ``query`` options added."""
    parts = urlsplit(url)
    options = "&".join(f"{k}={v}" for k, v in query.items())
    merged = "&".join(q for q in (parts.query, options) if q)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", merged, ""))


def unique_database(label: str) -> str:
    """A database name no other test run uses (several runs may share one FerretDB)."""
    return f"pt_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}"[:63]


class ScratchDatabase:
    """A database of one test class on a MongoDB server, emptied between tests and dropped at the end."""

    def __init__(self, server_url: str, label: str) -> None:
        self.server_url = server_url
        self.name = unique_database(label)
        self.url = with_database(server_url, self.name)
        self._client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            server_url, serverSelectionTimeoutMS=5000
        )

    def wipe(self, redis_url: str | None) -> None:
        """Empty the 16 collections, the leases and the unit journal (indexes stay), delete the database's Redis keys.

        Deleting documents is much faster than dropping the database on FerretDB, where creating a
        collection and its index costs a PostgreSQL table and index.
        """
        db = self._client[self.name]
        for spec in DOMAINS.values():
            db[spec.collection_name].delete_many({})
        db[LEASE_COLLECTION].delete_many({})
        db[JOURNAL_COLLECTION].delete_many({})
        if redis_url is not None:
            delete_redis_namespace(redis_url, self.name)

    def drop(self) -> None:
        try:
            self._client.drop_database(self.name)
        finally:
            self._client.close()


def delete_redis_namespace(redis_url: str, database: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{database}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    except redis.ConnectionError:
        pass  # a Redis that is down holds nothing this test can see
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ClosedPort:
    """A 127.0.0.1 port that refuses connections for as long as this object holds it (bound, not listening)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()


def _wait(check: Callable[[], object], what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except Exception as exc:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}") from exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer within {timeout}s: {log.read_text()[-2000:]}") from exc
            time.sleep(0.1)


class PrivateServer:
    """A server process of our own, restartable on the same port and data folder."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / f"{name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def probe(self) -> None:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, cwd=self.folder)
        _wait(self.probe, self.name, self.proc, self.log, timeout)

    def kill(self) -> None:
        """SIGKILL by our own PID and reap the process."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM by PID (SIGKILL after 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None


def _binary(env: str, fallback: str) -> str | None:
    path = os.environ.get(env) or shutil.which(fallback)
    if path is None and fallback == "ferretdb":
        gopath = Path(os.environ.get("GOPATH", Path.home() / "go"))
        candidate = gopath / "bin" / "ferretdb"
        path = str(candidate) if candidate.exists() else None
    return path


def ferretdb_binary() -> str | None:
    return _binary("PERSIST_TEST_FERRETDB_BIN", "ferretdb")


def redis_binary() -> str | None:
    return _binary("PERSIST_TEST_REDIS_SERVER_BIN", "redis-server")


class PrivateFerretDB(PrivateServer):
    """FerretDB v1 with the SQLite handler, data under ``folder``; telemetry disabled, no debug listener."""

    def __init__(self, binary: str, folder: Path) -> None:
        super().__init__("ferretdb", folder)
        self.binary = binary

    def command(self) -> list[str]:
        return [
            self.binary,
            "--handler=sqlite",
            f"--sqlite-url=file:{self.folder}/",
            f"--listen-addr=127.0.0.1:{self.port}",
            "--debug-addr=-",
            "--telemetry=disable",
            f"--state-dir={self.folder}",
            "--log-level=warn",
        ]

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def probe(self) -> None:
        probe_mongo(self.url)


class PrivateRedis(PrivateServer):
    """redis-server without persistence: a restart comes back empty, like a flushed cache."""

    def __init__(self, binary: str, folder: Path) -> None:
        super().__init__("redis", folder)
        self.binary = binary

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.folder),
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def probe(self) -> None:
        probe_redis(self.url)
