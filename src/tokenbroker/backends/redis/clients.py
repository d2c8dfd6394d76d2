"""The Redis store's redis-py clients: built for a ``RedisTarget`` (standalone,
Sentinel or Cluster), kept, closed, and their errors turned into clean ones.

One sync client serves every thread. redis.asyncio connections are bound to
the loop that made them, so each event loop gets an async client of its own,
held weakly by its loop. Each client comes wrapped in a port that implements
the ``ops`` Protocols; ``run``/``arun`` drive a flow on one and turn redis-py
errors into ``StorageError`` messages without passwords or client reprs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeAlias, TypeVar, cast

import attrs
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.retry
import redis.sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from ...core.errors import ConfigError, StorageError
from ...core.flow import Flow, run_async, run_sync
from ..urls import scrub
from .ops import AsyncCommands, Commands
from .scripts import SCRIPTS, ScriptName
from .urls import RedisTarget
from .values import WRONG_TYPE, Raw

__all__ = ["DRIVER_ERRORS", "AsyncPort", "Clients", "SyncPort"]

log = logging.getLogger("tokenbroker.store")

SyncClient: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"
AsyncClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"
T = TypeVar("T")

DEFAULT_TIMEOUT: Final = 5.0
# What redis-py raises when a server is unreachable, refuses or fails a command.
DRIVER_ERRORS: Final = (RedisError, RedisClusterException, OSError)
_MAX_REASON: Final = 300


def _is_wrong_type(error: ResponseError) -> bool:
    return str(error).startswith("WRONGTYPE")


@attrs.define
class SyncPort:
    """A sync client as ``ops.Commands``, with what closes it."""

    client: SyncClient
    scripts: dict[ScriptName, Any]
    closers: list[Callable[[], None]] = attrs.field(factory=list)

    def get(self, key: str) -> Raw:
        try:
            raw = cast("bytes | None", self.client.get(key))
        except ResponseError as error:
            if _is_wrong_type(error):
                return WRONG_TYPE
            raise
        return raw

    def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return list(self.client.mget(keys))  # type: ignore[arg-type]

    def delete(self, key: str) -> int:
        return int(self.client.delete(key))

    def set_nx_px(self, key: str, value: str, ttl_ms: int) -> bool:
        return bool(self.client.set(key, value, nx=True, px=ttl_ms))

    def members_after(self, key: str, after: bytes | None, count: int) -> list[bytes]:
        low = b"-" if after is None else b"(" + after
        return list(self.client.zrangebylex(key, low, b"+", start=0, num=count))  # type: ignore[arg-type]

    def script(self, name: ScriptName, keys: Sequence[str], args: Sequence[Any]) -> int:
        return int(self.scripts[name](keys=keys, args=args))

    def close(self) -> None:
        for close in self.closers:
            close()


@attrs.define
class AsyncPort:
    """An asyncio client as ``ops.AsyncCommands``, with what closes it."""

    client: AsyncClient
    scripts: dict[ScriptName, Any]
    closers: list[Callable[[], Any]] = attrs.field(factory=list)

    async def get(self, key: str) -> Raw:
        try:
            raw = cast("bytes | None", await self.client.get(key))
        except ResponseError as error:
            if _is_wrong_type(error):
                return WRONG_TYPE
            raise
        return raw

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return list(await self.client.mget(keys))  # type: ignore[arg-type]

    async def delete(self, key: str) -> int:
        return int(await self.client.delete(key))

    async def set_nx_px(self, key: str, value: str, ttl_ms: int) -> bool:
        return bool(await self.client.set(key, value, nx=True, px=ttl_ms))

    async def members_after(self, key: str, after: bytes | None, count: int) -> list[bytes]:
        low = b"-" if after is None else b"(" + after
        return list(await self.client.zrangebylex(key, low, b"+", start=0, num=count))  # type: ignore[arg-type]

    async def script(self, name: ScriptName, keys: Sequence[str], args: Sequence[Any]) -> int:
        return int(await self.scripts[name](keys=keys, args=args))

    async def aclose(self) -> None:
        for close in self.closers:
            await close()


class Clients:
    """The clients of one store, made on first use and anew after a close.

    ``url`` is the redacted URL and ``passwords`` what to scrub from messages;
    ``client_options`` go to every client, the URL's query options win over them.
    """

    def __init__(
        self,
        target: RedisTarget,
        *,
        url: str,
        passwords: tuple[str, ...],
        client_options: Mapping[str, Any],
    ) -> None:
        self.target = target
        self.url = url
        self._client_options = dict(client_options)
        if self._client_options.get("decode_responses"):
            raise ConfigError("the Redis store reads bytes: decode_responses cannot be set")
        for options in (self._client_options, self._client_options.get("sentinel_kwargs") or {}):
            if isinstance(options.get("password"), str) and options["password"]:
                passwords = (*passwords, options["password"])
        self._passwords = passwords
        # Two locks: building a Cluster client connects, and no event loop
        # should wait on a lock held through that.
        self._lock = threading.Lock()
        self._alock = threading.Lock()
        self._port: SyncPort | None = None
        self._aports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncPort] = (
            weakref.WeakKeyDictionary()
        )

    # --- running flows -----------------------------------------------------------

    def run(self, what: str, flow: Flow[T]) -> T:
        """Drive ``flow`` on the sync client; a redis-py error is a ``StorageError``."""
        try:
            port: Commands = self.sync_port()  # mypy checks the port against the ops
            return run_sync(flow, port)
        except DRIVER_ERRORS as error:
            raise self.storage_error(what, error) from None

    async def arun(self, what: str, flow: Flow[T]) -> T:
        """Drive ``flow`` on this event loop's client; errors as in ``run``."""
        try:
            port: AsyncCommands = self.async_port()
            return await run_async(flow, port)
        except DRIVER_ERRORS as error:
            raise self.storage_error(what, error) from None

    def reason(self, error: BaseException) -> str:
        lines = scrub(str(error).strip(), self._passwords).splitlines()
        # redis-py appends whole client reprs to some messages: keep the sentence.
        detail = re.split(r"\s*:?\s*<redis\.", lines[0])[0] if lines else ""
        reason = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
        return reason[:_MAX_REASON]

    def storage_error(self, what: str, error: BaseException) -> StorageError:
        return StorageError(f"{what} failed on {self.url}: {self.reason(error)}")

    # --- the clients -------------------------------------------------------------

    def sync_port(self) -> SyncPort:
        port = self._port
        if port is None:
            with self._lock:
                if self._port is None:
                    self._port = self.new_sync_port()
                port = self._port
        return port

    def async_port(self) -> AsyncPort:
        loop = asyncio.get_running_loop()
        with self._alock:  # loops in several threads may share the store
            port = self._aports.get(loop)
            if port is None:
                port = self._aports[loop] = self.new_async_port()
        return port

    def close(self) -> None:
        """Close the sync client; drop the async clients of loops already closed."""
        with self._lock:
            port, self._port = self._port, None
        with self._alock:
            for loop in [loop for loop in self._aports if loop.is_closed()]:
                del self._aports[loop]
        if port is not None:
            try:
                port.close()
            except DRIVER_ERRORS as error:
                log.debug("closing %s: %s", self.url, self.reason(error))

    async def aclose(self) -> None:
        """Close this event loop's client, then the sync client."""
        loop = asyncio.get_running_loop()
        with self._alock:
            port = self._aports.pop(loop, None)
        if port is not None:
            try:
                await port.aclose()
            except DRIVER_ERRORS as error:
                log.debug("closing %s: %s", self.url, self.reason(error))
        self.close()

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

    def _bad_settings(self, error: Exception) -> ConfigError:
        return ConfigError(
            f"bad Redis settings for {self.url}: {scrub(str(error).strip(), self._passwords)}"
        )

    def new_sync_port(self) -> SyncPort:
        """A new sync client for the target, wrapped; no I/O but a Cluster's discovery."""
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
            raise self._bad_settings(error) from None
        closers.insert(0, client.close)
        scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}
        return SyncPort(client, scripts, closers)

    def new_async_port(self) -> AsyncPort:
        """A new asyncio client for the target, for the running loop, wrapped."""
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
            raise self._bad_settings(error) from None
        closers.insert(0, client.aclose)
        scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}
        return AsyncPort(client, scripts, closers)
