"""Configuration typos are ConfigurationErrors that list the known options (issue 9)."""

from __future__ import annotations

from typing import Any

import pytest

from persist_core import registry, setup
from persist_core.errors import ConfigurationError


@pytest.mark.parametrize(
    ("url", "named", "lists"),
    [
        ("file:./dump?durabilty=process", "durabilty", "durability"),
        ("file:./dump?durability=fast", "durability='fast'", "full|process"),
        ("file:./dump?verify=maybe", "verify='maybe'", "on/off"),
        ("jsonl:./log?durabilty=process", "durabilty", "durability"),
        ("jsonl:./log?durability=fast", "durability='fast'", "full|process"),
        ("memory://?durability=process", "no options", "known: none"),
        ("sqlite:///state.db?auto_migrate=maybe", "auto_migrate='maybe'", "yes/no"),
        ("postgresql+psycopg://u:pw@127.0.0.1/db?auto_migrate=maybe", "auto_migrate='maybe'", "yes/no"),
        ("postgresql+psycopg://u:pw@127.0.0.1/db?sslmod=require", "sslmod", "sslmode"),
        ("mysql+pymysql://u:pw@127.0.0.1/db?sslmode=require", "sslmode", "ssl_ca"),
        ("sqlite:///state.db?journal=wal", "journal", "auto_migrate"),
        ("mongodb://127.0.0.1/db?serverSelectionTimeout=5", "serverSelectionTimeout", "serverselectiontimeoutms"),
    ],
)
def test_unknown_or_malformed_url_options(url: str, named: str, lists: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        registry.create_backend(url)
    assert named in str(info.value)
    assert lists in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "file:./dump?durability=process&verify=off",
        "jsonl:./log?durability=process",
        "sqlite:///state.db?auto_migrate=yes&timeout=5",
        "postgresql+psycopg://u:pw@127.0.0.1/db?auto_migrate=On&sslmode=disable&application_name=bot&connect_timeout=3",
        "mysql+pymysql://u:pw@127.0.0.1/db?auto_migrate=0&charset=utf8mb4&ssl_ca=/x&ssl_disabled=1",
        "mongodb://127.0.0.1/db?authSource=admin&serverSelectionTimeoutMS=5&tlsCertificateKeyFilePassword=x",
    ],
)
def test_known_and_documented_pass_through_options(url: str) -> None:
    registry.create_backend(url)


@pytest.mark.parametrize(
    ("scheme", "url", "lists"),
    [
        ("file", "file:./dump", "verify_on_open"),
        ("jsonl", "jsonl:./log", "durability"),
        ("memory", "memory://", "known: none"),
        ("postgresql", "postgresql+psycopg://u:pw@127.0.0.1/db", "pool_size"),
        ("mongodb", "mongodb://127.0.0.1/db", "redis_url"),
    ],
)
def test_unknown_keyword_options_list_the_known_ones(scheme: str, url: str, lists: str) -> None:
    options: dict[str, dict[str, Any]] = {scheme: {"durabilty": "process"}}
    with pytest.raises(ConfigurationError) as info:
        setup(url, options=options, env={})
    assert "durabilty" in str(info.value)
    assert lists in str(info.value)
    assert "pw" not in str(info.value)
