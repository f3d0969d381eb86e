"""Where the test servers are, and what a test does when one cannot be reached.

URLs come from the environment variables that ``scripts/services.sh env`` prints. With ``CI=true`` an
unreachable server fails the test (CI must never hide a missing service behind a skip); elsewhere the
test is skipped with a message that names the script.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

DEFAULTS = {
    "PERSIST_TEST_POSTGRES_URL": "postgresql+psycopg://persist:persist-test-pw@127.0.0.1:5432/persist_test",
    "PERSIST_TEST_POSTGRES_APP_URL": "postgresql+psycopg://persist_app:persist-app-pw@127.0.0.1:5432/persist_test",
    "PERSIST_TEST_MYSQL_URL": "mysql+pymysql://persist:persist-test-pw@127.0.0.1:3306/persist_test",
    "PERSIST_TEST_MYSQL_APP_URL": "mysql+pymysql://persist_app:persist-app-pw@127.0.0.1:3306/persist_test",
    "PERSIST_TEST_MONGO_URL": "mongodb://127.0.0.1:27017/persist_test",
    "PERSIST_TEST_REDIS_URL": "redis://127.0.0.1:6379/0",
}


def in_ci() -> bool:
    """True when running under CI (``CI=true``), where missing services fail instead of skipping."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_url(name: str) -> str:
    """The URL of a test server, from the environment or the services script's default."""
    return os.environ.get(name) or DEFAULTS[name]


def require(name: str, probe: Callable[[str], object]) -> str:
    """Return the URL of ``name`` if ``probe(url)`` succeeds; otherwise fail in CI, skip elsewhere."""
    url = service_url(name)
    try:
        probe(url)
    except Exception as exc:
        message = f"{name} unreachable ({type(exc).__name__}: {exc}); start the servers with scripts/services.sh"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return url


@contextlib.contextmanager
def read_only_mount(populate: Callable[[Path], object] = lambda path: None) -> Iterator[Path]:
    """A real read-only file system: a tmpfs filled by ``populate``, then remounted read-only.

    Tests run as root, which ignores file modes; a read-only mount binds root too. Skips when the process
    may not mount (not root, no CAP_SYS_ADMIN), failing instead in CI.
    """
    folder = Path(tempfile.mkdtemp(prefix="persist-ro-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        folder.rmdir()
        message = f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    try:
        populate(folder)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
        folder.rmdir()
