"""What is particular to the jsonl backend: the file format, URLs, configuration and append-only semantics."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from persist_core import setup
from persist_core.backend import Record
from persist_core.backends import jsonl as jsonl_module
from persist_core.backends.jsonl import DEFAULT_PATH, JsonlBackend
from persist_core.domains import DOMAINS
from persist_core.errors import BackendUnavailableError, ConfigurationError, CorruptRecordError, InvalidValueError
from persist_core.registry import create_backend
from tests.jsonl.helpers import LOG, entry, insert, lines_of, parsed_lines


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "log" / "log.jsonl"


@pytest.fixture
def backend(path: Path) -> Any:
    with JsonlBackend(path) as backend:
        yield backend


# --------------------------------------------------------------------------------------------- format


def test_each_entry_is_one_line_holding_the_entry_itself(tmp_path: Path) -> None:
    with setup(env={"PERSIST_URL": f"file:{tmp_path}/dump", "PERSIST_LOG_URL": f"jsonl:{tmp_path}/a.jsonl"}) as p:
        p.live.log().write([{"id": "e2", "topic": "b", "args": [1, {"x": None}]}, {"topic": "a", "id": "e1"}])
        p.backtest.log().write([{"id": "é/日本", "text": 'line\nbreak \u2028 and "quotes"'}])
    data = (tmp_path / "a.jsonl").read_bytes()
    assert data.endswith(b"\n")
    assert data.decode().split("\n")[:-1] == [
        '{"id":"e2","topic":"b","args":[1,{"x":null}]}',
        '{"topic":"a","id":"e1"}',
        '{"id":"é/日本","text":"line\\nbreak \u2028 and \\"quotes\\""}',
    ]


def test_jq_reads_the_file(path: Path, backend: JsonlBackend) -> None:
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq is not installed")
    insert(backend, [entry("a", topic="open", n=1), entry("b", topic="close", n=2)])
    out = subprocess.run([jq, "-c", 'select(.topic == "close") | .n', str(path)], capture_output=True, check=True)
    assert out.stdout == b"2\n"


def test_default_path_and_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert JsonlBackend().path == tmp_path / "dump" / "log" / "log.jsonl"
    assert JsonlBackend.from_url("jsonl:").path == (tmp_path / DEFAULT_PATH).absolute()
    assert JsonlBackend.from_url("jsonl:rel/x.jsonl").path == tmp_path / "rel" / "x.jsonl"
    assert JsonlBackend.from_url(f"jsonl://{tmp_path}/abs.jsonl").path == tmp_path / "abs.jsonl"
    backend = create_backend("jsonl:./dump/log/log.jsonl")
    assert isinstance(backend, JsonlBackend)
    assert backend.url == "jsonl:./dump/log/log.jsonl"
    backend.open()
    backend.close()
    assert (tmp_path / "dump" / "log" / "log.jsonl").is_file()


def test_bad_url_options_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="durability"):
        JsonlBackend.from_url("jsonl:x.jsonl?durability=sometimes")
    with pytest.raises(ConfigurationError, match=r"unknown option.*durabilty"):
        JsonlBackend.from_url("jsonl:x.jsonl?durabilty=process")
    with pytest.raises(ConfigurationError, match="jsonl"):
        create_backend("jsonl:x.jsonl", fsync=False)
    with pytest.raises(ConfigurationError, match="local path, not a host"):
        JsonlBackend.from_url("jsonl://server/x.jsonl")


def test_a_directory_as_path_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not usable as a file"):
        JsonlBackend(tmp_path).open()


def test_one_write_and_one_fsync_per_batch(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []
    real_write, real_sync = os.write, jsonl_module._sync_data

    def write(fd: int, data: Any) -> int:
        calls.append(("write", len(data)))
        return real_write(fd, data)

    def sync(fd: int) -> None:
        calls.append(("sync", fd))
        real_sync(fd)

    backends = [JsonlBackend(path), JsonlBackend.from_url(f"jsonl:{path}?durability=process")]
    for backend in backends:
        backend.open()
    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(jsonl_module, "_sync_data", sync)
    assert insert(backends[0], [entry(f"full-{n:03d}", n=n) for n in range(100)]) == 100
    assert [kind for kind, _ in calls] == ["write", "sync"]
    calls.clear()
    assert insert(backends[1], [entry(f"proc-{n:03d}", n=n) for n in range(100)]) == 100
    assert [kind for kind, _ in calls] == ["write"]
    calls.clear()
    assert insert(backends[0], [entry("full-000"), entry("proc-099")]) == 0  # all known: nothing written
    assert calls == []
    monkeypatch.undo()
    for backend in backends:
        backend.close()
    assert len(lines_of(path)) == 200


# ---------------------------------------------------------------------------------------- configuration


def test_routing_another_domain_to_jsonl_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"jsonl:{tmp_path}/log.jsonl"
    with pytest.raises(ConfigurationError) as info:
        setup(env={}, live={"signal": url})
    message = str(info.value)
    assert url in message
    assert "'signal' domain (live mode)" in message
    assert message.endswith("it stores only: log")
    with pytest.raises(ConfigurationError, match=r"does not store the '(?!log)\w+' domain"):
        setup(url, env={})
    with pytest.raises(ConfigurationError, match="'storage' domain"):
        setup(env={"PERSIST_STORAGE_URL": url, "PERSIST_URL": f"file:{tmp_path}/dump"})


def test_the_backend_refuses_other_domains_directly(backend: JsonlBackend) -> None:
    with pytest.raises(ConfigurationError, match="stores only the 'log' domain, not 'storage'"):
        backend.scan(DOMAINS["storage"], (True,))
    with pytest.raises(ConfigurationError, match="only the 'log' domain"):
        backend.get(DOMAINS["signal"], ("s", "t", "x"))
    with pytest.raises(ConfigurationError, match="only the 'log' domain"):
        backend.insert_many(DOMAINS["candle"], [(("s", "1m", "x", 0), Record("{}"))])


def test_log_through_env_and_options(tmp_path: Path) -> None:
    env = {"PERSIST_URL": f"file:{tmp_path}/dump", "PERSIST_LOG_URL": f"jsonl:{tmp_path}/env.jsonl"}
    with setup(env=env, options={"jsonl": {"durability": "process"}}) as persist:
        backend = persist.backend("backtest", "log")
        assert isinstance(backend, JsonlBackend)
        assert backend is persist.backend("live", "log")  # one URL, one backend, one file
        assert backend._fsync is False
        persist.live.log().write([{"id": "x"}])
    assert parsed_lines(tmp_path / "env.jsonl") == [{"id": "x"}]


# ------------------------------------------------------------------------------------------- semantics


def test_append_only_across_instances_and_restarts(path: Path) -> None:
    one, two = JsonlBackend(path), JsonlBackend(path)
    one.open()
    two.open()
    assert insert(one, [entry("a", v=1), entry("b", v=1)]) == 2
    assert insert(two, [entry("b", v=2), entry("c", v=2)]) == 1  # two catches up before appending
    assert insert(one, [entry("c", v=3), entry("d", v=3)]) == 1
    one.close()
    two.close()
    with JsonlBackend(path) as three:
        assert insert(three, [entry("a", v=4), entry("d", v=4), entry("e", v=4)]) == 1
        assert [(k, json.loads(r.payload)["v"]) for k, r in three.scan(LOG, ())] == [
            ("a", 1),
            ("b", 1),
            ("c", 2),
            ("d", 3),
            ("e", 4),
        ]
    assert [e["id"] for e in parsed_lines(path)] == ["a", "b", "c", "d", "e"]


def test_reads_see_other_instances_appends(path: Path) -> None:
    reader, writer = JsonlBackend(path), JsonlBackend(path)
    reader.open()
    assert reader.scan(LOG, ()) == []
    with writer:
        insert(writer, [entry("z"), entry("m")])
        got = reader.get(LOG, ("m",))
        assert got is not None
        assert json.loads(got.payload) == {"id": "m"}
        assert [k for k, _ in reader.scan(LOG, ())] == ["m", "z"]
        insert(writer, [entry("a")])
    assert [k for k, _ in reader.scan(LOG, (), start="b", stop="z")] == ["m"]
    assert [k for k, _ in reader.scan(LOG, (), start="a")] == ["a", "m", "z"]
    reader.close()


def test_id_need_not_be_the_first_member(backend: JsonlBackend, path: Path) -> None:
    payload = json.dumps({"topic": "t", "id": "late"}, separators=(",", ":"))
    assert backend.insert_many(LOG, [(("late",), Record(payload))]) == 1
    assert backend.get(LOG, ("late",)) == Record(payload)
    assert lines_of(path) == [payload.encode()]


def test_indented_payload_is_written_on_one_line(backend: JsonlBackend, path: Path) -> None:
    payload = json.dumps({"id": "pretty", "nested": {"a": [1, 2]}}, indent=2)
    assert backend.insert_many(LOG, [(("pretty",), Record(payload))]) == 1
    assert lines_of(path) == [b'{"id":"pretty","nested":{"a":[1,2]}}']


@pytest.mark.parametrize(
    "record",
    [
        Record('{"id":"other","v":1}'),
        Record('{"v":1}'),
        Record("[1,2]"),
        Record('"text"'),
        Record('{"id":"k"}', when=5),
        Record('{"id":"k"}', removed=True),
    ],
    ids=repr,
)
def test_records_that_are_not_the_entry_itself_are_refused(backend: JsonlBackend, path: Path, record: Record) -> None:
    with pytest.raises(InvalidValueError):
        backend.insert_many(LOG, [(("ok",), Record('{"id":"ok"}')), (("k",), record)])
    assert path.read_bytes() == b""
    assert backend.scan(LOG, ()) == []


def test_put_and_mark_removed_are_refused(backend: JsonlBackend) -> None:
    insert(backend, [entry("a", v=1)])
    with pytest.raises(NotImplementedError, match="append-only: put"):
        backend.put(LOG, ("a",), Record('{"id":"a","v":2}'))
    with pytest.raises(NotImplementedError, match="append-only: put_many"):
        backend.put_many(LOG, [(("a",), Record('{"id":"a","v":2}'))])
    with pytest.raises(NotImplementedError, match="append-only: mark_removed"):
        backend.mark_removed(LOG, ("a",))
    assert backend.get(LOG, ("a",)) == Record('{"id":"a","v":1}')


def test_an_upstream_log_file_opens_as_it_is(path: Path) -> None:
    path.parent.mkdir(parents=True)
    upstream = [
        {
            "id": "k2j4h5",
            "type": "info",
            "timestamp": 1717000000000,
            "createdAt": "2024-05-29T16:26:40.000Z",
            "methodContext": None,
            "executionContext": {"symbol": "BTCUSDT", "when": "2024-05-29T16:26:40.000Z", "backtest": True},
            "topic": "strategy.tick",
            "args": [{"price": 67000.5}],
        },
        {"id": "a1", "type": "warn", "topic": "risk", "args": []},
    ]
    # JSON.stringify output, with a CRLF line from an editor and a blank line thrown in
    path.write_bytes(
        (json.dumps(upstream[0]) + "\r\n\n" + json.dumps(upstream[1], separators=(",", ":")) + "\n").encode()
    )
    with JsonlBackend(path) as backend:
        rows = backend.scan(LOG, ())
        assert [json.loads(rec.payload) for _, rec in rows] == [upstream[1], upstream[0]]
        assert insert(backend, [entry("a1", type="changed"), entry("new")]) == 1


def test_a_repeated_id_in_the_file_keeps_the_first_and_warns(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path.parent.mkdir(parents=True)
    path.write_text('{"id":"a","v":1}\n{"id":"b","v":1}\n{"id":"a","v":2}\n')
    with caplog.at_level(logging.WARNING, logger="persist.jsonl"), JsonlBackend(path) as backend:
        assert backend.get(LOG, ("a",)) == Record('{"id":"a","v":1}')
        assert len(backend.scan(LOG, ())) == 2
    assert [r.name for r in caplog.records] == ["persist.jsonl"]
    assert "1 line(s) whose id came earlier" in caplog.records[0].getMessage()


def test_a_rotated_file_is_refused_until_a_new_file_takes_its_name(path: Path) -> None:
    """An append to a renamed file would be lost with it; a file under the name again is followed, as after
    a compaction, and de-duplication is per file."""
    rotated = path.with_name("log.jsonl.1")
    with JsonlBackend(path) as backend:
        insert(backend, [entry("a")])
        path.rename(rotated)
        with pytest.raises(BackendUnavailableError, match="removed or renamed"):
            insert(backend, [entry("b")])
        with pytest.raises(BackendUnavailableError, match="removed or renamed"):
            backend.scan(LOG, ())
        path.write_text("")
        assert backend.scan(LOG, ()) == []
        assert insert(backend, [entry("a"), entry("b")]) == 2
    assert parsed_lines(rotated) == [{"id": "a"}]
    assert parsed_lines(path) == [{"id": "a"}, {"id": "b"}]


def test_a_file_cut_short_behind_the_backends_back_is_reported(path: Path) -> None:
    with JsonlBackend(path) as backend:
        insert(backend, [entry("a"), entry("b")])
        os.truncate(path, 0)
        with pytest.raises(CorruptRecordError, match="shrank"):
            backend.scan(LOG, ())


def test_close_then_use_reopens(path: Path) -> None:
    backend = JsonlBackend(path)
    insert(backend, [entry("a")])  # not opened: the first use opens
    backend.close()
    backend.close()
    assert [k for k, _ in backend.scan(LOG, ())] == ["a"]
    backend.close()
