"""Which single-document write forms are atomic on a MongoDB-compatible server? Raw pymongo races.

    python3 scripts/ferretdb_atomicity.py --seconds 5 [--url mongodb://127.0.0.1:27017/atomicity]

Each case runs two threads against one document of a scratch collection for ``--seconds`` and prints how
many updates were acknowledged and how many of them the server kept (or, for a remover racing a writer,
how often the document held an older payload than the last acknowledged write). On MongoDB every row is
0 lost; on FerretDB 1.24 the read-modify-write forms lose updates (docs/mongo.md, "Atomicity on FerretDB").
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import Any

from bson.objectid import ObjectId
from pymongo import MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

Coll = Collection[dict[str, Any]]
KEY = {"bucket": "race", "entryKey": "k"}


def run_pair(seconds: float, first: Callable[[], None], second: Callable[[], None]) -> None:
    """Run ``first`` and ``second`` in a loop each, in two threads, for ``seconds``."""
    stop = time.monotonic() + seconds
    errors: list[BaseException] = []

    def loop(step: Callable[[], None]) -> None:
        try:
            while time.monotonic() < stop:
                step()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(step,)) for step in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def inc_two_fields(coll: Coll, seconds: float) -> str:
    """Two threads ``$inc`` *different* fields of one document: every acknowledged $inc must be kept."""
    acked = {"a": 0, "b": 0}

    def inc(field: str) -> Callable[[], None]:
        def step() -> None:
            coll.find_one_and_update(KEY, {"$inc": {field: 1}})
            acked[field] += 1

        return step

    run_pair(seconds, inc("a"), inc("b"))
    doc = coll.find_one(KEY) or {}
    total = acked["a"] + acked["b"]
    return f"acknowledged {total:,}, stored {doc['a'] + doc['b']:,}"


class RemoveRace:
    """A writer of increasing counters races a remover on one key; count older payloads seen after removes."""

    def __init__(self, coll: Coll) -> None:
        self.coll = coll
        self.acked = 0
        self.n = 0
        self.removes = 0
        self.older = 0

    def write_full_set(self) -> None:
        self.n += 1
        doc = {"payload": self.n, "removed": False, "rev": ObjectId()}
        self.coll.find_one_and_update(KEY, {"$set": doc}, upsert=True)
        self.acked = self.n

    def check(self) -> None:
        acked = self.acked  # acknowledged before this read began: the stored payload may not be older
        doc = self.coll.find_one(KEY)
        self.removes += 1
        if doc is not None and doc["payload"] < acked:
            self.older += 1

    def report(self) -> str:
        return f"writes {self.n:,}, removes {self.removes:,}, older payload stored {self.older:,}"


def remove_set_flag(coll: Coll, seconds: float) -> str:
    """Remove as ``findAndModify {$set: {removed: true}}`` (the form that relies on server atomicity)."""
    race = RemoveRace(coll)

    def remove() -> None:
        coll.find_one_and_update(KEY, {"$set": {"removed": True}})
        race.check()

    run_pair(seconds, race.write_full_set, remove)
    return race.report()


def remove_optimistic(coll: Coll, seconds: float) -> str:
    """Read, then ``update_one({key, rev: <read rev>}, {$set: removed, rev: new})``, retried when it matched 0."""
    race = RemoveRace(coll)

    def remove() -> None:
        while True:
            doc = coll.find_one(KEY)
            if doc is None:
                break
            res = coll.update_one({**KEY, "rev": doc["rev"]}, {"$set": {"removed": True, "rev": ObjectId()}})
            if res.matched_count:
                break
        race.check()

    run_pair(seconds, race.write_full_set, remove)
    return race.report()


def remove_full_replace(coll: Coll, seconds: float) -> str:
    """Read, then ``findAndModify`` with a full replacement document filtered on the read ``rev``."""
    race = RemoveRace(coll)

    def remove() -> None:
        while True:
            doc = coll.find_one(KEY)
            if doc is None:
                break
            new = {**KEY, "payload": doc["payload"], "removed": True, "rev": ObjectId()}
            if coll.find_one_and_replace({**KEY, "rev": doc["rev"]}, new) is not None:
                break
        race.check()

    run_pair(seconds, race.write_full_set, remove)
    return race.report()


def remove_under_insert_lock(coll: Coll, seconds: float) -> str:
    """Writer and remover both hold a lock document (insert into a unique index, delete by ``_id``)."""
    locks = coll.database[coll.name + "-locks"]
    locks.create_index("lock", unique=True)
    race = RemoveRace(coll)

    def locked(body: Callable[[], None]) -> None:
        lock_id = ObjectId()
        while True:
            try:
                locks.insert_one({"_id": lock_id, "lock": "race:k"})
                break
            except DuplicateKeyError:
                time.sleep(0.0005)
        try:
            body()
        finally:
            locks.delete_one({"_id": lock_id})

    def write() -> None:
        locked(race.write_full_set)

    def remove() -> None:
        locked(lambda: coll.find_one_and_update(KEY, {"$set": {"removed": True}}))
        race.check()

    run_pair(seconds, write, remove)
    return race.report()


def writers_full_set(coll: Coll, seconds: float) -> str:
    """Two writers of full ``$set`` documents: the stored one must be one of the last two acknowledged."""
    last: dict[str, int] = {"a": 0, "b": 0}
    bad = 0
    seen = 0

    def write(who: str) -> Callable[[], None]:
        def step() -> None:
            nonlocal bad, seen
            n = last[who] + 1
            doc = coll.find_one_and_update(
                KEY, {"$set": {"who": who, "n": n}}, upsert=True, return_document=ReturnDocument.AFTER
            )
            last[who] = n
            seen += 1
            # Our own write was acknowledged: the document now holds it or a later write of the other thread.
            if doc is None or (doc["who"] == who and doc["n"] != n):
                bad += 1

        return step

    run_pair(seconds, write("a"), write("b"))
    doc = coll.find_one(KEY) or {}
    final_ok = doc.get("n") == last.get(doc.get("who", ""), -1)
    return f"writes {seen:,}, wrong returned documents {bad:,}, final is a last write: {final_ok}"


CASES: dict[str, Callable[[Coll, float], str]] = {
    "$inc of two fields": inc_two_fields,
    "two full $set writers": writers_full_set,
    "remove: $set removed": remove_set_flag,
    "remove: optimistic rev filter": remove_optimistic,
    "remove: full replacement on rev": remove_full_replace,
    "remove: insert-lock around both": remove_under_insert_lock,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="mongodb://127.0.0.1:27017/atomicity")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="run only these (repeatable)")
    args = parser.parse_args()
    client: MongoClient[dict[str, Any]] = MongoClient(args.url, serverSelectionTimeoutMS=5000)
    db = client.get_default_database("atomicity")
    server = client.admin.command("buildInfo")
    version = server.get("ferretdbVersion")
    print(f"server: {'FerretDB ' + version if version else 'MongoDB ' + server['version']}")
    for name, case in CASES.items():
        if args.case and name not in args.case:
            continue
        coll = db["race"]
        coll.drop()
        db["race-locks"].drop()
        coll.create_index([("bucket", 1), ("entryKey", 1)], unique=True)
        # The document exists before the race: concurrent upserts of a new key are another story (DuplicateKey).
        coll.insert_one({**KEY, "a": 0, "b": 0, "payload": 0, "removed": False, "rev": ObjectId(), "who": "a", "n": 0})
        print(f"{name:34} {case(coll, args.seconds)}", flush=True)
    client.drop_database(db.name)


if __name__ == "__main__":
    main()
