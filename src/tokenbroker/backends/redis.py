"""``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``, ``redis+cluster://``.

One store over redis-py, with native clients on both sides: ``redis.Redis``
for the sync methods and ``redis.asyncio.Redis`` for the async twins (one per
event loop, because redis.asyncio connections are bound to the loop that made
them). No worker threads.

Key layout (``P`` is the key prefix, ``tokenbroker:`` unless the constructor or
the URL's ``?key_prefix=`` says otherwise; every id is escaped so that ``%``,
``:``, ``{`` and ``}`` never appear in it raw, which keeps keys unambiguous)::

    P{provider:app:instance}:token   string: the token as JSON, expiring with it
    P{provider:app:instance}:lease   string: the lease owner, PX ttl
    P{app}:inst:instance             string: the installation as JSON
    P{app}:installations             sorted set: every instance id of the app, score 0

The braces are Redis Cluster hash tags: a token shares its slot with its lease,
and an app's installation records share one with their index, so every script
and every multi-key command stays inside one slot (and tokens of one busy app
still spread over the whole cluster).

Guarantees, command by command:

* ``put_token`` is a Lua compare-and-set on the stored ``obtained_at``; when
  the script refuses, the stored value is read and judged in Python, and a
  value Python cannot parse is replaced only if it is still the same bytes.
* token keys expire ``expiry_grace`` seconds after the token does (or after
  the write, for a token that was already expired), so dead tokens leave by
  themselves;
* a lease is ``SET key owner NX PX ttl``; release is a Lua compare-and-delete;
* installations are read, judged by ``installation_wins`` in Python, and
  written by a Lua script only if the stored bytes did not change meanwhile
  (optimistic locking that needs no WATCH, and so works on every topology).

Times are integer microseconds since the epoch, as in the SQL store. Sentinel
and Cluster URLs are parsed and turned into redis-py's own Sentinel and
RedisCluster clients; the test suite runs against a single server only, so
those two paths are exercised as far as URL parsing and client construction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Literal, TypeAlias, TypeVar, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import attrs

from ..core.errors import ConfigError, StorageError
from ..core.flow import Flow, Op, run_async, run_sync
from ..core.installation import Installation, InstallationStatus
from ..core.protocols import Lease
from ..core.token import Token, TokenKey
from .base import installation_wins
from .codec import Corrupt, from_micros, opt_from_micros, opt_micros, text, to_micros, token_fields
from .urls import REDACTED, redact_url, scheme_of, url_passwords

try:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.retry
    import redis.asyncio.sentinel
    import redis.cluster
    import redis.retry
    import redis.sentinel
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS
    from redis.exceptions import RedisClusterException, RedisError, ResponseError
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess
    raise ConfigError(
        f"the Redis store needs redis-py (no module {_missing.name or 'redis'!r}): "
        "install it with: pip install 'tokenbroker[redis]'"
    ) from None

__all__ = [
    "DEFAULT_EXPIRY_GRACE",
    "DEFAULT_KEY_PREFIX",
    "RedisStore",
    "RedisTarget",
    "parse_redis_url",
]

log = logging.getLogger("tokenbroker.store")

DEFAULT_KEY_PREFIX: Final = "tokenbroker:"
DEFAULT_EXPIRY_GRACE: Final = 300.0
DEFAULT_TIMEOUT: Final = 5.0
SENTINEL_PORT: Final = 26379
REDIS_PORT: Final = 6379

_ITER_BATCH: Final = 500
# Optimistic writes go again when another writer got there first; every round
# has a winner, so this bounds the wait of the unluckiest of many racers.
_CAS_ATTEMPTS: Final = 64
_MAX_REASON: Final = 300
_PREFIX_MAX: Final = 100

Kind: TypeAlias = Literal["standalone", "sentinel", "cluster"]
SyncClient: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"
AsyncClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"
T = TypeVar("T")

# --- URLs ----------------------------------------------------------------------

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
_QUERY_SECRET: Final = re.compile(r"([?&][^=&#]*password=)[^&#]*", re.IGNORECASE)
_DB_PATH: Final = re.compile(r"/?(\d*)/?")


def redact(url: str) -> str:
    """``url`` without its password, in the userinfo or in a ``…password=`` option."""
    try:
        return _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, redact_url(url))
    except Exception:  # same promise as redact_url: never raise while printing
        return "<unprintable url>"


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
    printable = redact(url)
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


def _check_prefix(prefix: str, printable: str) -> str:
    if not isinstance(prefix, str) or not prefix or len(prefix) > _PREFIX_MAX:
        raise ConfigError(f"key_prefix must be 1-{_PREFIX_MAX} characters ({printable})")
    # Braces would move the hash tag; spaces and control characters make keys
    # that redis-cli users cannot type.
    if any(ch in "{}" or not ch.isprintable() or ch.isspace() for ch in prefix):
        raise ConfigError(
            f"key_prefix {prefix!r} must not contain braces, spaces or control characters"
        )
    return prefix


# --- values <-> stored bytes -------------------------------------------------


class _WrongType:
    """What a GET reads from a key holding something other than a string."""

    def __repr__(self) -> str:
        return "WRONG_TYPE"


WRONG_TYPE: Final = _WrongType()
Raw: TypeAlias = "bytes | _WrongType | None"


def _dump(document: Mapping[str, Any]) -> bytes:
    # Sorted keys: the same record always makes the same bytes.
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _load(raw: bytes | _WrongType) -> dict[str, Any]:
    if isinstance(raw, _WrongType):
        raise Corrupt("the key holds a value that is not a string")
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise Corrupt("the value is not JSON") from None
    if not isinstance(document, dict):
        raise Corrupt(f"the value is a JSON {type(document).__name__}, not an object")
    return document


def _encode_token(token: Token) -> bytes:
    return _dump(token_fields(token))


def _decode_token(key: TokenKey, raw: bytes | _WrongType) -> Token:
    doc = _load(raw)
    return Token(
        key=key,
        access_token=text(doc.get("access_token"), "access_token"),
        token_type=text(doc.get("token_type"), "token_type"),
        obtained_at=from_micros(doc.get("obtained_at"), "obtained_at"),
        expires_at=from_micros(doc.get("expires_at"), "expires_at"),
        refresh_at=opt_from_micros(doc.get("refresh_at"), "refresh_at"),
        must_refresh_at=opt_from_micros(doc.get("must_refresh_at"), "must_refresh_at"),
    )


def _encode_installation(inst: Installation) -> bytes:
    return _dump(
        {
            "app_id": inst.app_id,
            "instance_id": inst.instance_id,
            "status": inst.status.value,
            "installed_at": opt_micros(inst.installed_at),
            "removed_at": opt_micros(inst.removed_at),
            "setup_finished_at": opt_micros(inst.setup_finished_at),
            "origin_instance_id": inst.origin_instance_id,
            "updated_at": opt_micros(inst.updated_at),
            "extra": dict(inst.extra),
        }
    )


def _decode_installation(app_id: str, instance_id: str, raw: bytes | _WrongType) -> Installation:
    doc = _load(raw)
    if doc.get("app_id") != app_id or doc.get("instance_id") != instance_id:
        raise Corrupt("the record names another installation")
    try:
        status = InstallationStatus(doc.get("status"))
    except ValueError:
        raise Corrupt(f"status is {doc.get('status')!r}") from None
    extra = doc.get("extra")
    if not isinstance(extra, dict):
        raise Corrupt(f"extra is a JSON {type(extra).__name__}, not an object")
    origin = doc.get("origin_instance_id")
    if origin is not None and not isinstance(origin, str):
        raise Corrupt(f"origin_instance_id is {type(origin).__name__}")
    return Installation(
        app_id=app_id,
        instance_id=instance_id,
        status=status,
        installed_at=opt_from_micros(doc.get("installed_at"), "installed_at"),
        removed_at=opt_from_micros(doc.get("removed_at"), "removed_at"),
        setup_finished_at=opt_from_micros(doc.get("setup_finished_at"), "setup_finished_at"),
        origin_instance_id=origin,
        updated_at=opt_from_micros(doc.get("updated_at"), "updated_at"),
        extra=extra,
    )


# --- Lua -----------------------------------------------------------------------
# Every script touches the keys it is given and nothing else, all in one slot.

# KEYS[1] token; ARGV: new obtained_at (µs), new value, PXAT (ms). The script
# refuses only a parseable stored token obtained later; Python re-checks a refusal.
_LUA_PUT_NEWER: Final = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then
  local ok, stored = pcall(cjson.decode, redis.call('GET', KEYS[1]))
  if ok and type(stored) == 'table' and type(stored['obtained_at']) == 'number'
      and stored['obtained_at'] > tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
return 1
"""

# KEYS[1] token; ARGV: the bytes Python judged, new value, PXAT (ms).
_LUA_REPLACE_SEEN: Final = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' or redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
return 1
"""

# KEYS[1] token or lease; ARGV[1]: the exact value to find there before deleting.
_LUA_DELETE_IF_EQUAL: Final = """
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: record, index; ARGV: what Python read ('none' | 'string' | 'other'),
# the bytes it read, the new value, the index member.
_LUA_PUT_INSTALLATION: Final = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if ARGV[1] == 'string' then
  if kind ~= 'string' or redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
elseif ARGV[1] == 'none' then
  if kind ~= 'none' then return 0 end
elseif kind == 'none' or kind == 'string' then
  return 0
end
local index = redis.call('TYPE', KEYS[2])['ok']
if index ~= 'zset' and index ~= 'none' then
  return redis.error_reply('the installation index ' .. KEYS[2] .. ' is not a sorted set')
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[4])
return 1
"""

_SCRIPTS: Final[Mapping[str, str]] = {
    "put_token": _LUA_PUT_NEWER,
    "replace_token": _LUA_REPLACE_SEEN,
    "delete_if_equal": _LUA_DELETE_IF_EQUAL,
    "put_installation": _LUA_PUT_INSTALLATION,
}


# --- ports: the I/O a flow asks for, sync and async --------------------------------


def _is_wrong_type(error: ResponseError) -> bool:
    return str(error).startswith("WRONGTYPE")


@attrs.define
class _SyncPort:
    client: SyncClient
    scripts: dict[str, Any]
    closers: list[Callable[[], None]] = attrs.field(factory=list)

    def get(self, key: str) -> Raw:
        try:
            raw = cast("bytes | None", self.client.get(key))
        except ResponseError as error:
            if _is_wrong_type(error):
                return WRONG_TYPE
            raise
        return raw

    def mget(self, keys: list[str]) -> list[bytes | None]:
        return list(self.client.mget(keys))  # type: ignore[arg-type]

    def delete(self, key: str) -> int:
        return int(self.client.delete(key))

    def set_nx_px(self, key: str, value: str, ttl_ms: int) -> bool:
        return bool(self.client.set(key, value, nx=True, px=ttl_ms))

    def members_after(self, key: str, after: bytes | None, count: int) -> list[bytes]:
        low = b"-" if after is None else b"(" + after
        return list(self.client.zrangebylex(key, low, b"+", start=0, num=count))  # type: ignore[arg-type]

    def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> int:
        return int(self.scripts[name](keys=keys, args=args))

    def close(self) -> None:
        for close in self.closers:
            close()


@attrs.define
class _AsyncPort:
    client: AsyncClient
    scripts: dict[str, Any]
    closers: list[Callable[[], Any]] = attrs.field(factory=list)

    async def get(self, key: str) -> Raw:
        try:
            raw = cast("bytes | None", await self.client.get(key))
        except ResponseError as error:
            if _is_wrong_type(error):
                return WRONG_TYPE
            raise
        return raw

    async def delete(self, key: str) -> int:
        return int(await self.client.delete(key))

    async def set_nx_px(self, key: str, value: str, ttl_ms: int) -> bool:
        return bool(await self.client.set(key, value, nx=True, px=ttl_ms))

    async def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> int:
        return int(await self.scripts[name](keys=keys, args=args))

    async def aclose(self) -> None:
        for close in self.closers:
            await close()


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace(":", "%3A").replace("{", "%7B").replace("}", "%7D")


# --- the store ---------------------------------------------------------------------


class RedisStore:
    """Tokens, leases and installations in Redis, shared by every process.

    Thread-safe: the sync client's connection pool serves every thread. Each
    event loop that uses the store gets its own asyncio client; ``aclose()``
    closes the calling loop's client (and the sync one), ``close()`` the sync
    client only. The store stays usable after either: clients are made anew.

    ``client_options`` go to both redis-py clients (``max_connections``,
    ``health_check_interval``, and for Sentinel ``sentinel_kwargs``, …); the
    URL's query options win over them.
    """

    shared = True

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        expiry_grace: float = DEFAULT_EXPIRY_GRACE,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = redact(url)
        self._passwords = (*url_passwords(url), *self._query_passwords(url))
        self.target = parse_redis_url(url)
        from_query = self.target.key_prefix
        if from_query is not None:
            if key_prefix not in (DEFAULT_KEY_PREFIX, from_query):
                raise ConfigError(
                    f"key_prefix {key_prefix!r} conflicts with {from_query!r} in {self.url}"
                )
            key_prefix = from_query
        self.key_prefix = _check_prefix(key_prefix, self.url)
        if not (math.isfinite(expiry_grace) and expiry_grace >= 0):
            raise ConfigError(f"expiry_grace must be a non-negative number, not {expiry_grace!r}")
        self._grace_ms = math.ceil(expiry_grace * 1000)
        self._client_options = dict(client_options or {})
        if self._client_options.get("decode_responses"):
            raise ConfigError("the Redis store reads bytes: decode_responses cannot be set")
        for options in (self._client_options, self._client_options.get("sentinel_kwargs") or {}):
            if isinstance(options.get("password"), str) and options["password"]:
                self._passwords = (*self._passwords, options["password"])
        # Two locks: building a Cluster client connects, and no event loop
        # should wait on a lock held through that.
        self._lock = threading.Lock()
        self._alock = threading.Lock()
        self._port: _SyncPort | None = None
        self._aports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncPort] = (
            weakref.WeakKeyDictionary()
        )

    @staticmethod
    def _query_passwords(url: str) -> tuple[str, ...]:
        try:
            query = urlsplit(url).query
            return tuple(v for n, v in parse_qsl(query) if "password" in n.lower() and v)
        except Exception:
            return ()

    def __repr__(self) -> str:
        return f"RedisStore(url={self.url!r})"

    # --- keys ------------------------------------------------------------------

    def _token_tag(self, key: TokenKey) -> str:
        parts = (key.provider, key.app_id, key.instance_id)
        return f"{self.key_prefix}{{{':'.join(_escape(p) for p in parts)}}}"

    def token_key(self, key: TokenKey) -> str:
        """The Redis key that holds the token for ``key``."""
        return f"{self._token_tag(key)}:token"

    def lease_key(self, key: TokenKey) -> str:
        """The Redis key that holds the lease on ``key``."""
        return f"{self._token_tag(key)}:lease"

    def installation_key(self, app_id: str, instance_id: str) -> str:
        """The Redis key that holds one installation record."""
        return f"{self.key_prefix}{{{_escape(app_id)}}}:inst:{_escape(instance_id)}"

    def index_key(self, app_id: str) -> str:
        """The sorted set of every instance id of ``app_id``."""
        return f"{self.key_prefix}{{{_escape(app_id)}}}:installations"

    # --- clients ---------------------------------------------------------------

    def _options(self, retry: object) -> dict[str, Any]:
        target = self.target
        options: dict[str, Any] = {
            "socket_connect_timeout": DEFAULT_TIMEOUT,
            "socket_timeout": DEFAULT_TIMEOUT,
            # A few quick retries ride out a failover or a dropped connection;
            # redis-py's default (10, up to 1 s apart) makes a dead server slow to report.
            "retry": retry,
            **self._client_options,
            **target.options,
        }
        options.pop("sentinel_kwargs", None)
        if target.kind != "standalone":
            if target.username:
                options["username"] = target.username
            if target.password:
                options["password"] = target.password
            if target.ssl:
                options["ssl"] = True
        if target.kind == "sentinel":
            options["db"] = target.db
        return options

    def _sentinel_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        # Sentinels get the timeouts and the retry policy, never the master's
        # password (redis-py's default would give them its slow default retry).
        given = self._client_options.get("sentinel_kwargs")
        if given is not None:
            return dict(given)
        return {k: v for k, v in options.items() if k.startswith("socket_") or k == "retry"}

    def _backoff(self) -> ExponentialWithJitterBackoff:
        return ExponentialWithJitterBackoff(cap=0.5, base=0.01)

    def _new_sync_port(self) -> _SyncPort:
        target = self.target
        options = self._options(redis.retry.Retry(self._backoff(), 3))
        closers: list[Callable[[], None]] = []
        client: SyncClient
        try:
            if target.kind == "standalone":
                assert target.redis_url is not None
                client = redis.Redis.from_url(target.redis_url, **options)
            elif target.kind == "sentinel":
                assert target.service_name is not None
                sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
                    list(target.nodes),
                    sentinel_kwargs=self._sentinel_options(options),
                    **options,
                )
                client = sentinel.master_for(target.service_name)  # type: ignore[no-untyped-call]
                closers.extend(node.close for node in sentinel.sentinels)
            else:
                nodes = [
                    redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
                    for host, port in target.nodes
                ]
                client = redis.cluster.RedisCluster(startup_nodes=nodes, **options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"bad Redis settings for {self.url}: {self._scrub(error)}") from None
        closers.insert(0, client.close)
        scripts = {name: client.register_script(text) for name, text in _SCRIPTS.items()}
        return _SyncPort(client, scripts, closers)

    def _new_async_port(self) -> _AsyncPort:
        target = self.target
        options = self._options(redis.asyncio.retry.Retry(self._backoff(), 3))
        closers: list[Callable[[], Any]] = []
        client: AsyncClient
        try:
            if target.kind == "standalone":
                assert target.redis_url is not None
                client = redis.asyncio.Redis.from_url(target.redis_url, **options)
            elif target.kind == "sentinel":
                assert target.service_name is not None
                sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
                    list(target.nodes),
                    sentinel_kwargs=self._sentinel_options(options),
                    **options,
                )
                client = sentinel.master_for(target.service_name)
                closers.extend(node.aclose for node in sentinel.sentinels)
            else:
                nodes = [
                    redis.asyncio.cluster.ClusterNode(host, port) for host, port in target.nodes
                ]
                client = redis.asyncio.cluster.RedisCluster(startup_nodes=nodes, **options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"bad Redis settings for {self.url}: {self._scrub(error)}") from None
        closers.insert(0, client.aclose)
        scripts = {name: client.register_script(text) for name, text in _SCRIPTS.items()}
        return _AsyncPort(client, scripts, closers)

    @property
    def client(self) -> SyncClient:
        """The sync redis-py client, for maintenance scripts and tests."""
        try:
            return self._sync_port().client
        except (RedisError, RedisClusterException, OSError) as error:
            raise self._storage_error("connecting", error) from None

    def _sync_port(self) -> _SyncPort:
        port = self._port
        if port is None:
            with self._lock:
                if self._port is None:
                    self._port = self._new_sync_port()
                port = self._port
        return port

    def _async_port(self) -> _AsyncPort:
        loop = asyncio.get_running_loop()
        with self._alock:  # loops in several threads may share the store
            port = self._aports.get(loop)
            if port is None:
                port = self._aports[loop] = self._new_async_port()
        return port

    def close(self) -> None:
        """Close the sync client's connections (a later call opens new ones).

        An async client can only be closed on its own loop: async code calls
        ``aclose()`` on each loop that used the store. Clients of loops that
        are closed already are dropped here.
        """
        with self._lock:
            port, self._port = self._port, None
        with self._alock:
            for loop in [loop for loop in self._aports if loop.is_closed()]:
                del self._aports[loop]
        if port is not None:
            try:
                port.close()
            except (RedisError, RedisClusterException, OSError) as error:
                log.debug("closing %s: %s", self.url, self._reason(error))

    async def aclose(self) -> None:
        """Close this event loop's client, then the sync client."""
        loop = asyncio.get_running_loop()
        with self._alock:
            port = self._aports.pop(loop, None)
        if port is not None:
            try:
                await port.aclose()
            except (RedisError, RedisClusterException, OSError) as error:
                log.debug("closing %s: %s", self.url, self._reason(error))
        self.close()

    # --- errors ----------------------------------------------------------------

    def _scrub(self, error: object) -> str:
        text = str(error).strip()
        for password in self._passwords:
            text = text.replace(password, REDACTED)
        return text

    def _reason(self, error: BaseException) -> str:
        lines = self._scrub(error).splitlines()
        # redis-py appends whole client reprs to some messages: keep the sentence.
        detail = re.split(r"\s*:?\s*<redis\.", lines[0])[0] if lines else ""
        reason = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
        return reason[:_MAX_REASON]

    def _storage_error(self, what: str, error: BaseException) -> StorageError:
        return StorageError(f"{what} failed on {self.url}: {self._reason(error)}")

    def _run(self, what: str, flow: Flow[T]) -> T:
        try:
            return run_sync(flow, self._sync_port())
        except (RedisError, RedisClusterException, OSError) as error:
            raise self._storage_error(what, error) from None

    async def _arun(self, what: str, flow: Flow[T]) -> T:
        try:
            return await run_async(flow, self._async_port())
        except (RedisError, RedisClusterException, OSError) as error:
            raise self._storage_error(what, error) from None

    # --- decoding ----------------------------------------------------------------

    def _token_or_none(self, key: TokenKey, raw: Raw) -> Token | None:
        if raw is None:
            return None
        try:
            return _decode_token(key, raw)
        except Corrupt as why:
            log.warning("ignoring corrupted token for %s in %s: %s", key, self.url, why)
            return None

    def _installation_or_none(self, app_id: str, instance_id: str, raw: Raw) -> Installation | None:
        if raw is None:
            return None
        try:
            return _decode_installation(app_id, instance_id, raw)
        except Corrupt as why:
            log.warning(
                "ignoring corrupted installation %s:%s in %s: %s",
                app_id,
                instance_id,
                self.url,
                why,
            )
            return None

    # --- flows: one decision core for both clients --------------------------------

    def _get_token_flow(self, key: TokenKey) -> Flow[Token | None]:
        raw = yield Op("get", (self.token_key(key),))
        return self._token_or_none(key, raw)

    def _put_token_flow(self, token: Token) -> Flow[bool]:
        name = self.token_key(token.key)
        value = _encode_token(token)
        obtained_us = to_micros(token.obtained_at)
        expires_ms = -(-to_micros(token.expires_at) // 1000)
        # Gone with the token, but never before a reader could see a token
        # that was written already expired (freshness is the policy's call).
        keep_until_ms = max(expires_ms, int(time.time() * 1000)) + self._grace_ms
        for _ in range(_CAS_ATTEMPTS):
            wrote = yield Op("script", ("put_token", [name], [obtained_us, value, keep_until_ms]))
            if wrote:
                return True
            raw = yield Op("get", (name,))
            if raw is None or raw is WRONG_TYPE:
                continue  # gone or replaced meanwhile: the script decides again
            stored = self._token_or_none(token.key, raw)
            if stored is not None and stored.obtained_at > token.obtained_at:
                return False
            # Unreadable to Python, or an older writer slipped in: replace
            # exactly what was judged, or look again.
            replaced = yield Op("script", ("replace_token", [name], [raw, value, keep_until_ms]))
            if replaced:
                return True
        return False  # the value kept changing under us: report it unwritten

    def _delete_token_flow(self, key: TokenKey, only: str | None) -> Flow[bool]:
        name = self.token_key(key)
        if only is None:
            removed = yield Op("delete", (name,))
            return bool(removed)
        for _ in range(_CAS_ATTEMPTS):
            raw = yield Op("get", (name,))
            stored = self._token_or_none(key, raw)
            if stored is None or stored.access_token != only:
                return False
            deleted = yield Op("script", ("delete_if_equal", [name], [raw]))
            if deleted:
                return True
        return False

    def _acquire_lease_flow(self, key: TokenKey, ttl: float) -> Flow[Lease | None]:
        # Wall-clock time: the lease is judged by every host sharing the store.
        now = time.time()
        owner = secrets.token_hex(16)
        ttl_ms = max(1, math.ceil(ttl * 1000))
        taken = yield Op("set_nx_px", (self.lease_key(key), owner, ttl_ms))
        return Lease(key=key, owner=owner, expires_at=now + ttl) if taken else None

    def _release_lease_flow(self, lease: Lease) -> Flow[bool]:
        name = self.lease_key(lease.key)
        released = yield Op("script", ("delete_if_equal", [name], [lease.owner]))
        return bool(released)

    def _get_installation_flow(self, app_id: str, instance_id: str) -> Flow[Installation | None]:
        raw = yield Op("get", (self.installation_key(app_id, instance_id),))
        return self._installation_or_none(app_id, instance_id, raw)

    def _put_installation_flow(self, installation: Installation) -> Flow[bool]:
        app_id, instance_id = installation.app_id, installation.instance_id
        name = self.installation_key(app_id, instance_id)
        keys = [name, self.index_key(app_id)]
        value = _encode_installation(installation)
        for _ in range(_CAS_ATTEMPTS):
            raw = yield Op("get", (name,))
            stored = self._installation_or_none(app_id, instance_id, raw)
            if not installation_wins(installation, stored):
                return False
            if raw is None:
                seen: tuple[str, bytes] = ("none", b"")
            elif isinstance(raw, _WrongType):
                seen = ("other", b"")
            else:
                seen = ("string", raw)
            wrote = yield Op("script", ("put_installation", keys, [*seen, value, instance_id]))
            if wrote:
                return True
        raise StorageError(
            f"put_installation on {self.url}: the record of {app_id}:{instance_id} kept "
            f"changing during {_CAS_ATTEMPTS} attempts; try again"
        )

    # --- TokenStore ------------------------------------------------------------

    def get_token(self, key: TokenKey) -> Token | None:
        return self._run("get_token", self._get_token_flow(key))

    def put_token(self, token: Token) -> bool:
        return self._run("put_token", self._put_token_flow(token))

    def delete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        return self._run("delete_token", self._delete_token_flow(key, only))

    def acquire_lease(self, key: TokenKey, ttl: float) -> Lease | None:
        return self._run("acquire_lease", self._acquire_lease_flow(key, ttl))

    def release_lease(self, lease: Lease) -> bool:
        return self._run("release_lease", self._release_lease_flow(lease))

    async def aget_token(self, key: TokenKey) -> Token | None:
        return await self._arun("get_token", self._get_token_flow(key))

    async def aput_token(self, token: Token) -> bool:
        return await self._arun("put_token", self._put_token_flow(token))

    async def adelete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        return await self._arun("delete_token", self._delete_token_flow(key, only))

    async def aacquire_lease(self, key: TokenKey, ttl: float) -> Lease | None:
        return await self._arun("acquire_lease", self._acquire_lease_flow(key, ttl))

    async def arelease_lease(self, lease: Lease) -> bool:
        return await self._arun("release_lease", self._release_lease_flow(lease))

    # --- InstallationStore -------------------------------------------------------

    def get_installation(self, app_id: str, instance_id: str) -> Installation | None:
        return self._run("get_installation", self._get_installation_flow(app_id, instance_id))

    def put_installation(self, installation: Installation) -> bool:
        return self._run("put_installation", self._put_installation_flow(installation))

    async def aget_installation(self, app_id: str, instance_id: str) -> Installation | None:
        return await self._arun(
            "get_installation", self._get_installation_flow(app_id, instance_id)
        )

    async def aput_installation(self, installation: Installation) -> bool:
        return await self._arun("put_installation", self._put_installation_flow(installation))

    def iter_installations(
        self, app_id: str, *, include_removed: bool = False
    ) -> Iterator[Installation]:
        index = self.index_key(app_id)

        def batch_after(after: bytes | None) -> tuple[list[tuple[str, Raw]], bytes | None]:
            """One page of (instance id, stored value), and the member to go on after."""
            try:
                port = self._sync_port()
                members = port.members_after(index, after, _ITER_BATCH)
                ids = []
                for member in members:
                    try:
                        ids.append(member.decode())
                    except UnicodeDecodeError:
                        log.warning("ignoring a non-UTF-8 member of %s in %s", index, self.url)
                values = port.mget([self.installation_key(app_id, i) for i in ids]) if ids else []
            except (RedisError, RedisClusterException, OSError) as error:
                raise self._storage_error("iter_installations", error) from None
            last = members[-1] if len(members) == _ITER_BATCH else None
            return list(zip(ids, values, strict=True)), last

        # The first page is read now, so a broken store fails at the call, not
        # at some later next(); each page is its own pair of round trips.
        first = batch_after(None)

        def generate(page: tuple[list[tuple[str, Raw]], bytes | None]) -> Iterator[Installation]:
            while True:
                batch, last = page
                for instance_id, raw in batch:
                    found = self._installation_or_none(app_id, instance_id, raw)
                    if found is not None and (include_removed or found.active):
                        yield found
                if last is None:
                    return
                page = batch_after(last)

        return generate(first)
