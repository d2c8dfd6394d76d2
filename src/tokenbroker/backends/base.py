"""Shared pieces for backends whose drivers are synchronous."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..core.installation import Installation

if TYPE_CHECKING:
    from ..core.protocols import Lease
    from ..core.token import Token, TokenKey

log = logging.getLogger("tokenbroker.store")


def installation_wins(new: Installation, stored: Installation | None) -> bool:
    """Whether ``new`` should replace ``stored`` (the rule every backend applies)."""
    if stored is None:
        return True
    if new == stored:
        return False
    if stored.updated_at is None or new.updated_at is None:
        return new.updated_at is not None or stored.updated_at is None
    return new.updated_at >= stored.updated_at


class ThreadedAsyncMixin:
    """Async twins that run the sync methods in a worker thread.

    Right for stores whose drivers block (SQLite, and SQL servers through
    sync drivers): the event loop never waits on their I/O.
    """

    def get_token(self, key: TokenKey) -> Token | None:
        raise NotImplementedError

    def put_token(self, token: Token, *, fence: int = 0) -> bool:
        raise NotImplementedError

    def delete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        raise NotImplementedError

    def acquire_lease(self, key: TokenKey, ttl: float) -> Lease | None:
        raise NotImplementedError

    def renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        raise NotImplementedError

    def release_lease(self, lease: Lease) -> bool:
        raise NotImplementedError

    def get_installation(self, app_id: str, instance_id: str) -> Installation | None:
        raise NotImplementedError

    def put_installation(self, installation: Installation) -> bool:
        raise NotImplementedError

    def iter_installations(
        self, app_id: str, *, include_removed: bool = False
    ) -> Iterator[Installation]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def aget_token(self, key: TokenKey) -> Token | None:
        return await asyncio.to_thread(self.get_token, key)

    async def aput_token(self, token: Token, *, fence: int = 0) -> bool:
        return await asyncio.to_thread(lambda: self.put_token(token, fence=fence))

    async def adelete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        return await asyncio.to_thread(lambda: self.delete_token(key, only=only))

    async def aacquire_lease(self, key: TokenKey, ttl: float) -> Lease | None:
        return await asyncio.to_thread(self.acquire_lease, key, ttl)

    async def arenew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        return await asyncio.to_thread(self.renew_lease, lease, ttl)

    async def arelease_lease(self, lease: Lease) -> bool:
        return await asyncio.to_thread(self.release_lease, lease)

    async def aget_installation(self, app_id: str, instance_id: str) -> Installation | None:
        return await asyncio.to_thread(self.get_installation, app_id, instance_id)

    async def aput_installation(self, installation: Installation) -> bool:
        return await asyncio.to_thread(self.put_installation, installation)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
