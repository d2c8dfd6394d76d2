"""The Redis store's ports: a redis-py client, sync or asyncio, as the ``ops``
Protocols the store's flows drive, with what closes it.

A WRONGTYPE answer to a GET is a value (``WRONG_TYPE``), not an error: the
flows judge what they found.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import attrs
from redis.exceptions import ResponseError

from .scripts import ScriptName
from .values import WRONG_TYPE, Raw

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

__all__ = ["AsyncClient", "AsyncPort", "SyncClient", "SyncPort"]

SyncClient: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"
AsyncClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"


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
    """An asyncio client as ``ops.AsyncCommands``, with what closes it.

    ``initialize`` (a Cluster client's discovery) runs once, under a lock, before
    the first command: redis.asyncio's RedisCluster discovers the cluster on its
    first command, and tasks that send their first commands together each start
    a discovery that closes the connections the others are opening (seen on a
    real cluster: ``AttributeError: 'NoneType' object has no attribute
    'writelines'`` from redis-py 8.1 under ``asyncio.gather``).
    """

    client: AsyncClient
    scripts: dict[ScriptName, Any]
    closers: list[Callable[[], Any]] = attrs.field(factory=list)
    initialize: Callable[[], Awaitable[Any]] | None = None
    _initializing: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)

    async def _initialize(self) -> None:
        async with self._initializing:
            if self.initialize is not None:
                await self.initialize()
                self.initialize = None

    async def get(self, key: str) -> Raw:
        if self.initialize is not None:
            await self._initialize()
        try:
            raw = cast("bytes | None", await self.client.get(key))
        except ResponseError as error:
            if _is_wrong_type(error):
                return WRONG_TYPE
            raise
        return raw

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        if self.initialize is not None:
            await self._initialize()
        return list(await self.client.mget(keys))  # type: ignore[arg-type]

    async def delete(self, key: str) -> int:
        if self.initialize is not None:
            await self._initialize()
        return int(await self.client.delete(key))

    async def set_nx_px(self, key: str, value: str, ttl_ms: int) -> bool:
        if self.initialize is not None:
            await self._initialize()
        return bool(await self.client.set(key, value, nx=True, px=ttl_ms))

    async def members_after(self, key: str, after: bytes | None, count: int) -> list[bytes]:
        if self.initialize is not None:
            await self._initialize()
        low = b"-" if after is None else b"(" + after
        return list(await self.client.zrangebylex(key, low, b"+", start=0, num=count))  # type: ignore[arg-type]

    async def script(self, name: ScriptName, keys: Sequence[str], args: Sequence[Any]) -> int:
        if self.initialize is not None:
            await self._initialize()
        return int(await self.scripts[name](keys=keys, args=args))

    async def aclose(self) -> None:
        for close in self.closers:
            await close()
