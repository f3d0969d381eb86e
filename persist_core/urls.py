"""Backend URLs: parsing the few forms the core understands, and masking passwords for messages."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from persist_core.errors import ConfigurationError

__all__ = ["check_credentials", "mask_url", "parse_options", "path_of", "scheme_of"]

# The password runs to the LAST "@" of the URL (up to white space): users paste raw passwords with "/", "#",
# "?" or "@" in them, and a password must never show. A URL with an "@" after its host loses some of its tail
# in messages instead; that is the price of never printing a secret.
_SCHEME_NAME = r"[a-zA-Z][a-zA-Z0-9+.\-]*"
_USERINFO_PASSWORD = re.compile(rf"(?P<head>{_SCHEME_NAME}://[^\s/@:?#]*:)(?P<pw>\S*)(?P<at>@)")
_SCHEME = re.compile(rf"^({_SCHEME_NAME}):")
_AUTHORITY_START = re.compile(rf"^{_SCHEME_NAME}://")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|pass|pwd)=)(?P<pw>[^&\s]*)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (userinfo and ``password=`` query parameters)."""
    masked = _USERINFO_PASSWORD.sub(r"\g<head>***\g<at>", url)
    return _QUERY_PASSWORD.sub(r"\g<head>***", masked)


def check_credentials(url: str) -> None:
    """Refuse a URL whose user name or password holds a raw ``@`` or ``/``.

    Parsers split such a URL at the wrong place: SQLAlchemy reads ``user:pa@ss@host`` as the host
    ``ss@host``, and the driver's "cannot resolve host" error then quotes a piece of the password where no
    masking can recognise it. A URL without an authority (``sqlite:////path``, ``file:``) is not checked.

    Raises:
        ConfigurationError: naming the fix (percent-encoding), with the URL masked.
    """
    match = _AUTHORITY_START.match(url)
    if match is None:
        return
    rest = url[match.end() :].split("?", 1)[0]
    at = rest.rfind("@")
    if at > 0 and not rest.startswith("/") and ("@" in rest[:at] or "/" in rest[:at]):
        raise ConfigurationError(
            f"the user name or password in {mask_url(url)!r} holds a raw '@' or '/': percent-encode them "
            "(urllib.parse.quote(password, safe='')), or the URL is split at the wrong place"
        )


def scheme_of(url: str) -> str:
    """The URL scheme without a driver suffix, lower case: ``postgresql+psycopg://`` -> ``postgresql``."""
    match = _SCHEME.match(url)
    if match is None:
        raise ConfigurationError(f"not a backend URL (no scheme): {mask_url(url)!r}")
    return match.group(1).split("+", 1)[0].lower()


def path_of(url: str, default: str) -> str:
    """The filesystem path of a ``file:`` / ``jsonl:`` URL (``file:./dump``, ``file:///abs``)."""
    rest = url.split(":", 1)[1].split("?", 1)[0]
    if rest.startswith("//"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(f"a {scheme_of(url)} URL names a local path, not a host: {mask_url(url)!r}")
        rest = parts.path
    return rest or default


def parse_options(url: str) -> dict[str, str]:
    """The query parameters of ``url`` as a dict (last one wins)."""
    query = url.split("?", 1)[1] if "?" in url else ""
    return dict(parse_qsl(query, keep_blank_values=True))
