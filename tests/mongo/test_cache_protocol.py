"""The value cache's scripts, step by step, under every interleaving Hypothesis draws (real Redis, model MongoDB).

The race test (test_stale_reads.py) meets the dangerous interleavings only by luck; here two writers and two
readers advance one step at a time in an order Hypothesis chooses, with flushes and evictions in between, and
every hit is checked: never older than the newest write acknowledged before the read began. MongoDB is a
model (the current version of one record); Redis is the shared test server, the flush deleting this test's
keys only. Writers are serialised by their markers, as the backend's writes are.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st

from persist_core.backend import Record
from persist_mongo._cache import ValueCache, decode_entry, encode_entry, stamp_key
from persist_mongo._steps import Steps, run
from tests.mongo import servers


@pytest.fixture(scope="module")
def cache() -> Iterator[ValueCache]:
    value_cache = ValueCache(servers.shared_redis_url(), ttl=60, lease_ms=60_000)
    yield value_cache
    value_cache.close()


@dataclass
class _Writer:
    step: int = 0  # 0 idle, 1 marked, 2 read MongoDB (its version, non-atomic model only), 3 written to MongoDB
    token: str = ""
    seen: int = 0  # the version its update read (FerretDB: a SELECT, then an UPDATE of the whole document)
    version: int = 0
    seq: int = 0  # the update's place in MongoDB's order of updates


@dataclass
class _Owner:
    """The live owner's write: its ``begin`` travels with the update and lands at any point before the commit."""

    busy: bool = False
    token: str = ""
    begun: int | None = None  # the begin's reply once it landed
    landed: bool = False
    seen: int | None = None
    version: int = 0
    seq: int = 0  # 0 until MongoDB applied the update


@dataclass
class _Reader:
    step: int = 0  # 0 idle, 1 missed, 2 read MongoDB
    stamp: str | None = None
    version: int = 0
    seq: int = 0


class _World:
    """One record in MongoDB (a model) and in Redis (the real scripts), and the writes acknowledged so far.

    ``atomic``: an update reads and writes the version in one step (MongoDB); else in two (FerretDB), so that two
    unserialised writers can give one version to two updates. A hit is stale if its copy's update comes before,
    in MongoDB's order of updates, the last of the updates acknowledged before the read began.
    """

    def __init__(self, cache: ValueCache, namespace: str, *, atomic: bool = True) -> None:
        self.cache = cache
        self.face = cache.face
        self.key = f"{namespace}:state_cache:sk"
        self.namespace = namespace
        self.atomic = atomic
        self.mongo = 1  # the record's version in MongoDB
        self.mongo_seq = 1  # the update MongoDB holds
        self.versions = {1: 1}  # update -> the version it wrote
        self.acked = 1  # the last (in MongoDB's order) of the updates acknowledged
        self.writers = [_Writer(), _Writer()]
        self.owner = _Owner()
        self.readers = [_Reader(), _Reader()]

    def _update(self, seen: int) -> tuple[int, int]:
        seq = max(self.versions) + 1
        self.mongo, self.mongo_seq = seen + 1, seq
        self.versions[seq] = seen + 1
        return seen + 1, seq

    def _ack(self, seq: int) -> None:
        self.acked = max(self.acked, seq)

    def advance_writer(self, writer: _Writer) -> None:
        if writer.step == 0:
            writer.token = uuid.uuid4().hex
            if run(self.cache.begin(self.face, self.key, writer.token)) == 0:
                writer.step = 1  # else another writer's marker stands: try again later
        elif writer.step == 1:
            writer.seen, writer.step = self.mongo, 2
            if self.atomic:  # find_one_and_update: $inc version, returned AFTER
                writer.version, writer.seq = self._update(writer.seen)
                writer.step = 3
        elif writer.step == 2:
            writer.version, writer.seq = self._update(writer.seen)
            writer.step = 3
        else:
            run(self.cache.commit(self.face, self.key, writer.token, writer.version, _record(writer.seq)))
            self._ack(writer.seq)
            writer.step = 0

    def advance_owner(self, begin_first: bool) -> None:
        """One step of the owner's write: start it; land its begin (``begin_first``) or advance its update;
        once both are done, commit (or drop the copy after a race)."""
        owner = self.owner
        if not owner.busy:
            self.owner = _Owner(busy=True, token=uuid.uuid4().hex)
        elif not owner.landed and (begin_first or owner.seq):
            owner.begun = run(self._land(owner.token))
            owner.landed = True
        elif not owner.seq:
            if owner.seen is None:
                owner.seen = self.mongo
                if not self.atomic:
                    return
            owner.version, owner.seq = self._update(owner.seen)
        else:
            run(self.cache.settle(self.face, self.key, owner.token, owner.begun, owner.version, _record(owner.seq)))
            self._ack(owner.seq)
            self.owner = _Owner()

    def _land(self, token: str) -> Steps[int | None]:
        sent = yield from self.cache.send_begin(self.face, self.key, token)
        assert sent is not None
        return (yield from self.cache.begun(self.face, sent, self.key, token))

    def advance_reader(self, reader: _Reader) -> None:
        if reader.step == 0:
            hit, reader.stamp = run(self.cache.read(self.face, self.key))
            if hit is not None:
                record, version = hit
                seq = json.loads(record.payload)["seq"]
                assert record == _record(seq) and self.versions[seq] == version
                assert seq >= self.acked, f"stale hit: update {seq} after update {self.acked} was acknowledged"
            else:
                reader.step = 1
        elif reader.step == 1:
            reader.version, reader.seq, reader.step = self.mongo, self.mongo_seq, 2
        else:
            if reader.stamp is not None:
                run(self.cache.fill(self.face, self.key, reader.stamp, reader.version, _record(reader.seq)))
            reader.step = 0

    def advance_reader_or_redis(self, step: int) -> None:
        """Steps 2 and 3: a reader's; 4: FLUSHALL, as far as this test's keys go; 5: the entry alone evicted."""
        if step < 4:
            self.advance_reader(self.readers[step - 2])
        elif step == 4:
            self.flush(self.face.client)
        else:
            self.face.client.delete(self.key)

    def finish_readers(self) -> None:
        for reader in self.readers:  # finish every reader, then read once more
            while reader.step:
                self.advance_reader(reader)
        self.advance_reader(self.readers[0])

    def flush(self, client: redis.Redis) -> None:
        client.delete(self.key, stamp_key(self.key))  # every key of this test's namespace


def _play(
    world: _World,
    steps: list[int],
    act: Callable[[_World, int], None],
    end: Callable[[_World], None] = lambda world: None,
) -> None:
    """Run ``steps`` through ``act``, then ``end``, finish the readers and read once more; Redis must not fail."""
    try:
        for step in steps:
            act(world, step)
        end(world)
        world.finish_readers()
        assert world.cache.stats().errors == 0
    finally:
        world.flush(world.face.client)


def _record(seq: int) -> Record:
    return Record(f'{{"seq":{seq},"pipe":"a|b"}}', seq * 10, seq % 2 == 0)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=60))
# Found by this test in earlier designs (0/1: a writer's step, 2/3: a reader's, 4: flush): a commit that stored
# over nothing after a flush; one that stored over another writer's marker; one that ignored the version an
# overlapping writer's commit had put on its marker (its floor).
@example(steps=[0, 0, 4, 1, 1, 1, 4, 0, 2])
@example(steps=[0, 0, 4, 1, 1, 1, 1, 0, 2])
@example(steps=[0, 4, 1, 1, 0, 0, 1, 2])
def test_no_interleaving_of_writers_readers_flushes_and_evictions_serves_an_older_version(
    cache: ValueCache, steps: list[int]
) -> None:
    def act(world: _World, step: int) -> None:
        if step < 2:
            world.advance_writer(world.writers[step])
        else:
            world.advance_reader_or_redis(step)

    _play(_World(cache, f"proto{uuid.uuid4().hex[:12]}"), steps, act)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=60))
# 0/1: the owner's step (0 lands its begin first if it can), 2/3: a reader's, 4: flush, 5: evict. The owner's
# writes are its storage's only writes (CONTRACTS.md 3.7), one at a time per key: its begin may land before or
# after its update, with fills, flushes and evictions around it.
def test_the_owners_begin_may_land_anywhere_before_its_commit(cache: ValueCache, steps: list[int]) -> None:
    def act(world: _World, step: int) -> None:
        if step < 2:
            world.advance_owner(begin_first=step == 0)
        else:
            world.advance_reader_or_redis(step)

    _play(_World(cache, f"proto{uuid.uuid4().hex[:12]}"), steps, act)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=60))
# 0/1: the owner's step, 2: a writer of another process that does not own the storage (it waits for markers
# before its update), 3/4/5: readers (3 and 4 the same one). MongoDB updates in two steps, as FerretDB does, so
# the owner and the other writer can give one version to two updates: then neither may store its copy. The
# examples are the orders it found against mutants: a begin that does not take the replaced copy's version as
# its floor; one that leaves the other writer's marker as it is (or behaves as an ordinary begin); an owner
# write that stores its copy after a race.
@example(steps=[0, 1, 1, 2, 2, 2, 2])
@example(steps=[0, 2, 2, 0, 0, 2, 0])
@example(steps=[0, 0, 0, 0, 0, 0, 2, 2, 2, 0, 2, 2, 2])
def test_an_owner_racing_a_writer_that_does_not_own_the_storage_never_leaves_the_wrong_copy(
    cache: ValueCache, steps: list[int]
) -> None:
    def act(world: _World, step: int) -> None:
        if step < 2:
            world.advance_owner(begin_first=step == 0)
        elif step == 2:
            world.advance_writer(world.writers[0])
        else:
            world.advance_reader(world.readers[0 if step < 5 else 1])

    def end(world: _World) -> None:  # let both writes end, then read
        while world.owner.busy or world.writers[0].step:
            if world.owner.busy:
                world.advance_owner(begin_first=False)
            if world.writers[0].step:
                world.advance_writer(world.writers[0])

    _play(_World(cache, f"proto{uuid.uuid4().hex[:12]}", atomic=False), steps, act, end)


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
