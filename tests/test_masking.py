"""Secrets never show: mask_url over every URL form we accept, the CLI, repr, routes, logs, exception chains.

The rule is in docs/decisions.md ("Masking errs towards hiding"): the userinfo password runs to the last
"@" on its line, and a query parameter is secret when its name contains pass/pwd/secret/token/credential,
ends with "key", or is authMechanismProperties.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from persist_core import setup
from persist_core.cli import main
from persist_core.errors import PersistError
from persist_core.urls import is_secret_option, mask_url, secrets_of

#: Every URL form the registry accepts, as (prefix up to the authority, the rest after it). A form
#: without an authority (file:, jsonl:, sqlite:///) takes secrets in its query only.
FORMS_WITH_USERINFO = [
    "postgresql+psycopg://",
    "postgresql://",
    "postgres://",
    "mysql+pymysql://",
    "mysql://",
    "mariadb+pymysql://",
    "mongodb://",
    "mongodb+srv://",
    "redis://",
    "rediss://",
]
FORMS_WITHOUT_USERINFO = ["file:./dump", "jsonl:./log", "memory://", "sqlite:///state.db"]

#: Passwords holding each character that ends a URL part, and non-ASCII.
PASSWORDS = [
    "Plain Secret",
    "ha#sh-Secret",
    "que?ry-Secret",
    "sla/sh-Secret",
    "a@t-Secret",
    "per%cent-Secret",
    "co:lon-Secret",
    "Ümlaut-Sécret-密码",
    "all of #?/@%: Secret",
]

#: Secret query parameters of the drivers we serve (and spellings that must be secret by the same rule).
SECRET_PARAMETERS = [
    "password",
    "pass",
    "pwd",
    "passwd",
    "sslpassword",
    "tlsCertificateKeyFilePassword",
    "PASSWORD",
    "oauth_client_secret",
    "api_token",
    "sslkey",
    "authMechanismProperties",
]
PLAIN_PARAMETERS = ["sslmode", "authSource", "charset", "connect_timeout", "durability", "tlsCertificateKeyFile"]


def _hidden(password: str, text: str) -> bool:
    return all(form not in text for form in {password, quote(password, safe=""), quote(password)})


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("prefix", FORMS_WITH_USERINFO)
def test_userinfo_password_is_masked(prefix: str, password: str) -> None:
    for written in (password, quote(password, safe="")):
        url = f"{prefix}trader:{written}@127.0.0.1:1234/db?sslmode=require"
        masked = mask_url(url)
        assert _hidden(password, masked), masked
        assert masked == f"{prefix}trader:***@127.0.0.1:1234/db?sslmode=require"
        assert mask_url(masked) == masked
        assert written in secrets_of(url)


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("prefix", FORMS_WITH_USERINFO)
def test_password_only_userinfo_is_masked(prefix: str, password: str) -> None:
    masked = mask_url(f"{prefix}:{password}@127.0.0.1/0")
    assert masked == f"{prefix}:***@127.0.0.1/0"


@pytest.mark.parametrize("parameter", SECRET_PARAMETERS)
@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("prefix", FORMS_WITH_USERINFO + FORMS_WITHOUT_USERINFO)
def test_secret_query_parameters_are_masked(prefix: str, password: str, parameter: str) -> None:
    base = f"{prefix}u@127.0.0.1/db" if prefix.endswith("//") else prefix
    # A raw "&" would end the value in every parser, so it can only come percent-encoded.
    for written in (password, quote(password, safe="")):
        for url, expected in (
            (f"{base}?{parameter}={written}", f"{base}?{parameter}=***"),
            (
                f"{base}?sslmode=x&{parameter}={written}&authSource=admin",
                f"{base}?sslmode=x&{parameter}=***&authSource=admin",
            ),
        ):
            masked = mask_url(url)
            assert _hidden(password, masked), masked
            if "@" not in written or "//" not in prefix:
                assert masked == expected
            assert mask_url(masked) == masked


def test_the_secret_parameter_rule() -> None:
    assert all(is_secret_option(name) for name in SECRET_PARAMETERS)
    assert is_secret_option("pass%77ord")  # percent-encoded names are decoded first
    assert not any(is_secret_option(name) for name in PLAIN_PARAMETERS)
    url = "mysql://h/db?charset=utf8mb4&passwd=s3#cret&connect_timeout=5"
    assert mask_url(url) == "mysql://h/db?charset=utf8mb4&passwd=***&connect_timeout=5"


def test_text_quoting_urls() -> None:
    text = "cannot reach 'postgresql://u:Plain Secret@h:5432/db' (refused); also redis://:a b@h/0 tried"
    assert mask_url(text) == "cannot reach 'postgresql://u:***@h:5432/db' (refused); also redis://:***@h/0 tried"
    # An already masked URL keeps the rest of its line, even with an "@" further on.
    text = "mysql+pymysql://persist:***@127.0.0.1/db refused: Access denied for user 'persist'@'127.0.0.1'"
    assert mask_url(text) == text
    # Each line is masked on its own.
    assert mask_url("a redis://:x y@h/0\nb user@host") == "a redis://:***@h/0\nb user@host"


# --------------------------------------------------------------------------- where URLs are shown

SPACED = "Plain Secret"


def test_setup_error_masks_a_password_with_a_space() -> None:
    with pytest.raises(PersistError) as info:
        setup(f"postgresql+psycopg://u:{SPACED}@127.0.0.1:1/db", env={})
    _assert_nowhere(SPACED, info.value)


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql://u@127.0.0.1:1/db?passwd=Plain Secret",
        "postgresql+psycopg://u@127.0.0.1:1/db?sslpassword=Plain Secret",
        "mongodb://u@127.0.0.1:1/db?tlsCertificateKeyFilePassword=Plain Secret&serverSelectionTimeoutMS=200",
        "file:./dump?password=Plain Secret",
    ],
)
def test_cli_check_masks_secret_parameters(url: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    main(["check", "--url", url], out=out, err=err)
    assert SPACED not in out.getvalue() + err.getvalue()
    assert "Plain" not in out.getvalue() + err.getvalue()


def _backends() -> Iterator[tuple[str, Any]]:
    try:
        from persist_sql import SqlBackend
    except ImportError:  # pragma: no cover - extra not installed
        pass
    else:
        yield "postgresql+psycopg://u:Plain Secret@127.0.0.1:1/db?sslpassword=Plain Secret", SqlBackend
        yield "mysql+pymysql://u:Plain Secret@127.0.0.1:1/db?ssl_key=Plain Secret", SqlBackend
    try:
        from persist_mongo import MongoBackend
    except ImportError:  # pragma: no cover - extra not installed
        pass
    else:
        yield "mongodb://u:Plain Secret@127.0.0.1:1/db?tlsCertificateKeyFilePassword=Plain Secret", MongoBackend


@pytest.mark.parametrize(("url", "cls"), list(_backends()), ids=lambda v: v.split(":")[0] if isinstance(v, str) else "")
def test_backend_repr_masks(url: str, cls: Any) -> None:
    backend = cls.from_url(url)
    assert SPACED not in repr(backend)
    assert SPACED not in str(getattr(backend, "url", ""))


def test_routes_and_debug_log_mask(caplog: pytest.LogCaptureFixture) -> None:
    url = "postgresql+psycopg://u:Plain Secret@127.0.0.1:1/db?sslpassword=Plain Secret&connect_timeout=1"
    caplog.set_level(logging.DEBUG, logger="persist")
    try:
        persist = setup(url, env={})
    except PersistError as exc:  # opening fails (port 1); the log was written before that
        _assert_nowhere(SPACED, exc)
    else:  # pragma: no cover - backends open lazily
        with persist:
            assert all(SPACED not in route for _, _, route in persist.routes())
    assert SPACED not in caplog.text
    with setup("memory://", env={}) as persist:
        assert persist.routes()


# --------------------------------------------------------------------------- exception chains

WRONG = "Wr0ng-Secret pw"


def _walk(value: Any, seen: set[int], depth: int = 0) -> Iterator[Any]:
    if id(value) in seen or depth > 8:
        return
    seen.add(id(value))
    yield value
    if isinstance(value, str | bytes | int | float | bool) or value is None:
        return
    children: list[Any] = []
    if isinstance(value, BaseException):
        children += [value.__cause__, value.__context__, *value.args]
    if isinstance(value, dict):
        children += [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple | set | frozenset):
        children += list(value)
    for name in dir(value) if not isinstance(value, type) else ():
        if name.startswith("__"):
            continue
        try:
            children.append(getattr(value, name))
        except Exception:
            continue
    for child in children:
        if not callable(child) or isinstance(child, BaseException):
            yield from _walk(child, seen, depth + 1)


def _assert_nowhere(secret: str, error: BaseException) -> None:
    for value in _walk(error, set()):
        for text in (str(value), repr(value)):
            assert secret not in text, f"{type(value).__name__} shows the password: {text[:300]}"
        if isinstance(value, bytes):
            assert secret.encode() not in value, f"bytes hold the password: {value[:300]!r}"


@pytest.mark.parametrize("server", ["postgres", "mysql"])
@pytest.mark.parametrize("failure", ["wrong password", "unreachable port"])
def test_failed_login_chain_holds_no_password(server: str, failure: str) -> None:
    sa = pytest.importorskip("sqlalchemy")
    from persist_sql import SqlBackend
    from tests.sql import servers

    real = sa.make_url(servers.server_url(servers.POSTGRES if server == "postgres" else servers.MYSQL))
    url = real.set(password=WRONG)
    if failure == "unreachable port":
        url = url.set(port=1)
    with pytest.raises(PersistError) as info:
        SqlBackend(url.render_as_string(hide_password=False)).open()
    assert info.value.__cause__ is not None  # the driver's error is still there, as a stand-in
    _assert_nowhere(WRONG, info.value)
    _assert_nowhere(quote(WRONG, safe=""), info.value)


def test_unreachable_mongo_chain_holds_no_password() -> None:
    pytest.importorskip("pymongo")
    from persist_mongo import MongoBackend

    url = f"mongodb://u:{quote(WRONG, safe='')}@127.0.0.1:1/db?serverSelectionTimeoutMS=200&connectTimeoutMS=200"
    with pytest.raises(PersistError) as info:
        MongoBackend.from_url(url).open()
    _assert_nowhere(WRONG, info.value)
    _assert_nowhere(quote(WRONG, safe=""), info.value)
