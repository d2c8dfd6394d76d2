"""A store that wraps another: everything passes through unless a subclass says so.

The wrappers (encryption, the plaintext guard) change what happens to tokens;
leases (renewals and fences too), installations and the lifecycle go straight to
the wrapped store.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from ..core.installation import Installation
from ..core.protocols import Lease, Store
from ..core.token import Token, TokenKey


@attrs.frozen
class Inner:
    """The port a wrapper's flows act on: their ops reach the wrapped store."""

    store: Store


class StoreWrapper:
    """Passes every call through to ``inner``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self._port = Inner(inner)
        self.shared = inner.shared
        self.url = inner.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def get_token(self, key: TokenKey) -> Token | None:
        return self.inner.get_token(key)

    def put_token(self, token: Token, *, fence: int = 0) -> bool:
        # unfenced: without the argument, as a store that predates fencing takes it
        return self.inner.put_token(token, fence=fence) if fence else self.inner.put_token(token)

    def delete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        return self.inner.delete_token(key, only=only)

    async def aget_token(self, key: TokenKey) -> Token | None:
        return await self.inner.aget_token(key)

    async def aput_token(self, token: Token, *, fence: int = 0) -> bool:
        if fence:
            return await self.inner.aput_token(token, fence=fence)
        return await self.inner.aput_token(token)

    async def adelete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        return await self.inner.adelete_token(key, only=only)

    def acquire_lease(self, key: TokenKey, ttl: float) -> Lease | None:
        return self.inner.acquire_lease(key, ttl)

    def renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        return self.inner.renew_lease(lease, ttl)

    def release_lease(self, lease: Lease) -> bool:
        return self.inner.release_lease(lease)

    async def aacquire_lease(self, key: TokenKey, ttl: float) -> Lease | None:
        return await self.inner.aacquire_lease(key, ttl)

    async def arenew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        return await self.inner.arenew_lease(lease, ttl)

    async def arelease_lease(self, lease: Lease) -> bool:
        return await self.inner.arelease_lease(lease)

    def get_installation(self, app_id: str, instance_id: str) -> Installation | None:
        return self.inner.get_installation(app_id, instance_id)

    def put_installation(self, installation: Installation) -> bool:
        return self.inner.put_installation(installation)

    def iter_installations(
        self, app_id: str, *, include_removed: bool = False
    ) -> Iterator[Installation]:
        return self.inner.iter_installations(app_id, include_removed=include_removed)

    async def aget_installation(self, app_id: str, instance_id: str) -> Installation | None:
        return await self.inner.aget_installation(app_id, instance_id)

    async def aput_installation(self, installation: Installation) -> bool:
        return await self.inner.aput_installation(installation)

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()
