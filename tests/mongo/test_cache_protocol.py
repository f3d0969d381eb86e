"""The value cache's scripts, step by step, under every interleaving Hypothesis draws (real Redis, model MongoDB).

The race test (test_stale_reads.py) meets the dangerous interleavings only by luck; here two writers and two
readers advance one step at a time in an order Hypothesis chooses, with flushes and evictions in between, and
every hit is checked: never older than the newest write acknowledged before the read began. MongoDB is a
model (the current version of one record); Redis is the shared test server, the flush deleting this test's
keys only. Writers are serialised by their markers, as the backend's writes are. A commit may fail (Redis
answers nothing): the write is acknowledged all the same, as the backend does, and its marker stays until it
expires (an eviction here).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st

from persist_core.backend import Record
from persist_mongo._cache import ValueCache, decode_entry, encode_entry, stamp_key
from persist_mongo._steps import run
from tests.mongo import servers


@pytest.fixture(scope="module")
def cache() -> Iterator[ValueCache]:
    value_cache = ValueCache(servers.shared_redis_url(), ttl=60, lease_ms=60_000)
    yield value_cache
    value_cache.close()


@dataclass
class _Writer:
    step: int = 0  # 0 idle, 1 marked, 2 written to MongoDB
    token: str = ""
    version: int = 0


@dataclass
class _Reader:
    step: int = 0  # 0 idle, 1 missed, 2 read MongoDB
    stamp: str | None = None
    version: int = 0


class _World:
    def __init__(self, cache: ValueCache, namespace: str) -> None:
        self.cache = cache
        self.face = cache.face
        self.key = f"{namespace}:state_cache:sk"
        self.namespace = namespace
        self.mongo = 1  # the record's version in MongoDB
        self.acked = 1  # the newest version acknowledged
        self.writers = [_Writer(), _Writer()]
        self.readers = [_Reader(), _Reader()]

    def advance_writer(self, writer: _Writer) -> None:
        if writer.step == 0:
            writer.token = uuid.uuid4().hex
            if run(self.cache.begin(self.face, self.key, writer.token)) == 0:
                writer.step = 1  # else another writer's marker stands: try again later
        elif writer.step == 1:
            self.mongo += 1  # find_one_and_update: $inc version, returned AFTER
            writer.version, writer.step = self.mongo, 2
        else:
            run(self.cache.commit(self.face, self.key, writer.token, writer.version, _record(writer.version)))
            self.acked = max(self.acked, writer.version)
            writer.step = 0

    def fail_commit(self, writer: _Writer) -> None:
        """The commit never reaches Redis; the write is acknowledged and its marker stays."""
        if writer.step == 2:
            self.acked = max(self.acked, writer.version)
            writer.step = 0

    def advance_reader(self, reader: _Reader) -> None:
        if reader.step == 0:
            hit, reader.stamp = run(self.cache.read(self.face, self.key))
            if hit is not None:
                assert hit[0] == _record(hit[1])
                assert hit[1] >= self.acked, f"stale hit: version {hit[1]} after {self.acked} was acknowledged"
            else:
                reader.step = 1
        elif reader.step == 1:
            reader.version, reader.step = self.mongo, 2
        else:
            if reader.stamp is not None:
                run(self.cache.fill(self.face, self.key, reader.stamp, reader.version, _record(reader.version)))
            reader.step = 0

    def flush(self, client: redis.Redis) -> None:
        client.delete(self.key, stamp_key(self.key))  # every key of this test's namespace


def _record(version: int) -> Record:
    return Record(f'{{"v":{version},"pipe":"a|b"}}', version * 10, version % 2 == 0)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=1, max_size=60))
# Found by this test in earlier designs (0/1: a writer's step, 2/3: a reader's, 4: flush, 5: eviction, 6/7: a
# writer's commit fails): a commit that stored
# over nothing after a flush; one that stored over another writer's marker; one that ignored the version an
# overlapping writer's commit had put on its marker (its floor).
@example(steps=[0, 0, 4, 1, 1, 1, 4, 0, 2])
@example(steps=[0, 0, 4, 1, 1, 1, 1, 0, 2])
@example(steps=[0, 4, 1, 1, 0, 0, 1, 2])
def test_no_interleaving_of_writers_readers_flushes_and_evictions_serves_an_older_version(
    cache: ValueCache, steps: list[int]
) -> None:
    world = _World(cache, f"proto{uuid.uuid4().hex[:12]}")
    client = cache.face.client
    try:
        for step in steps:
            if step < 2:
                world.advance_writer(world.writers[step])
            elif step < 4:
                world.advance_reader(world.readers[step - 2])
            elif step == 4:
                world.flush(client)  # FLUSHALL, as far as this test's keys go
            elif step == 5:
                client.delete(world.key)  # the entry alone: evicted or expired
            else:
                world.fail_commit(world.writers[step - 6])
        for reader in world.readers:  # finish every reader, then read once more
            while reader.step:
                world.advance_reader(reader)
        world.advance_reader(world.readers[0])
        assert cache.stats().errors == 0
    finally:
        world.flush(client)


@given(
    st.integers(0, 2**53),
    st.text(),
    st.none() | st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
)
def test_an_entry_decodes_to_the_record_and_version_it_encodes(
    version: int, payload: str, when: int | None, removed: bool
) -> None:
    record = Record(payload.encode("utf-8", "replace").decode("utf-8"), when, removed)
    assert decode_entry(encode_entry(version, record)) == (record, version)
