"""Backend URLs: parsing the few forms the core understands, and masking passwords for messages."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import ParamSpec, Protocol, TypeAlias, TypeVar
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

from persist_core.errors import ConfigurationError, PersistError

__all__ = [
    "BOOLEAN_WORDS",
    "MaskedDriverError",
    "RenderableUrl",
    "UrlLike",
    "check_credentials",
    "check_keywords",
    "check_options",
    "describe_options",
    "driver_of",
    "is_secret_option",
    "mask_url",
    "masks_driver_errors",
    "parse_boolean",
    "parse_options",
    "path_of",
    "refuse_options",
    "scheme_of",
    "scrub_chain",
    "secrets_of",
    "url_text",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Which parts of a URL are secret (docs/decisions.md, "Masking errs towards hiding"):
#  - the userinfo password: from the ":" after the user name to the LAST "@" on the same line before the next
#    URL starts, white space included. People paste raw passwords with " ", "/", "#", "?" or "@" in them, and
#    a password must never show; a URL with an "@" after its host loses some of its tail in messages instead.
#    An already masked "***@" is left as it is, so masking twice changes nothing.
#  - the value of every query parameter whose percent-decoded, lower-cased name contains "pass", "pwd",
#    "secret", "token" or "credential", ends with "key", or is "authmechanismproperties" (it can carry an AWS
#    session token): up to the next "&" or the end of the line. That covers password/pass/pwd, PyMySQL's
#    passwd, libpq's sslpassword and pymongo's tlsCertificateKeyFilePassword; it also hides key file paths.
# "_" for SQLAlchemy driver names (postgresql+psycopg_async), which RFC 3986 schemes do not have.
_SCHEME_NAME = r"[a-zA-Z][a-zA-Z0-9+._\-]*"
_NEXT_URL = rf"[\s'\"(<\[,;=]{_SCHEME_NAME}://"
_USERINFO_PASSWORD = re.compile(
    rf"(?P<head>{_SCHEME_NAME}://[^/@:?#\r\n]*:)(?P<pw>\*\*\*(?=@)|(?:(?!{_NEXT_URL})[^\r\n])*)(?P<at>@)"
)
_SCHEME = re.compile(rf"^({_SCHEME_NAME}):")
_AUTHORITY_START = re.compile(rf"^{_SCHEME_NAME}://")
_QUERY_PARAMETER = re.compile(r"(?P<head>[?&](?P<name>[^=&\s]+)=)(?P<value>\*\*\*(?=[&'\")\]]|\s|$)|[^&\r\n]*)")
_SECRET_NAME_PARTS = ("pass", "pwd", "secret", "token", "credential")


def is_secret_option(name: str) -> bool:
    """Whether the query parameter ``name`` holds a secret, so that its value is masked."""
    name = unquote_plus(name).lower()
    return any(part in name for part in _SECRET_NAME_PARTS) or name.endswith("key") or name == "authmechanismproperties"


def _mask_parameter(match: re.Match[str]) -> str:
    return f"{match['head']}***" if is_secret_option(match["name"]) else match[0]


def mask_url(url: str) -> str:
    """``url`` (or a text quoting URLs) with every secret replaced by ``***``.

    Secret are the userinfo password and the values of secret query parameters (:func:`is_secret_option`);
    the rule is spelled out in docs/decisions.md.
    """
    masked = _USERINFO_PASSWORD.sub(r"\g<head>***\g<at>", url)
    return _QUERY_PARAMETER.sub(_mask_parameter, masked)


def secrets_of(url: str) -> list[str]:
    """The secrets that :func:`mask_url` hides in ``url``, as written and percent-decoded, longest first."""
    found: set[str] = set()
    for match in _USERINFO_PASSWORD.finditer(url):
        found.add(match["pw"])
    for match in _QUERY_PARAMETER.finditer(_USERINFO_PASSWORD.sub("", url)):
        if is_secret_option(match["name"]):
            found.add(match["value"])
    found.update([unquote(s) for s in found] + [unquote_plus(s) for s in found])
    return sorted((s for s in found if s and s != "***"), key=len, reverse=True)


class MaskedDriverError(Exception):
    """Stands in for a driver's exception in the chain of a :class:`PersistError`.

    Drivers keep the connection's settings on their exceptions: psycopg's ``pgconn`` holds the password in
    clear (``exc.__cause__.pgconn.password``), where any error reporter that walks an exception's attributes
    finds it. The stand-in keeps what a reader needs, the driver's exception type, its error code and its
    message masked by :func:`mask_url`, and no reference to the driver's objects or frames.

    Attributes:
        driver_type: the qualified name of the driver's exception class.
        code: the driver's error code (SQLSTATE, MySQL error number, MongoDB code), or ``None``.
    """

    def __init__(self, original: BaseException) -> None:
        kind = type(original)
        self.driver_type = f"{kind.__module__}.{kind.__qualname__}"
        self.code = _driver_code(original)
        super().__init__(mask_url(f"{self.driver_type}: {original}"))


def _driver_code(error: BaseException) -> str | int | None:
    # The MySQL drivers' error number first: PyMySQL also sets a generic sqlstate that says less.
    args = getattr(error, "args", ())
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        return args[0]
    for name in ("sqlstate", "code", "sqlite_errorname"):
        value = getattr(error, name, None)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return value
    return None


def scrub_chain(error: BaseException) -> None:
    """Replace every driver exception in ``error``'s ``__cause__``/``__context__`` chain by a stand-in.

    Persist errors in the chain are kept (and scrubbed in turn); anything else becomes a
    :class:`MaskedDriverError` without a chain of its own, since the driver's exceptions and their own causes
    may hold the password in their attributes.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause, context = current.__cause__, current.__context__
        if cause is not None and not isinstance(cause, PersistError | MaskedDriverError):
            current.__cause__ = MaskedDriverError(cause)
        if context is not None and not isinstance(context, PersistError | MaskedDriverError):
            # An explicit cause already says it; otherwise the stand-in takes the context's place.
            current.__context__ = None if cause is not None else MaskedDriverError(context)
        following = current.__cause__ if current.__cause__ is not None else current.__context__
        current = following if isinstance(following, PersistError) else None


def masks_driver_errors(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Decorate a backend method so that a :class:`PersistError` leaving it has a scrubbed chain.

    ``raise translated from exc`` inside an ``except`` clause chains the driver's exception twice
    (``__cause__`` and the implicit ``__context__``), and no ``raise`` in that clause can avoid the second;
    so the chain is scrubbed (:func:`scrub_chain`) on the way out, where a bare ``raise`` leaves it as it is.
    """

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except PersistError as error:
            scrub_chain(error)
            raise

    return wrapper


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


class RenderableUrl(Protocol):
    """A URL object that renders itself as text: ``sqlalchemy.URL``."""

    def render_as_string(self, hide_password: bool = ...) -> str:
        """The URL as text, with its password when ``hide_password`` is false."""
        ...


#: What ``setup()`` takes as a backend URL: text, or a ``sqlalchemy.URL``.
UrlLike: TypeAlias = str | RenderableUrl


def url_text(url: object, what: str) -> str:
    """``url`` as text: a ``str`` as it is, a ``sqlalchemy.URL`` rendered with its password.

    The rendered password stays inside the library, as a password written into a URL string does: every
    message, log line and repr masks it (:func:`mask_url`).

    Raises:
        ConfigurationError: ``url`` is neither; the message names its type only, never its value.
    """
    if isinstance(url, str):
        return url
    render = getattr(url, "render_as_string", None)
    if callable(render):
        text = render(hide_password=False)
        if isinstance(text, str):
            return text
    raise ConfigurationError(f"{what} must be a URL string or a sqlalchemy.URL, not {type(url).__name__}")


def scheme_of(url: str) -> str:
    """The URL scheme without a driver suffix, lower case: ``postgresql+psycopg://`` -> ``postgresql``."""
    match = _SCHEME.match(url)
    if match is None:
        raise ConfigurationError(f"not a backend URL (no scheme): {mask_url(url)!r}")
    return match.group(1).split("+", 1)[0].lower()


def driver_of(url: str) -> str:
    """The driver suffix of the URL scheme, lower case, or ``""``: ``postgresql+psycopg://`` -> ``psycopg``."""
    scheme_of(url)
    return url.partition(":")[0].partition("+")[2].lower()


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


#: The words a boolean option accepts, in any case.
BOOLEAN_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}
_BOOLEAN_HELP = "a boolean: 1/0, true/false, yes/no, on/off"


def refuse_options(url: str, backend: str) -> None:
    """Raise :class:`ConfigurationError` if ``url`` has a query: the ``backend`` takes no options."""
    if "?" in url:
        raise ConfigurationError(f"the {backend} backend has no options: {mask_url(url)!r}; known: none")


def parse_boolean(url: str, name: str, value: str) -> bool:
    """The boolean option ``name=value`` of ``url``; any other word is a :class:`ConfigurationError`."""
    parsed = BOOLEAN_WORDS.get(value.strip().lower())
    if parsed is None:
        raise ConfigurationError(
            f"bad option {name}={mask_url(value)!r} in {mask_url(url)!r}: expected {_BOOLEAN_HELP}"
        )
    return parsed


def describe_options(known: dict[str, str]) -> str:
    """``known`` (option name -> what it accepts) as one line for a message."""
    return ", ".join(f"{name} ({help})" if help else name for name, help in sorted(known.items())) or "none"


def check_keywords(url: str, options: Mapping[str, object], known: dict[str, str]) -> None:
    """Refuse a keyword option (``setup(options={scheme: {...}})``) that is not in ``known``.

    Raises:
        ConfigurationError: naming the unknown options and listing the known ones.
    """
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigurationError(
            f"unknown keyword option(s) {', '.join(unknown)} for {mask_url(url)!r}; known: {describe_options(known)}"
        )


def check_options(url: str, query: dict[str, str], known: dict[str, str], *, passes_through: str = "") -> None:
    """Refuse a query option of ``url`` that is not in ``known`` (option name -> what it accepts).

    A typo (``durabilty=process``) would otherwise be ignored and the backend run with the default, silently.
    ``passes_through`` names the driver options that are accepted too, for the message.

    Raises:
        ConfigurationError: naming the unknown options and listing the known ones.
    """
    unknown = sorted(name for name in query if name not in known)
    if unknown:
        names = ", ".join(mask_url(name) for name in unknown)
        also = f"; {passes_through}" if passes_through else ""
        raise ConfigurationError(
            f"unknown option(s) {names} in {mask_url(url)!r}; known: {describe_options(known)}{also}"
        )
