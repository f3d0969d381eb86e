"""Where the test servers are, and what a test does when one cannot be reached.

URLs come from the environment variables that ``scripts/services.sh env`` prints. With ``CI=true`` an
unreachable server fails the test (CI must never hide a missing service behind a skip); elsewhere the
test is skipped with a message that names the script.
"""

from __future__ import annotations

import os
from collections.abc import Callable

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
