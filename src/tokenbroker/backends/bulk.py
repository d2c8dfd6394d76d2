"""Which batch operations (``core.bulk.BulkTokenStore``) a store gets: ``bulk_for``.

The SQL and Redis stores get their own; a store that implements the protocol itself
is used as it is; any other gets ``PerKeyBulk``, its per-key methods one key at a
time. The wrappers every broker puts around its store are seen through, doing what
they do per token for each token of a batch: ``PlaintextGuard`` checks the
encryption marker once and refuses ciphertext; ``EncryptedStore`` seals what a
batch writes and opens what it reads (a token no key opens counts as missing,
so it is due). A wrapper of any other kind gets ``PerKeyBulk`` over itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence

import attrs

from ..core.bulk import BulkTokenStore, DuePage, PerKeyBulk, ThreadedBulk
from ..core.flow import run_sync
from ..core.protocols import Lease, Store
from ..core.token import Token, TokenKey
from .encrypted import EncryptedStore, PlaintextGuard

__all__ = ["bulk_for"]


def bulk_for(store: Store) -> BulkTokenStore:
    """The batch operations for ``store`` (see the module docstring)."""
    if isinstance(store, PlaintextGuard):
        return GuardedBulk(store, _unwrapped(store.inner))
    if isinstance(store, EncryptedStore):
        return EncryptedBulk(store, _unwrapped(store.inner))
    return _unwrapped(store)


def _unwrapped(store: Store) -> BulkTokenStore:
    # Only a module already imported can have made the store: no driver is imported here.
    sql = sys.modules.get("tokenbroker.backends.sql.store")
    if sql is not None and isinstance(store, sql.SQLStore):
        from .sql.bulk import SQLBulk  # noqa: PLC0415

        return SQLBulk(store)
    redis = sys.modules.get("tokenbroker.backends.redis.store")
    if redis is not None and isinstance(store, redis.RedisStore):
        from .redis.bulk import RedisBulk  # noqa: PLC0415

        return RedisBulk(store)
    if isinstance(store, BulkTokenStore):
        return store
    return PerKeyBulk(store)


class _Wrapped(ThreadedBulk):
    """Passes each batch to the wrapped store's batch operations; ``opened`` is what
    the wrapper's own read makes of a stored token, ``check`` its per-call check."""

    def __init__(self, inner: BulkTokenStore) -> None:
        self.inner = inner

    def check(self) -> None:
        """The wrapper's check of the store before a read or a write."""

    def opened(self, token: Token | None) -> Token | None:
        return token

    def due_pages(
        self, provider: str, app_id: str, *, now: float, until: float, page: int
    ) -> Iterator[DuePage]:
        self.check()
        for found in self.inner.due_pages(provider, app_id, now=now, until=until, page=page):
            due = [
                row if row.token is None else attrs.evolve(row, token=self.opened(row.token))
                for row in found.due
            ]
            yield DuePage(due, found.fresh)

    def get_tokens(self, keys: Sequence[TokenKey]) -> list[Token | None]:
        self.check()
        return [self.opened(token) for token in self.inner.get_tokens(keys)]

    def acquire_leases(self, keys: Sequence[TokenKey], ttl: float) -> list[Lease | None]:
        return self.inner.acquire_leases(keys, ttl)

    def put_tokens(self, writes: Sequence[tuple[Token, int]]) -> list[bool]:
        self.check()
        return self.inner.put_tokens(writes)

    def release_leases(self, grants: Sequence[Lease]) -> int:
        return self.inner.release_leases(grants)


class GuardedBulk(_Wrapped):
    """``PlaintextGuard``'s refusals, for batches: the marker checked once, ciphertext
    refused."""

    def __init__(self, guard: PlaintextGuard, inner: BulkTokenStore) -> None:
        super().__init__(inner)
        self.guard = guard

    def check(self) -> None:
        run_sync(self.guard._check_flow(), self.guard._port)

    def opened(self, token: Token | None) -> Token | None:
        return self.guard._plain(token)


class EncryptedBulk(_Wrapped):
    """``EncryptedStore``'s sealing and opening, for batches. A token no key opens
    reads as missing (due); a batch write over one that is newer than ours is
    refused, where the per-key write would replace it: the next per-key fetch does."""

    def __init__(self, store: EncryptedStore, inner: BulkTokenStore) -> None:
        super().__init__(inner)
        self.store = store

    def check(self) -> None:
        run_sync(self.store._check_flow(), self.store._port)

    def opened(self, token: Token | None) -> Token | None:
        return self.store._open(token)

    def put_tokens(self, writes: Sequence[tuple[Token, int]]) -> list[bool]:
        self.check()
        return self.inner.put_tokens([(self.store._seal(t), fence) for t, fence in writes])
