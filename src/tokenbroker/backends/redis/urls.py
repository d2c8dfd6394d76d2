"""Reading a Redis store URL into a ``RedisTarget``, before any client exists.

``redis://``, ``rediss://`` (TLS) and ``unix://`` are read as redis-py reads
them; ``redis+sentinel://`` and ``redis+cluster://`` (and their ``rediss+``
forms) list several hosts, which redis-py's own URL parser cannot. Query
options are checked and typed here, so a misspelt one is a ``ConfigError``
naming the URL (its passwords redacted) rather than a surprise later.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeAlias, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import attrs
from redis.connection import URL_QUERY_ARGUMENT_PARSERS

from ...core.errors import ConfigError
from ..urls import redact_url, scheme_of

__all__ = ["Kind", "RedisTarget", "check_key_prefix", "parse_redis_url"]

SENTINEL_PORT: Final = 26379
REDIS_PORT: Final = 6379

_PREFIX_MAX: Final = 100

Kind: TypeAlias = Literal["standalone", "sentinel", "cluster"]

_SCHEMES: Final[Mapping[str, tuple[Kind, bool]]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "unix": ("standalone", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
# Query options this store reads itself and never hands to redis-py.
_OWN_OPTIONS: Final = frozenset({"key_prefix"})
# redis-py's typed URL options, minus those that would break our clients:
# "timeout" belongs to blocking pools only, "retry_on_error" cannot be spelled
# in a URL, and replies must stay bytes.
_TYPED_OPTIONS: Final[Mapping[str, Callable[[str], Any]]] = {
    name: cast("Callable[[str], Any]", parser)
    for name, parser in URL_QUERY_ARGUMENT_PARSERS.items()
    if name not in ("timeout", "retry_on_error")
}
_TEXT_OPTIONS: Final = frozenset(
    {
        "username",
        "password",
        "client_name",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_password",
        "ssl_ciphers",
    }
)
_DB_PATH: Final = re.compile(r"/?(\d*)/?")


@attrs.frozen
class RedisTarget:
    """What a Redis store URL asks for, before any client exists.

    ``redis_url`` (standalone only) is the URL handed to redis-py, without
    this store's own options; ``nodes`` are the sentinels or cluster startup
    nodes; ``options`` are redis-py connection options from the query, typed.
    """

    kind: Kind
    ssl: bool
    redis_url: str | None = attrs.field(default=None, repr=False)
    nodes: tuple[tuple[str, int], ...] = ()
    service_name: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    options: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    key_prefix: str | None = None


def _truthy(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "f", "false", "n", "no", "off")


def _query(printable: str, query: str, kind: Kind, ssl: bool) -> tuple[dict[str, Any], str | None]:
    options: dict[str, Any] = {}
    key_prefix: str | None = None
    seen: set[str] = set()
    pairs = parse_qsl(query, keep_blank_values=True)
    if kind != "standalone":  # "?ssl=true" allows TLS options wherever it stands
        ssl = ssl or any(n == "ssl" and _truthy(v) for n, v in pairs)
    allowed_text = _TEXT_OPTIONS if ssl else {n for n in _TEXT_OPTIONS if not n.startswith("ssl_")}
    for name, value in pairs:
        if name in seen:
            raise ConfigError(f"option {name!r} is given more than once in {printable}")
        seen.add(name)
        if name in _OWN_OPTIONS:
            key_prefix = value
        elif name == "db" and kind == "cluster":
            raise ConfigError(f"Redis Cluster has only database 0; drop 'db' from {printable}")
        elif name == "ssl" and kind != "standalone":
            options["ssl"] = _truthy(value)
        elif name in _TYPED_OPTIONS and (ssl or not name.startswith("ssl_")):
            try:
                options[name] = _TYPED_OPTIONS[name](value)
            except (TypeError, ValueError):
                raise ConfigError(f"option {name!r} has an invalid value in {printable}") from None
        elif name in allowed_text:
            options[name] = value
        else:
            hint = " (TLS options need a rediss scheme)" if name.startswith("ssl") else ""
            raise ConfigError(f"unknown Redis URL option {name!r} in {printable}{hint}")
    return options, key_prefix


def _userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return None, None, netloc
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None), hosts


def _nodes(printable: str, hosts: str, default_port: int) -> tuple[tuple[str, int], ...]:
    nodes: list[tuple[str, int]] = []
    for part in hosts.split(","):
        text = part.strip()
        if text.startswith("["):  # [IPv6]:port
            host, bracket, rest = text[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ConfigError(f"cannot read host {text!r} in {printable}")
            port_text = rest[1:]
        else:
            host, _, port_text = text.partition(":")
        if not host:
            raise ConfigError(f"a host is missing in {printable}")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ConfigError(f"port {port_text!r} is not a number in {printable}") from None
        if not 0 < port < 65536:
            raise ConfigError(f"port {port} is out of range in {printable}")
        nodes.append((unquote(host), port))
    return tuple(nodes)


def parse_redis_url(url: str) -> RedisTarget:
    """Read a Redis store URL; a malformed one is a ``ConfigError`` naming it (redacted).

    * ``redis://[[user]:password@]host[:port][/db]``, ``rediss://…`` (TLS),
      ``unix://[[user]:password@]/path/to/redis.sock[?db=N]``: as redis-py reads them;
    * ``redis+sentinel://[[user]:password@]host[:port][,host2[:port2]…]/service[/db]``:
      sentinels (port 26379 by default) that name the master of ``service``; the
      password is the master's (sentinels that need one take ``sentinel_kwargs``
      in ``client_options``);
    * ``redis+cluster://[[user]:password@]host[:port][,host2[:port2]…]``: startup
      nodes of a Redis Cluster.

    ``rediss+sentinel``/``rediss+cluster`` (or ``?ssl=true``) use TLS. Query
    options are redis-py's (``socket_timeout``, ``socket_connect_timeout``,
    ``db``, ``client_name``, ``ssl_*``, …) plus ``key_prefix``.
    """
    printable = redact_url(url)
    if not isinstance(url, str):
        raise ConfigError(f"a Redis URL must be a string, not {type(url).__name__}")
    scheme = scheme_of(url)
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"{printable!r} is not a Redis URL; expected one of "
            + ", ".join(f"{s}://" for s in _SCHEMES)
        )
    kind, ssl = _SCHEMES[scheme]
    try:
        parts = urlsplit(url.strip())
    except ValueError as error:  # an unbalanced "[" around an IPv6 address
        raise ConfigError(f"cannot read {printable}: {error}") from None
    options, key_prefix = _query(printable, parts.query, kind, ssl)
    if parts.fragment:
        raise ConfigError(f"a Redis URL has no '#fragment': {printable}")

    if kind == "standalone":
        if scheme == "unix":
            if not parts.path.strip("/"):
                raise ConfigError(f"no socket path in {printable}")
            db = options.get("db", 0)
        else:
            try:
                parts.port  # noqa: B018 - urllib checks the port when asked for it
            except ValueError:
                raise ConfigError(f"the port in {printable} is not a number 0-65535") from None
            match = _DB_PATH.fullmatch(parts.path)
            if match is None:
                raise ConfigError(f"the path of {printable} must be a database number, like /0")
            db = options.get("db", int(match.group(1) or 0))
        # The same URL minus our own options: redis-py reads the rest.
        query = urlencode(
            [
                (n, v)
                for n, v in parse_qsl(parts.query, keep_blank_values=True)
                if n not in _OWN_OPTIONS
            ],
            quote_via=quote,
        )
        username, password, _ = _userinfo(parts.netloc)
        return RedisTarget(
            kind=kind,
            ssl=ssl,
            # Not urlunsplit: it drops the "//" of "unix:///path", which redis-py needs.
            redis_url=f"{parts.scheme}://{parts.netloc}{parts.path}"
            + (f"?{query}" if query else ""),
            db=db,
            username=username or options.get("username"),
            password=password or options.get("password"),
            options=options,
            key_prefix=key_prefix,
        )

    username, password, hosts = _userinfo(parts.netloc)
    default_port = SENTINEL_PORT if kind == "sentinel" else REDIS_PORT
    nodes = _nodes(printable, hosts, default_port)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    service_name: str | None = None
    db = 0
    if kind == "sentinel":
        if not segments or len(segments) > 2:
            raise ConfigError(
                f"a Sentinel URL names the service and maybe a database: "
                f"redis+sentinel://host:26379/mymaster/0, not {printable}"
            )
        service_name = segments[0]
        if len(segments) == 2:
            if not segments[1].isdigit():
                raise ConfigError(f"database {segments[1]!r} is not a number in {printable}")
            db = int(segments[1])
        db = int(options.pop("db", db))
    elif segments not in ([], ["0"]):
        raise ConfigError(f"Redis Cluster has only database 0; drop the path from {printable}")
    ssl = bool(options.pop("ssl", ssl))
    # The userinfo wins over ?username=/?password=, as in redis-py.
    query_username, query_password = options.pop("username", None), options.pop("password", None)
    return RedisTarget(
        kind=kind,
        ssl=ssl,
        nodes=nodes,
        service_name=service_name,
        db=db,
        username=username or query_username,
        password=password or query_password,
        options=options,
        key_prefix=key_prefix,
    )


def check_key_prefix(prefix: str, printable: str) -> str:
    """``prefix``, if it can start every key of a store; else a ``ConfigError``."""
    if not isinstance(prefix, str) or not prefix or len(prefix) > _PREFIX_MAX:
        raise ConfigError(f"key_prefix must be 1-{_PREFIX_MAX} characters ({printable})")
    # Braces would move the hash tag; spaces and control characters make keys
    # that redis-cli users cannot type.
    if any(ch in "{}" or not ch.isprintable() or ch.isspace() for ch in prefix):
        raise ConfigError(
            f"key_prefix {prefix!r} must not contain braces, spaces or control characters"
        )
    return prefix
