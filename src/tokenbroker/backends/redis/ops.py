"""The Redis commands a store flow asks for, one typed ``Op`` each.

A flow writes ``raw = yield from Get(name)`` and ``run_sync``/``run_async``
perform the op on a port: ``Commands`` (blocking) or ``AsyncCommands``
(awaited), the two Protocols below. The ports in ``clients`` implement them
over redis-py; a flow never sees a client, so one flow serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from ...core.flow import Op
from .scripts import ScriptName
from .values import Raw

__all__ = [
    "AsyncCommands",
    "Commands",
    "Delete",
    "Get",
    "MGet",
    "MembersAfter",
    "Script",
    "SetNxPx",
]


class Commands(Protocol):
    """The blocking commands the ops need."""

    def get(self, key: str) -> Raw: ...
    def mget(self, keys: Sequence[str]) -> list[bytes | None]: ...
    def delete(self, key: str) -> int: ...
    def set_nx_px(self, key: str, value: str, ttl_ms: int) -> bool: ...
    def members_after(self, key: str, after: bytes | None, count: int) -> list[bytes]: ...
    def script(self, name: ScriptName, keys: Sequence[str], args: Sequence[Any]) -> int: ...


class AsyncCommands(Protocol):
    """The same commands, awaited."""

    async def get(self, key: str) -> Raw: ...
    async def mget(self, keys: Sequence[str]) -> list[bytes | None]: ...
    async def delete(self, key: str) -> int: ...
    async def set_nx_px(self, key: str, value: str, ttl_ms: int) -> bool: ...
    async def members_after(self, key: str, after: bytes | None, count: int) -> list[bytes]: ...
    async def script(self, name: ScriptName, keys: Sequence[str], args: Sequence[Any]) -> int: ...


@attrs.frozen
class Get(Op[Raw]):
    """GET ``key``: its bytes, ``WRONG_TYPE`` for a key of another type, or ``None``."""

    key: str

    def run(self, port: Commands) -> Raw:
        return port.get(self.key)

    async def arun(self, port: AsyncCommands) -> Raw:
        return await port.get(self.key)


@attrs.frozen
class MGet(Op[list[bytes | None]]):
    """MGET ``keys`` (all in one slot): one value or ``None`` per key, in order."""

    keys: tuple[str, ...]

    def run(self, port: Commands) -> list[bytes | None]:
        return port.mget(self.keys)

    async def arun(self, port: AsyncCommands) -> list[bytes | None]:
        return await port.mget(self.keys)


@attrs.frozen
class Delete(Op[int]):
    """DEL ``key``: how many keys went (0 or 1)."""

    key: str

    def run(self, port: Commands) -> int:
        return port.delete(self.key)

    async def arun(self, port: AsyncCommands) -> int:
        return await port.delete(self.key)


@attrs.frozen
class SetNxPx(Op[bool]):
    """SET ``key`` ``value`` NX PX ``ttl_ms``: whether the key was free and is now ours."""

    key: str
    value: str
    ttl_ms: int

    def run(self, port: Commands) -> bool:
        return port.set_nx_px(self.key, self.value, self.ttl_ms)

    async def arun(self, port: AsyncCommands) -> bool:
        return await port.set_nx_px(self.key, self.value, self.ttl_ms)


@attrs.frozen
class MembersAfter(Op[list[bytes]]):
    """Up to ``count`` members of the sorted set ``key`` after ``after``, in byte order
    (every score is 0, so this is ZRANGEBYLEX: the first page when ``after`` is None)."""

    key: str
    after: bytes | None
    count: int

    def run(self, port: Commands) -> list[bytes]:
        return port.members_after(self.key, self.after, self.count)

    async def arun(self, port: AsyncCommands) -> list[bytes]:
        return await port.members_after(self.key, self.after, self.count)


@attrs.frozen
class Script(Op[int]):
    """Run the Lua script ``name`` (see ``scripts``) on ``keys`` with ``args``."""

    name: ScriptName
    keys: tuple[str, ...]
    args: tuple[Any, ...]

    def run(self, port: Commands) -> int:
        return port.script(self.name, self.keys, self.args)

    async def arun(self, port: AsyncCommands) -> int:
        return await port.script(self.name, self.keys, self.args)
