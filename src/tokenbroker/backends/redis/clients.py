"""The Redis store's redis-py clients: built for a ``RedisTarget`` (standalone,
Sentinel or Cluster), kept, closed, and their errors turned into clean ones.

One sync client serves every thread. redis.asyncio connections are bound to
the loop that made them, so each event loop gets an async client of its own,
closed and forgotten when that loop shuts down (``core.loops``). Each client
comes wrapped in a port that implements the ``ops`` Protocols; ``run``/``arun``
drive a flow on one and turn redis-py errors into ``StoreUnavailable`` (an
outage) or ``StorageError`` (anything else; see ``failures``) messages without
passwords or client reprs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.retry
import redis.sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisClusterException, RedisError

from ...core.errors import ConfigError, StorageError
from ...core.flow import Flow, run_async, run_sync
from ...core.loops import on_loop_close
from ..urls import scrub
from .failures import diagnose
from .ops import AsyncCommands, Commands
from .ports import AsyncClient, AsyncPort, SyncClient, SyncPort
from .scripts import SCRIPTS
from .urls import RedisTarget

__all__ = ["DRIVER_ERRORS", "AsyncPort", "Clients", "SyncClient", "SyncPort"]

log = logging.getLogger("tokenbroker.store")

T = TypeVar("T")

DEFAULT_TIMEOUT: Final = 5.0
# What redis-py raises when a server is unreachable, refuses or fails a command.
DRIVER_ERRORS: Final = (RedisError, RedisClusterException, OSError)
_MAX_REASON: Final = 300


def _releaser(clients: weakref.ref[Clients]) -> Callable[[], Awaitable[None]]:
    async def release() -> None:
        found = clients()
        if found is not None:
            await found.release_loop()

    return release


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
        """``StoreUnavailable`` for an outage, else a plain ``StorageError``, saying
        what failed, where, what is wrong when known, and redis-py's reason."""
        return diagnose(error).error(what, self.url, self.reason(error))

    # --- the clients -------------------------------------------------------------

    def sync_port(self) -> SyncPort:
        port = self._port
        if port is None:
            with self._lock:
                if self._port is None:
                    self._port = self.new_sync_port()
                port = self._port
        return port

    @property
    def loops_served(self) -> int:
        """How many event loops hold an async client of this store now."""
        with self._alock:
            return len(self._aports)

    def async_port(self) -> AsyncPort:
        loop = asyncio.get_running_loop()
        with self._alock:  # loops in several threads may share the store
            port = self._aports.get(loop)
            if port is None:
                port = self._aports[loop] = self.new_async_port()
                made = True
            else:
                made = False
        if made:
            # A loop per asyncio.run() would otherwise leave a client, its
            # sockets and the loop itself behind each time. Weakly: a store
            # dropped before the loop ends need not live on for it.
            on_loop_close(_releaser(weakref.ref(self)))
        return port

    async def release_loop(self) -> None:
        """Close and forget the running loop's client (at that loop's shutdown)."""
        loop = asyncio.get_running_loop()
        with self._alock:
            port = self._aports.pop(loop, None)
        if port is not None:
            await self._aclose_port(port)

    async def _aclose_port(self, port: AsyncPort) -> None:
        try:
            await port.aclose()
        except DRIVER_ERRORS as error:
            log.debug("closing %s: %s", self.url, self.reason(error))

    def close(self) -> None:
        """Close the sync client and every async client that can be closed now.

        An async client is closed on its own loop: loops running in other
        threads are asked to close theirs, and clients of closed loops are
        dropped (their sockets close as they are collected). A loop that is
        idle, or the caller's own, keeps its client until it shuts down (or
        calls ``aclose()``).
        """
        with self._lock:
            port, self._port = self._port, None
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        with self._alock:
            for loop in [loop for loop in self._aports if loop.is_closed()]:
                del self._aports[loop]
            elsewhere = [
                (loop, self._aports.pop(loop))
                for loop in list(self._aports)
                if loop is not current and loop.is_running()
            ]
        for loop, aport in elsewhere:
            with contextlib.suppress(RuntimeError):  # it closed meanwhile
                asyncio.run_coroutine_threadsafe(self._aclose_port(aport), loop)
        if port is not None:
            try:
                port.close()
            except DRIVER_ERRORS as error:
                log.debug("closing %s: %s", self.url, self.reason(error))

    async def aclose(self) -> None:
        """Close this event loop's client, then everything ``close`` does."""
        await self.release_loop()
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
        initialize = (
            client.initialize if isinstance(client, redis.asyncio.cluster.RedisCluster) else None
        )
        return AsyncPort(client, scripts, closers, initialize)
