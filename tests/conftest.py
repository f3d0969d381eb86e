import os
from typing import Any

from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]

# This project's CI (scripts/test.sh: --hypothesis-profile=ci) runs Hypothesis's derandomized ci profile with
# fewer examples, to stay well inside its time budget; `--hypothesis-profile=thorough` is the deep run.
settings.register_profile(
    "ci",
    parent=settings.get_profile("ci"),
    max_examples=20,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Leave the kit classes marked ``every_face_only`` (the asyncio face of Mongo) to ``PERSIST_TEST_ALL_FACES=1``
    (docs/decisions.md).

    Through the thread pool, the asyncio face runs the same async stores and the same ``ThreadedAsyncBackend``
    over every sync backend; CI checks it over memory, file and SQLite, and the native async backends of
    PostgreSQL and MariaDB, while Mongo's sync face is checked in full.
    """
    if os.environ.get("PERSIST_TEST_ALL_FACES", "") in ("1", "true", "yes"):
        return
    kept, dropped = [], []
    for item in items:
        cls = getattr(item, "cls", None)
        (dropped if getattr(cls, "every_face_only", False) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
