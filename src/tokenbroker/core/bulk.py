"""The bulk refresher's store capability: due tokens listed, leases and writes in batches.

A store that can do it in few round trips says so by implementing ``BulkTokenStore``
(the SQL and Redis backends have theirs, found by ``tokenbroker.backends.bulk``);
``PerKeyBulk`` gives any ``Store`` the same capability over its per-key methods, so a
third-party store keeps working, one call per key.

What the methods guarantee, batch or not:

* ``due_pages`` yields, in instance-id order and a page at a time, the active
  installations of an app whose token is missing, expires by ``until``, or may be
  due by its refresh stamp at ``now`` (a superset of what the refresh policy calls
  due: the refresher judges each row again), each with its stored token and health;
* ``acquire_leases`` takes each key's fleet-wide lease as ``acquire_lease`` would
  (``None`` where another holder has it), each with a fence above any the store
  granted for the key before (``core.fencing.next_fence``; 0 where the store does not fence);
* ``put_tokens`` writes each token as ``put_token`` would, compare-and-set on
  ``obtained_at``, and refuses one whose key carries a newer fence than its own;
* ``release_leases`` releases the leases it is given that are still theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

from .clock import to_timestamp
from .health import InstallationHealth, from_record, health_app_id
from .protocols import Lease, Store
from .token import Token, TokenKey


@attrs.frozen
class Due:
    """One installation the listing found due: its key, stored token (``None``: none),
    health record (``None``: none kept) and registry record's ``updated_at``."""

    key: TokenKey
    token: Token | None = None
    health: InstallationHealth | None = None
    registry_at: datetime | None = None


def maybe_due(token: Token | None, now: float, until: float) -> bool:
    """The listing's own test (a superset of the policy's): missing, expiring by
    ``until``, unstamped, or past its advisory refresh time."""
    if token is None or to_timestamp(token.expires_at) <= until:
        return True
    return token.refresh_at is None or to_timestamp(token.refresh_at) <= now


@attrs.frozen
class DuePage:
    """One page of the listing: the due installations, and the instance ids of the
    active ones passed over as not due (the report names them fresh)."""

    due: list[Due]
    fresh: list[str]

    @property
    def total(self) -> int:
        return len(self.due) + len(self.fresh)


@runtime_checkable
class BulkTokenStore(Protocol):
    """A store's batch operations for the bulk refresher (module docstring)."""

    def due_pages(
        self, provider: str, app_id: str, *, now: float, until: float, page: int
    ) -> Iterator[DuePage]: ...

    def get_tokens(self, keys: Sequence[TokenKey]) -> list[Token | None]: ...

    def acquire_leases(self, keys: Sequence[TokenKey], ttl: float) -> list[Lease | None]: ...

    def put_tokens(self, writes: Sequence[tuple[Token, int]]) -> list[bool]: ...

    def release_leases(self, grants: Sequence[Lease]) -> int: ...

    def adue_pages(
        self, provider: str, app_id: str, *, now: float, until: float, page: int
    ) -> AsyncIterator[DuePage]: ...

    async def aget_tokens(self, keys: Sequence[TokenKey]) -> list[Token | None]: ...

    async def aacquire_leases(self, keys: Sequence[TokenKey], ttl: float) -> list[Lease | None]: ...

    async def aput_tokens(self, writes: Sequence[tuple[Token, int]]) -> list[bool]: ...

    async def arelease_leases(self, grants: Sequence[Lease]) -> int: ...


class ThreadedBulk:
    """Async twins that run the sync batch calls in a worker thread (one per batch,
    not per key), for stores whose driver is blocking."""

    def due_pages(
        self, provider: str, app_id: str, *, now: float, until: float, page: int
    ) -> Iterator[DuePage]:
        raise NotImplementedError

    def get_tokens(self, keys: Sequence[TokenKey]) -> list[Token | None]:
        raise NotImplementedError

    def acquire_leases(self, keys: Sequence[TokenKey], ttl: float) -> list[Lease | None]:
        raise NotImplementedError

    def put_tokens(self, writes: Sequence[tuple[Token, int]]) -> list[bool]:
        raise NotImplementedError

    def release_leases(self, grants: Sequence[Lease]) -> int:
        raise NotImplementedError

    async def adue_pages(
        self, provider: str, app_id: str, *, now: float, until: float, page: int
    ) -> AsyncIterator[DuePage]:
        pages = self.due_pages(provider, app_id, now=now, until=until, page=page)
        done = object()
        while True:
            found = await asyncio.to_thread(next, pages, done)
            if found is done:
                return
            assert isinstance(found, DuePage)
            yield found

    async def aget_tokens(self, keys: Sequence[TokenKey]) -> list[Token | None]:
        return await asyncio.to_thread(self.get_tokens, keys)

    async def aacquire_leases(self, keys: Sequence[TokenKey], ttl: float) -> list[Lease | None]:
        return await asyncio.to_thread(self.acquire_leases, keys, ttl)

    async def aput_tokens(self, writes: Sequence[tuple[Token, int]]) -> list[bool]:
        return await asyncio.to_thread(self.put_tokens, writes)

    async def arelease_leases(self, grants: Sequence[Lease]) -> int:
        return await asyncio.to_thread(self.release_leases, grants)


class PerKeyBulk(ThreadedBulk):
    """``BulkTokenStore`` over any ``Store``'s per-key methods: one call per key (and
    per installation in the listing), for stores without batch operations. Fences are
    whatever the store's leases carry (0 where it has none)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def due_pages(
        self, provider: str, app_id: str, *, now: float, until: float, page: int
    ) -> Iterator[DuePage]:
        store, health_app = self.store, health_app_id(app_id)
        found = DuePage([], [])
        for record in store.iter_installations(app_id):
            key = TokenKey(provider, app_id, record.instance_id)
            token = store.get_token(key)
            if not maybe_due(token, now, until):
                found.fresh.append(record.instance_id)
            else:
                health = from_record(store.get_installation(health_app, record.instance_id))
                found.due.append(Due(key, token, health, record.updated_at))
            if found.total >= page:
                yield found
                found = DuePage([], [])
        if found.total:
            yield found

    def get_tokens(self, keys: Sequence[TokenKey]) -> list[Token | None]:
        return [self.store.get_token(key) for key in keys]

    def acquire_leases(self, keys: Sequence[TokenKey], ttl: float) -> list[Lease | None]:
        return [self.store.acquire_lease(key, ttl) for key in keys]

    def put_tokens(self, writes: Sequence[tuple[Token, int]]) -> list[bool]:
        store = self.store
        # Unfenced without the argument, as ``PutToken`` does: older stores take it.
        return [
            store.put_token(token, fence=fence) if fence else store.put_token(token)
            for token, fence in writes
        ]

    def release_leases(self, grants: Sequence[Lease]) -> int:
        return sum(self.store.release_lease(grant) for grant in grants)
