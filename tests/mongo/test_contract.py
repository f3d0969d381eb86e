"""The contract kit against the Mongo backend on FerretDB: once with the Redis value cache, once with Redis down."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import pytest

from persist_core.async_backend import AsyncBackend
from persist_core.backend import Backend
from persist_core.testing import BackendContractTests
from persist_mongo import AsyncMongoBackend, MongoBackend
from tests.mongo import servers
from tests.native_face import NativeAsyncFace


class TestMongoWithRedis(BackendContractTests):
    """FerretDB plus the shared Redis: reads go through the id cache."""

    declared_capabilities = MongoBackend.capabilities

    @pytest.fixture
    def backend_factory(self, class_database: servers.ScratchDatabase) -> Callable[[], Backend]:
        redis_url = servers.shared_redis_url()
        class_database.wipe(redis_url)
        return functools.partial(MongoBackend.from_url, class_database.url, redis_url=redis_url)


@pytest.fixture(scope="module")
def closed_redis_port() -> Iterator[int]:
    port = servers.ClosedPort()
    yield port.port
    port.close()


class TestMongoWithRedisDown(BackendContractTests):
    """FerretDB with a Redis URL whose port refuses connections: every operation runs on MongoDB alone."""

    declared_capabilities = MongoBackend.capabilities

    @pytest.fixture
    def backend_factory(self, class_database: servers.ScratchDatabase, closed_redis_port: int) -> Callable[[], Backend]:
        class_database.wipe(None)
        return functools.partial(
            MongoBackend.from_url, class_database.url, redis_url=f"redis://127.0.0.1:{closed_redis_port}/0"
        )


class TestMongoAsyncFace(NativeAsyncFace, TestMongoWithRedis):
    """Every store clause again on the asyncio face, through the native AsyncMongoBackend (AsyncMongoClient and
    redis.asyncio), sharing the sync backend's settings, value cache and indexes."""

    @classmethod
    def native_for(cls, backend: Backend) -> AsyncBackend:
        if not isinstance(backend, MongoBackend):  # pragma: no cover - the fixture builds MongoBackends
            raise TypeError(f"expected a MongoBackend, got {backend!r}")
        return AsyncMongoBackend(backend.url, sync=backend)
