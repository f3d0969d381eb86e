"""``setup()`` takes a ``sqlalchemy.URL`` as well as a string (issue 12.3); its password stays masked."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from persist_core import ConfigurationError, PersistError, asetup, setup
from tests.sql import servers

CONTEXT = {"symbol": "BTC/USDT", "strategy_name": "s", "exchange_name": "e"}
SECRET = "Plain S3cret@/x"


def test_a_sqlalchemy_url_object_serves_every_domain(tmp_path: Path) -> None:
    url = sa.URL.create("sqlite", database=str(tmp_path / "state.db"))
    with setup(url, env={}) as persist:
        persist.live.signal(**CONTEXT).write({"id": "sig-1"})
    with setup(f"sqlite:///{tmp_path / 'state.db'}", env={}) as persist:  # the same storage as the string
        assert persist.live.signal(**CONTEXT).read() == {"id": "sig-1"}


def test_url_objects_in_the_per_domain_settings(tmp_path: Path) -> None:
    candles = sa.URL.create("sqlite", database=str(tmp_path / "candles.db"))
    with setup(f"file:{tmp_path}/dump", domains={"candle": candles}, env={}) as persist:
        assert persist.backend("live", "candle").url == f"sqlite:///{tmp_path / 'candles.db'}"
        assert persist.backend("live", "signal").url.startswith("file:")


def test_a_postgresql_url_object_with_a_password(caplog: pytest.LogCaptureFixture) -> None:
    url = sa.make_url(servers.server_url(servers.POSTGRES))
    caplog.set_level(logging.DEBUG, logger="persist")
    with setup(url, env={}) as persist:
        persist.live.signal(**CONTEXT).read()
        assert all(url.password not in route for _, _, route in persist.routes())
    assert url.password and url.password not in caplog.text


def test_asetup_takes_a_url_object_too(tmp_path: Path) -> None:
    async def roundtrip() -> object:
        async with await asetup(sa.URL.create("sqlite", database=str(tmp_path / "a.db")), env={}) as persist:
            await persist.live.signal(**CONTEXT).write({"id": "sig-2"})
            return await persist.live.signal(**CONTEXT).read()

    assert asyncio.run(roundtrip()) == {"id": "sig-2"}


def test_the_password_of_a_url_object_is_masked_in_errors(caplog: pytest.LogCaptureFixture) -> None:
    url = sa.URL.create("postgresql+psycopg", username="u", password=SECRET, host="127.0.0.1", port=1, database="db")
    caplog.set_level(logging.DEBUG, logger="persist")
    with pytest.raises(PersistError) as caught:  # nothing listens on port 1
        setup(url, env={}, options={"postgresql": {"timeout": 2}})
    assert not isinstance(caught.value, TypeError)
    assert SECRET not in str(caught.value)
    assert SECRET not in caplog.text


@pytest.mark.parametrize("value", [42, b"sqlite:///x.db", object()])
def test_anything_else_is_refused_by_type(value: object) -> None:
    with pytest.raises(
        ConfigurationError, match=f"url must be a URL string or a sqlalchemy.URL, not {type(value).__name__}"
    ):
        setup(value, env={})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"domains\['candle'\] must be a URL string"):
        setup("memory://", domains={"candle": value}, env={})  # type: ignore[dict-item]
