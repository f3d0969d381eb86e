"""The contract kit must catch broken adapters: each deliberately broken variant fails a named clause.

Each variant is written the way a careless adapter author (or a regression in the core) would write it,
then the kit runs against it in a separate pytest session (pytester) and the test asserts that the
named clause fails while the same clause passes on the correct backend.
"""

from __future__ import annotations

import textwrap

import pytest

HEADER = """
import functools, os, json
import pytest
from persist_core.backend import Record
from persist_core.backends.file import FileBackend, encode_segment, _format
from persist_core.backends.memory import MemoryBackend
from persist_core.errors import PersistError
from persist_core.testing import BackendContractTests, broken_folder


# A memory backend that stores each key as mangle() spells it: a lossy key encoding, all else correct.
class Mangling(MemoryBackend):
    def mangle(self, domain, key):
        raise NotImplementedError

    def get(self, domain, key):
        return super().get(domain, self.mangle(domain, key))

    def put(self, domain, key, record):
        super().put(domain, self.mangle(domain, key), record)

    def put_many(self, domain, items):
        super().put_many(domain, [(self.mangle(domain, k), r) for k, r in items])

    def insert_many(self, domain, items):
        return super().insert_many(domain, [(self.mangle(domain, k), r) for k, r in items])

    def mark_removed(self, domain, key):
        super().mark_removed(domain, self.mangle(domain, key))

    def scan(self, domain, context, start=None, stop=None):
        return super().scan(domain, self.mangle(domain, (*context, None))[:-1], start, stop)


# A mangle() that joins the context fields into one text with separator.
def joined(separator):
    def mangle(self, domain, key):
        width = len(domain.context)
        return (separator.join(map(str, key[:width])), *key[width:])
    return mangle


# A mangle() that applies function to every text field (context and item key).
def each_text(function):
    def mangle(self, domain, key):
        return tuple(function(v) if isinstance(v, str) else v for v in key)
    return mangle
"""

VARIANTS = {
    # A candle cache that overwrites: insert_many implemented as an upsert.
    "candle_overwrites": (
        """
        class Broken(MemoryBackend):
            def insert_many(self, domain, items):
                self.put_many(domain, items)
                return len(items)
        FACTORY = Broken
        """,
        "test_candle_first_write_wins",
    ),
    # Soft delete implemented as a hard delete.
    "hard_delete": (
        """
        class Broken(MemoryBackend):
            def mark_removed(self, domain, key):
                table = self._table(domain)
                with self._lock:
                    if table.records.pop(key, None) is not None:
                        table.items[key[:-1]].remove(key[-1])
        FACTORY = Broken
        """,
        "test_bucket_remove_keeps_the_record",
    ),
    # A listing that shows removed keys: the removed flag is lost on the way out.
    "listing_shows_removed": (
        """
        class Broken(MemoryBackend):
            def scan(self, domain, context, start=None, stop=None):
                return [(i, Record(r.payload, r.when)) for i, r in super().scan(domain, context, start, stop)]
        FACTORY = Broken
        """,
        "test_bucket_remove_hides_the_entry",
    ),
    # A non-atomic write: the target file is truncated and rewritten in place, in chunks.
    "non_atomic_write": (
        """
        class Broken(FileBackend):
            def put(self, domain, key, record):
                folder, name = self._path(domain, key)
                os.makedirs(folder, exist_ok=True)
                data = _format(record)
                with open(os.path.join(folder, name), "wb", buffering=0) as fh:
                    for start in range(0, len(data), 4096):
                        fh.write(data[start:start + 4096])
        FACTORY = None  # set per test below: needs a folder
        """,
        "test_readers_never_see_a_torn_write",
    ),
    # A key encoding that collides: a naive path-safe replacement of "/".
    "colliding_key_encoding": (
        """
        class Broken(FileBackend):
            def _path(self, domain, key):
                folder, name = super()._path(domain, key)
                if domain.item is not None and isinstance(key[-1], str):
                    name = encode_segment(domain.item, key[-1].replace("/", "_")) + ".json"
                return folder, name
        FACTORY = None
        """,
        "test_hostile_item_keys_are_distinct_records",
    ),
    # Validation that writes as it goes: a batch is stored item by item until a bad item raises.
    "validation_writes_before_failing": (
        """
        import persist_core.stores as stores
        def write(self, items):
            for index, item in enumerate(items):
                key = self._item(item.get("id") if isinstance(item, dict) else None)
                self._backend.put_many(self._spec, [(key, Record(self._encode_item(item, index)))])
        stores.CollectionStore.write = write
        FACTORY = MemoryBackend
        """,
        "test_collection_bad_item_rejects_whole_batch",
    ),
    # A backend that claims shared storage but starts empty on every open: a restart loses the state.
    "forgets_on_reopen": (
        """
        from persist_core.backend import Capabilities
        class Broken(MemoryBackend):
            capabilities = Capabilities()
        FACTORY = Broken
        """,
        "test_state_machine_matches_the_memory_model",
    ),
    # Soft delete as an unlocked read-modify-write: a write acknowledged between the read and the write-back
    # is undone by the older payload (issue 9). The sleep widens the window the way a slow disk does.
    "remove_read_modify_write": (
        """
        import time
        class Broken(MemoryBackend):
            def mark_removed(self, domain, key):
                record = self.get(domain, key)
                if record is not None and not record.removed:
                    time.sleep(0.001)
                    self.put(domain, key, Record(record.payload, record.when, removed=True))
        FACTORY = Broken
        """,
        "test_remove_racing_write_never_restores_an_older_payload",
    ),
    # A read that hands out the stored object itself (a decode cache).
    "read_returns_stored_object": (
        """
        import persist_core.store_rules as rules
        _cache = {}
        _decode = rules.decode_stored
        def cached(spec, text):
            if text not in _cache:
                _cache[text] = _decode(spec, text)
            return _cache[text]
        rules.decode_stored = cached
        FACTORY = MemoryBackend
        """,
        "test_reads_return_fresh_objects",
    ),
    # Context fields joined into one text with a separator that keys may contain: strategy "a|b" on exchange
    # "c" is strategy "a" on exchange "b|c" (issue 12).
    "joins_context_with_pipe": (
        """
        class Broken(Mangling):
            mangle = joined("|")
        FACTORY = Broken
        """,
        "test_property_distinct_keys_never_share_a_record",
    ),
    "joins_context_with_tilde": (
        """
        class Broken(Mangling):
            mangle = joined("~")
        FACTORY = Broken
        """,
        "test_property_distinct_keys_never_share_a_record",
    ),
    # Keys normalised to NFC: "é" as U+00E9 and as "e" + U+0301 become one key.
    "normalises_keys_nfc": (
        """
        import unicodedata
        class Broken(Mangling):
            mangle = each_text(lambda v: unicodedata.normalize("NFC", v))
        FACTORY = Broken
        """,
        "test_property_distinct_keys_never_share_a_record",
    ),
    # Keys trimmed of surrounding whitespace.
    "strips_whitespace": (
        """
        class Broken(Mangling):
            mangle = each_text(str.strip)
        FACTORY = Broken
        """,
        "test_property_distinct_keys_never_share_a_record",
    ),
    # Case-insensitive keys (a case-insensitive collation or file system).
    "folds_case": (
        """
        class Broken(Mangling):
            mangle = each_text(str.lower)
        FACTORY = Broken
        """,
        "test_property_distinct_keys_never_share_a_record",
    ),
    # File names cut at 100 bytes: an encoded long key loses its tail.
    "truncates_file_names": (
        """
        import persist_core.backends.file as file_module
        class Broken(FileBackend):
            def _path(self, domain, key):
                folder, name = super()._path(domain, key)
                parts = os.path.relpath(folder, self.root).split(os.sep)
                return os.path.join(self.root, *(p[:100] for p in parts)), name[:100]
        FACTORY = None
        """,
        "test_property_distinct_keys_never_share_a_record",
    ),
    # The empty frame_name stored as a placeholder that is also a valid frame name.
    "empty_frame_as_default": (
        """
        class Broken(Mangling):
            def mangle(self, domain, key):
                names = [f.name for f in domain.context]
                frame = names.index("frame_name") if "frame_name" in names else -1
                return tuple("default" if i == frame and v == "" else v for i, v in enumerate(key))
        FACTORY = Broken
        """,
        "test_property_distinct_keys_never_share_a_record",
    ),
    # The removed flag kept in memory, not in storage: right until a restart, which brings removed entries back.
    "removed_flag_not_persisted": (
        """
        from persist_core.backend import Capabilities
        TABLES = {}
        class Broken(MemoryBackend):  # instances share one store, as on a server
            capabilities = Capabilities(survives_process_kill=False)
            def __init__(self):
                super().__init__()
                self._tables = TABLES
                self._removed = set()
            def mark_removed(self, domain, key):
                if self.get(domain, key) is not None:
                    self._removed.add((domain.name, key))
            def put(self, domain, key, record):
                self._removed.discard((domain.name, key))
                super().put(domain, key, record)
            def get(self, domain, key):
                record = super().get(domain, key)
                if record is not None and (domain.name, key) in self._removed:
                    record = Record(record.payload, record.when, removed=True)
                return record
            def scan(self, domain, context, start=None, stop=None):
                return [(i, self.get(domain, (*context, i))) for i, _ in super().scan(domain, context, start, stop)]
        FACTORY = Broken
        """,
        "test_state_machine_matches_the_memory_model",
    ),
    # Temp files named like records (tmp-<random>.json): a listing takes an interrupted write for an item.
    "lists_temp_files": (
        """
        import persist_core.backends.file as file_module
        class Broken(FileBackend):
            def _temp(self, folder, name, data):
                os.makedirs(folder, exist_ok=True)
                tmp = os.path.join(folder, f"tmp-{os.urandom(4).hex()}.json")
                with open(tmp, "wb") as fh:
                    fh.write(data)
                return tmp
        FACTORY = None
        """,
        "test_interrupted_write_is_never_read",
    ),
    # A sweep (at the first write in a folder) that removes every temp file, also those of writes under way in
    # another process.
    "sweeps_without_grace": (
        """
        import contextlib
        class Broken(FileBackend):
            def _sweep_folder(self, folder):
                if folder in self._swept:
                    return
                self._swept.add(folder)
                for name in os.listdir(folder) if os.path.isdir(folder) else ():
                    if name.startswith(".tmp-"):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(folder, name))
        FACTORY = None
        """,
        "test_open_never_sweeps_the_writes_of_another_process",
    ),
    # -- backend-level classes (issue 12): each caught by a clause that drives the backend directly --------------
    # A scan that ignores its stop bound.
    "scan_ignores_stop": (
        """
        class Broken(MemoryBackend):
            def scan(self, domain, context, start=None, stop=None):
                return super().scan(domain, context, start, None)
        FACTORY = Broken
        """,
        "test_backend_scan_start_inclusive_stop_exclusive",
    ),
    # Int item keys kept as text: 10 sorts before 2.
    "ints_ordered_as_text": (
        """
        class Broken(MemoryBackend):
            def scan(self, domain, context, start=None, stop=None):
                return sorted(super().scan(domain, context, start, stop), key=lambda pair: str(pair[0]))
        FACTORY = Broken
        """,
        "test_backend_scan_orders_int_items_numerically",
    ),
    # A context matched by the prefix of its joined text: context "a" lists the items of "ab".
    "prefix_context_leak": (
        """
        class Broken(MemoryBackend):
            def scan(self, domain, context, start=None, stop=None):
                joined = "|".join(map(str, context))
                out = []
                for other in list(self._table(domain).items):
                    if "|".join(map(str, other)).startswith(joined):
                        out.extend(super().scan(domain, other, start, stop))
                return sorted(out, key=lambda pair: pair[0])
        FACTORY = Broken
        """,
        "test_backend_contexts_sharing_a_prefix_are_isolated",
    ),
    # A falsy when stored as "no when": when=0 reads back as None.
    "when_zero_becomes_none": (
        """
        class Broken(MemoryBackend):
            def put(self, domain, key, record):
                super().put(domain, key, Record(record.payload, record.when or None, record.removed))
        FACTORY = Broken
        """,
        "test_backend_record_fields_round_trip",
    ),
    # The removed flag kept in the process only: a reopen revives every removed record.
    "removed_flag_lost_on_reopen": (
        """
        class Broken(FileBackend):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self._gone = set()
            def put(self, domain, key, record):
                super().put(domain, key, Record(record.payload, record.when))
                (self._gone.add if record.removed else self._gone.discard)((domain.name, key))
            def mark_removed(self, domain, key):
                if self.get(domain, key) is not None:
                    self._gone.add((domain.name, key))
            def get(self, domain, key):
                record = super().get(domain, key)
                if record is None:
                    return None
                return Record(record.payload, record.when, (domain.name, key) in self._gone)
        FACTORY = None
        """,
        "test_backend_record_fields_survive_reopen",
    ),
    # Soft delete that keeps the key but drops the value.
    "remove_drops_payload": (
        """
        class Broken(MemoryBackend):
            def mark_removed(self, domain, key):
                record = self.get(domain, key)
                if record is not None:
                    self.put(domain, key, Record("null", record.when, removed=True))
        FACTORY = Broken
        """,
        "test_backend_mark_removed_keeps_payload_and_when",
    ),
    # A value cut at 1 MiB (a single short write, a column size).
    "truncates_large_values": (
        """
        class Broken(MemoryBackend):
            def put(self, domain, key, record):
                super().put(domain, key, Record(record.payload[: 2**20], record.when, record.removed))
        FACTORY = Broken
        """,
        "test_backend_large_values_read_back_whole",
    ),
    # A storage error logged and swallowed: the write reports success.
    "swallows_storage_error": (
        """
        class Broken(FileBackend):
            def put(self, domain, key, record):
                try:
                    super().put(domain, key, record)
                except PersistError:
                    pass
        FACTORY = None
        """,
        "test_storage_error_surfaces_as_persist_error",
    ),
    # A factory that hands out one shared instance instead of a new backend on the same storage.
    "factory_returns_shared_instance": (
        """
        _SHARED = MemoryBackend()
        def FACTORY():
            return _SHARED
        """,
        "test_factory_builds_a_new_backend_each_call",
    ),
    # A unit of work applied batch by batch in reverse: a later put no longer wins over an earlier one.
    "unit_applied_out_of_order": (
        """
        from persist_core.units import calls
        class Broken(MemoryBackend):
            def apply_unit(self, writes):
                for name, args in reversed(list(calls(writes))):
                    getattr(self, name)(*args)
        FACTORY = Broken
        """,
        "test_apply_unit_ends_as_the_writes_one_by_one",
    ),
    # Declares atomic units (inherited from FileBackend) but applies a unit write by write (Backend's default).
    "unit_not_atomic": (
        """
        from persist_core.backend import Backend
        class Broken(FileBackend):
            def apply_unit(self, writes):
                Backend.apply_unit(self, writes)
        FACTORY = None
        """,
        "test_sigkill_leaves_each_unit_all_or_none",
    ),
    # close() that forgets a descriptor open() took.
    "close_leaks_a_descriptor": (
        """
        class Broken(FileBackend):
            def open(self):
                super().open()
                self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        FACTORY = None
        """,
        "test_close_releases_what_open_took",
    ),
}

TEST_CLASS = """
class TestVariant(BackendContractTests):
    @pytest.fixture
    def backend_factory(self, tmp_path):
        if FACTORY is None:
            return functools.partial(Broken, tmp_path / "dump")
        return FACTORY

    @pytest.fixture
    def break_storage(self):
        if FACTORY is not None:
            return None
        return lambda backend: broken_folder(backend.root)
"""


_LIBCST_WARNING = "mypy_extensions.TypedDict is deprecated"


def _run(pytester: pytest.Pytester, body: str, clause: str, *options: str) -> pytest.RunResult:
    pytester.makepyfile(test_variant=HEADER + textwrap.dedent(body) + TEST_CLASS)
    # Hypothesis writes a patch for a failing example with libcst, whose import warns (mypy_extensions);
    # under -W error that warning would turn a clause's failure into an INTERNALERROR.
    ignore = f"ignore:{_LIBCST_WARNING}:DeprecationWarning"
    return pytester.runpytest_subprocess(
        "-q", "-p", "no:cacheprovider", "-k", clause, "-W", "error", "-W", ignore, *options
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kit_catches_broken_variant(pytester: pytest.Pytester, variant: str) -> None:
    body, clause = VARIANTS[variant]
    result = _run(pytester, body, clause)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, f"{clause} did not catch {variant}:\n{result.stdout.str()[-3000:]}"


def test_every_catching_clause_passes_on_the_correct_backend(pytester: pytest.Pytester) -> None:
    """Control: each clause that catches a variant passes when the variant's bug is absent (one session for all)."""
    clauses = sorted({clause for _, clause in VARIANTS.values()})
    correct = """
    class Broken(FileBackend):
        pass
    FACTORY = None
    """
    result = _run(pytester, correct, " or ".join(clauses), "-rp")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()[-3000:]
    passed = {line.split("::")[-1].split("[")[0] for line in result.outlines if line.startswith("PASSED ")}
    assert [clause for clause in clauses if clause not in passed] == [], result.stdout.str()[-3000:]
