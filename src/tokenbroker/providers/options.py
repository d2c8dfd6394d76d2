"""The ``oauth2`` provider's options, read from ``ProviderConfig.options`` and checked.

Every option is checked when the provider is built: an unknown name, a wrong type
or a value out of range is a one-line ``ConfigError`` naming the option (and
never quoting a secret). The options, with their defaults:

* ``token_url`` (required): the token endpoint, an absolute ``https`` URL
  (``http`` only on a loopback host, for tests and sidecars);
* ``client_id``: default the app id; ``client_secret`` or ``client_secret_file``
  (a file holding it; surrounding whitespace is dropped): default the app secret;
* ``scope`` (a string of space-separated scopes, or a list of them) and
  ``audience``: sent when set;
* ``extra``: a table of more form parameters (strings or numbers), which may not
  replace the ones the provider sets itself;
* ``auth_method``: ``client_secret_basic`` (default: HTTP Basic, RFC 6749 2.3.1)
  or ``client_secret_post`` (the credentials in the form body);
* ``tenant_param``: the form field that carries the instance id, for APIs that
  mint per-tenant tokens; unset, the instance id is not sent at all;
* ``default_lifetime``: seconds a token lives when the answer has no
  ``expires_in`` (default 3600; positive);
* ``timeout`` and ``max_attempts``: per request, and requests per fetch (default
  the broker's ``timeout`` and ``max_attempts``);
* ``request_id_header``: the answer header that names it for the server's
  support (default ``x-request-id``).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import attrs
import httpx2

from ..core.errors import ConfigError
from ..core.protocols import ProviderConfig
from ..core.secret import Secret

AuthMethod = Literal["client_secret_basic", "client_secret_post"]

AUTH_METHODS: Final[tuple[AuthMethod, ...]] = ("client_secret_basic", "client_secret_post")
DEFAULT_LIFETIME: Final = 3600.0
MAX_LIFETIME: Final = 366 * 86400.0
"""The longest lifetime accepted, from ``expires_in`` or ``default_lifetime``."""
MAX_ATTEMPTS: Final = 10
MAX_TIMEOUT: Final = 300.0
DEFAULT_REQUEST_ID_HEADER: Final = "x-request-id"

KNOWN: Final = (
    "audience",
    "auth_method",
    "client_id",
    "client_secret",
    "client_secret_file",
    "default_lifetime",
    "extra",
    "max_attempts",
    "request_id_header",
    "scope",
    "tenant_param",
    "timeout",
    "token_url",
)
RESERVED: Final = frozenset({"grant_type", "client_id", "client_secret"})
"""Form fields the provider sets and no other option may set (RFC 6749 4.4.2, 2.3.1)."""

# RFC 6749 appendix A: VSCHAR for client ids, NQCHAR for scope tokens.
_VSCHAR: Final = re.compile(r"[\x20-\x7e]+")
_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_FIELD: Final = re.compile(r"[A-Za-z0-9_.:\[\]-]{1,100}")
_HEADER: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_MAX_TEXT: Final = 4096


def _error(option: str, why: str) -> ConfigError:
    return ConfigError(f"oauth2 provider option {option!r} {why}")


def _text(option: str, value: object, *, pattern: re.Pattern[str] | None = None) -> str:
    """A non-empty one-line string; quoted in errors only when it matched nothing secret."""
    if not isinstance(value, str):
        raise _error(option, f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise _error(option, "is empty")
    if len(value) > _MAX_TEXT:
        raise _error(option, f"is {len(value)} characters long (at most {_MAX_TEXT})")
    if _CONTROL.search(value):
        raise _error(option, "contains control characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise _error(option, f"{value[:60]!r} has characters it may not hold")
    return value


def _number(option: str, value: object, *, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _error(option, f"must be a number of seconds, not {type(value).__name__}")
    if not 0 < value <= high:  # also false for NaN
        raise _error(option, f"must be above 0 and at most {high:g} seconds, not {value!r}")
    return float(value)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_url(value: object) -> str:
    """``value`` as the token endpoint's URL: absolute, ``https`` (``http`` on loopback
    only: the client secret must not cross a network in the clear), without
    credentials or a fragment."""
    text = _text("token_url", value)
    try:
        url = httpx2.URL(text)
    except Exception:  # httpx2's InvalidURL and whatever a parser may raise
        raise _error("token_url", f"{text[:80]!r} is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise _error("token_url", f"{text[:80]!r} must be an absolute http(s) URL")
    if url.userinfo:
        raise _error("token_url", "must not carry credentials (use client_id and client_secret)")
    if url.fragment:
        raise _error("token_url", "must not have a fragment")
    if url.scheme == "http" and not _is_loopback(url.host):
        raise _error("token_url", f"must use https (http only on a loopback host, not {url.host})")
    return str(url)


def scope(value: object) -> str:
    """Space-separated scope tokens (RFC 6749 3.3), from a string or a list."""
    if isinstance(value, str):
        parts = value.split(" ")
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        raise _error("scope", f"must be a string or a list of strings, not {type(value).__name__}")
    tokens = [_text("scope", part, pattern=_SCOPE_TOKEN) for part in parts if part != ""]
    if not tokens:
        raise _error("scope", "is empty")
    return " ".join(dict.fromkeys(tokens))


def _field_name(option: str, value: object, taken: frozenset[str]) -> str:
    name = _text(option, value, pattern=_FIELD)
    if name in taken:
        raise _error(option, f"may not set the form field {name!r}: the provider sets it")
    return name


def extra(value: object, taken: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """The ``extra`` table as (field, value) pairs; numbers are sent as written."""
    if not isinstance(value, Mapping):
        raise _error("extra", f"must be a table of form parameters, not {type(value).__name__}")
    pairs = []
    for name, item in value.items():
        field = _field_name("extra", name, taken)
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise _error("extra", f"parameter {field!r} must be a string or a number")
        if isinstance(item, float) and not math.isfinite(item):
            raise _error("extra", f"parameter {field!r} must be finite")
        pairs.append((field, _text(f"extra.{field}", str(item))))
    return tuple(pairs)


def _secret(options: Mapping[str, Any], fallback: Secret) -> Secret:
    given, path = options.get("client_secret"), options.get("client_secret_file")
    if given is not None and path is not None:
        raise ConfigError(
            "oauth2 provider options 'client_secret' and 'client_secret_file' "
            "are exclusive: set one"
        )
    if path is not None:
        where = Path(_text("client_secret_file", path))
        try:
            given = where.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise _error("client_secret_file", f"cannot be read ({where}: {why})") from None
        if not given:
            raise _error("client_secret_file", f"names an empty file ({where})")
    if given is None:
        if not fallback.reveal().strip():
            raise ConfigError(
                "oauth2 provider has no client secret: set the option "
                "'client_secret' or 'client_secret_file', or the app secret"
            )
        return fallback
    value = given.reveal() if isinstance(given, Secret) else given
    if not isinstance(value, str):
        raise _error("client_secret", f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise _error("client_secret", "is empty")
    if _CONTROL.search(value):
        raise _error("client_secret", "contains control characters")
    return Secret(value)


@attrs.frozen
class OAuth2Options:
    """The checked options of one ``oauth2`` provider (see the module docstring)."""

    token_url: str
    client_id: str
    client_secret: Secret = attrs.field(repr=False)
    scope: str | None = None
    audience: str | None = None
    extra: tuple[tuple[str, str], ...] = ()
    auth_method: AuthMethod = "client_secret_basic"
    tenant_param: str | None = None
    default_lifetime: float = DEFAULT_LIFETIME
    timeout: float = 10.0
    max_attempts: int = 3
    request_id_header: str = DEFAULT_REQUEST_ID_HEADER

    @classmethod
    def from_config(cls, config: ProviderConfig) -> OAuth2Options:
        """Read and check ``config.options``; the app id and secret are the defaults
        of ``client_id`` and ``client_secret``, the broker's timeout and attempts
        those of ``timeout`` and ``max_attempts``."""
        options: Mapping[str, Any] = getattr(config, "options", None) or {}
        if not isinstance(options, Mapping):
            raise ConfigError(
                f"oauth2 provider options must be a table, not {type(options).__name__}"
            )
        for name in options:
            if name not in KNOWN:
                raise ConfigError(
                    f"unknown oauth2 provider option {str(name)[:60]!r} (known: {', '.join(KNOWN)})"
                )
        if options.get("token_url") is None:
            raise ConfigError(
                "oauth2 provider option 'token_url' is required (the URL of the token endpoint)"
            )
        method = options.get("auth_method", AUTH_METHODS[0])
        if method not in AUTH_METHODS:
            raise _error(
                "auth_method", f"must be one of {', '.join(AUTH_METHODS)}, not {str(method)[:60]!r}"
            )
        tenant = options.get("tenant_param")
        if tenant is not None:
            tenant = _field_name("tenant_param", tenant, RESERVED | {"scope", "audience"})
        taken = RESERVED | {"scope", "audience"} | ({tenant} if tenant else set())
        attempts = options.get("max_attempts")
        if attempts is None:  # the broker's, as the Wix provider takes it
            attempts = max(1, config.max_attempts)
        elif isinstance(attempts, bool) or not isinstance(attempts, int):
            raise _error("max_attempts", f"must be a whole number, not {type(attempts).__name__}")
        elif not 1 <= attempts <= MAX_ATTEMPTS:
            raise _error("max_attempts", f"must be between 1 and {MAX_ATTEMPTS}, not {attempts}")
        timeout = options.get("timeout")
        audience = options.get("audience")
        return cls(
            token_url=token_url(options["token_url"]),
            client_id=_text("client_id", options.get("client_id", config.app_id), pattern=_VSCHAR),
            client_secret=_secret(options, config.app_secret),
            scope=None if options.get("scope") is None else scope(options["scope"]),
            audience=None if audience is None else _text("audience", audience),
            extra=extra(options.get("extra", {}), frozenset(taken)),
            auth_method=method,
            tenant_param=tenant,
            default_lifetime=_number(
                "default_lifetime",
                options.get("default_lifetime", DEFAULT_LIFETIME),
                high=MAX_LIFETIME,
            ),
            timeout=config.timeout
            if timeout is None
            else _number("timeout", timeout, high=MAX_TIMEOUT),
            max_attempts=attempts,
            request_id_header=_text(
                "request_id_header",
                options.get("request_id_header", DEFAULT_REQUEST_ID_HEADER),
                pattern=_HEADER,
            ).lower(),
        )
