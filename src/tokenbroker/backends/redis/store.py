"""``RedisStore``: the ``Store`` protocol over Redis, its logic written once as flows.

Every method is a flow of typed ``ops`` that ``Clients`` drives on the sync
client (blocking) or on the calling event loop's asyncio client (awaited):
one decision core for both, no worker threads.

Guarantees, command by command:

* ``put_token`` is a Lua compare-and-set on the stored ``obtained_at``; when
  the script refuses, the stored value is read and judged in Python, and a
  value Python cannot parse is replaced only if it is still the same bytes.
* token keys expire ``expiry_grace`` seconds after the token does (or after
  the write, for a token that was already expired), so dead tokens leave by
  themselves;
* a lease is a key with its owner and fence and ``PX`` its TTL, taken, renewed
  and released by Lua scripts (``scripts``); a fenced ``put_token`` is refused
  in the write's script when the lease key or the stored token has a later fence;
* installations are read, judged by ``installation_wins`` in Python, and
  written by a Lua script only if the stored bytes did not change meanwhile
  (optimistic locking that needs no WATCH, and so works on every topology).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final, TypeAlias

import attrs

from ...core.errors import ConfigError, StorageError
from ...core.flow import Flow
from ...core.installation import Installation
from ...core.protocols import Lease
from ...core.token import Token, TokenKey
from ..base import installation_wins
from ..codec import Corrupt, to_micros
from ..urls import redact_url, url_passwords
from .clients import DRIVER_ERRORS, Clients, SyncClient
from .ops import Delete, Get, MembersAfter, MGet, Script
from .scripts import RELEASED_KEEP_MS
from .urls import check_key_prefix, parse_redis_url
from .values import (
    Raw,
    WrongType,
    decode_installation,
    decode_token,
    encode_installation,
    encode_token,
)

__all__ = ["DEFAULT_EXPIRY_GRACE", "DEFAULT_KEY_PREFIX", "RedisStore"]

log = logging.getLogger("tokenbroker.store")

DEFAULT_KEY_PREFIX: Final = "tokenbroker:"
DEFAULT_EXPIRY_GRACE: Final = 300.0

_ITER_BATCH: Final = 500
# Optimistic writes go again when another writer got there first; every round
# has a winner, so this bounds the wait of the unluckiest of many racers.
_CAS_ATTEMPTS: Final = 64

Page: TypeAlias = "tuple[list[tuple[str, Raw]], bytes | None]"
"""One page of (instance id, stored value), and the index member to go on after."""


def _ms(seconds: float) -> int:
    """A TTL in whole milliseconds, at least one."""
    return max(1, math.ceil(seconds * 1000))


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace(":", "%3A").replace("{", "%7B").replace("}", "%7D")


class RedisStore:
    """Tokens, leases and installations in Redis, shared by every process.

    Thread-safe: the sync client's connection pool serves every thread. Each
    event loop that uses the store gets its own asyncio client, closed when
    that loop shuts down; ``aclose()`` closes the calling loop's client and
    then does what ``close()`` does: close the sync client and the clients of
    loops running in other threads. The store stays usable after either:
    clients are made anew.

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
        self.url = redact_url(url)
        self.target = parse_redis_url(url)
        from_query = self.target.key_prefix
        if from_query is not None:
            if key_prefix not in (DEFAULT_KEY_PREFIX, from_query):
                raise ConfigError(
                    f"key_prefix {key_prefix!r} conflicts with {from_query!r} in {self.url}"
                )
            key_prefix = from_query
        self.key_prefix = check_key_prefix(key_prefix, self.url)
        if not (math.isfinite(expiry_grace) and expiry_grace >= 0):
            raise ConfigError(f"expiry_grace must be a non-negative number, not {expiry_grace!r}")
        self._grace_ms = math.ceil(expiry_grace * 1000)
        self._clients = Clients(
            self.target,
            url=self.url,
            passwords=url_passwords(url),
            client_options=client_options or {},
        )

    def __repr__(self) -> str:
        return f"RedisStore(url={self.url!r})"

    # --- keys ------------------------------------------------------------------
    # Every id is escaped so that "%", ":", "{" and "}" never appear in it raw:
    # keys stay unambiguous and the braces stay Cluster hash tags (see __init__).

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

    @property
    def client(self) -> SyncClient:
        """The sync redis-py client, for maintenance scripts and tests."""
        try:
            return self._clients.sync_port().client
        except DRIVER_ERRORS as error:
            raise self._clients.storage_error("connecting", error) from None

    def close(self) -> None:
        """Close the sync client's connections (a later call opens new ones).

        An async client can only be closed on its own loop: each is closed when
        its loop shuts down (``asyncio.run`` does that), loops running in other
        threads are asked to close theirs now, and clients of loops closed
        already are dropped.
        """
        self._clients.close()

    async def aclose(self) -> None:
        """Close this event loop's client, then the sync client."""
        await self._clients.aclose()

    # --- decoding ----------------------------------------------------------------

    def _token_or_none(self, key: TokenKey, raw: Raw) -> Token | None:
        if raw is None:
            return None
        try:
            return decode_token(key, raw)
        except Corrupt as why:
            log.warning("ignoring corrupted token for %s in %s: %s", key, self.url, why)
            return None

    def _installation_or_none(self, app_id: str, instance_id: str, raw: Raw) -> Installation | None:
        if raw is None:
            return None
        try:
            return decode_installation(app_id, instance_id, raw)
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
        raw = yield from Get(self.token_key(key))
        return self._token_or_none(key, raw)

    def _put_token_flow(self, token: Token, fence: int = 0) -> Flow[bool]:
        name = self.token_key(token.key)
        keys = (name, self.lease_key(token.key))
        value = encode_token(token)
        obtained_us = to_micros(token.obtained_at)
        expires_ms = -(-to_micros(token.expires_at) // 1000)
        # Gone with the token, but never before a reader could see a token
        # that was written already expired (freshness is the policy's call).
        keep_until_ms = max(expires_ms, int(time.time() * 1000)) + self._grace_ms
        for _ in range(_CAS_ATTEMPTS):
            wrote = yield from Script("put_token", keys, (obtained_us, value, keep_until_ms, fence))
            if wrote:
                return wrote > 0  # -1: refused by the fence
            raw = yield from Get(name)
            if raw is None or isinstance(raw, WrongType):
                continue  # gone or replaced meanwhile: the script decides again
            stored = self._token_or_none(token.key, raw)
            if stored is not None and stored.obtained_at > token.obtained_at:
                return False
            # Unreadable to Python, or an older writer slipped in: replace
            # exactly what was judged, or look again.
            replaced = yield from Script("replace_token", keys, (raw, value, keep_until_ms, fence))
            if replaced:
                return replaced > 0
        return False  # the value kept changing under us: report it unwritten

    def _delete_token_flow(self, key: TokenKey, only: str | None) -> Flow[bool]:
        name = self.token_key(key)
        if only is None:
            removed = yield from Delete(name)
            return bool(removed)
        for _ in range(_CAS_ATTEMPTS):
            raw = yield from Get(name)
            stored = self._token_or_none(key, raw)
            if stored is None or stored.access_token != only:
                return False
            deleted = yield from Script("delete_if_equal", (name,), (raw,))
            if deleted:
                return True
        return False

    def _acquire_lease_flow(self, key: TokenKey, ttl: float) -> Flow[Lease | None]:
        # Wall-clock time: the lease is judged by every host sharing the store.
        now = time.time()
        owner = secrets.token_hex(16)
        keys = (self.lease_key(key), self.token_key(key))
        fence = yield from Script("acquire_lease", keys, (owner, _ms(ttl)))
        if not fence:
            return None
        return Lease(key=key, owner=f"{owner}:{fence}", expires_at=now + ttl, fence=fence)

    def _renew_lease_flow(self, lease: Lease, ttl: float) -> Flow[Lease | None]:
        now = time.time()
        name = self.lease_key(lease.key)
        renewed = yield from Script("renew_lease", (name,), (lease.owner, _ms(ttl)))
        return attrs.evolve(lease, expires_at=now + ttl) if renewed else None

    def _release_lease_flow(self, lease: Lease) -> Flow[bool]:
        name = self.lease_key(lease.key)
        released = yield from Script("release_lease", (name,), (lease.owner, RELEASED_KEEP_MS))
        return bool(released)

    def _get_installation_flow(self, app_id: str, instance_id: str) -> Flow[Installation | None]:
        raw = yield from Get(self.installation_key(app_id, instance_id))
        return self._installation_or_none(app_id, instance_id, raw)

    def _put_installation_flow(self, installation: Installation) -> Flow[bool]:
        app_id, instance_id = installation.app_id, installation.instance_id
        name = self.installation_key(app_id, instance_id)
        keys = (name, self.index_key(app_id))
        value = encode_installation(installation)
        for _ in range(_CAS_ATTEMPTS):
            raw = yield from Get(name)
            stored = self._installation_or_none(app_id, instance_id, raw)
            if not installation_wins(installation, stored):
                return False
            if raw is None:
                seen: tuple[str, bytes] = ("none", b"")
            elif isinstance(raw, WrongType):
                seen = ("other", b"")
            else:
                seen = ("string", raw)
            wrote = yield from Script("put_installation", keys, (*seen, value, instance_id))
            if wrote:
                return True
        raise StorageError(
            f"put_installation on {self.url}: the record of {app_id}:{instance_id} kept "
            f"changing during {_CAS_ATTEMPTS} attempts; try again"
        )

    # --- TokenStore ------------------------------------------------------------

    def get_token(self, key: TokenKey) -> Token | None:
        return self._clients.run("get_token", self._get_token_flow(key))

    def put_token(self, token: Token, *, fence: int = 0) -> bool:
        return self._clients.run("put_token", self._put_token_flow(token, fence))

    def delete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        return self._clients.run("delete_token", self._delete_token_flow(key, only))

    def acquire_lease(self, key: TokenKey, ttl: float) -> Lease | None:
        return self._clients.run("acquire_lease", self._acquire_lease_flow(key, ttl))

    def renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        return self._clients.run("renew_lease", self._renew_lease_flow(lease, ttl))

    def release_lease(self, lease: Lease) -> bool:
        return self._clients.run("release_lease", self._release_lease_flow(lease))

    async def aget_token(self, key: TokenKey) -> Token | None:
        return await self._clients.arun("get_token", self._get_token_flow(key))

    async def aput_token(self, token: Token, *, fence: int = 0) -> bool:
        return await self._clients.arun("put_token", self._put_token_flow(token, fence))

    async def adelete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        return await self._clients.arun("delete_token", self._delete_token_flow(key, only))

    async def aacquire_lease(self, key: TokenKey, ttl: float) -> Lease | None:
        return await self._clients.arun("acquire_lease", self._acquire_lease_flow(key, ttl))

    async def arenew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        return await self._clients.arun("renew_lease", self._renew_lease_flow(lease, ttl))

    async def arelease_lease(self, lease: Lease) -> bool:
        return await self._clients.arun("release_lease", self._release_lease_flow(lease))

    # --- InstallationStore -------------------------------------------------------

    def get_installation(self, app_id: str, instance_id: str) -> Installation | None:
        return self._clients.run(
            "get_installation", self._get_installation_flow(app_id, instance_id)
        )

    def put_installation(self, installation: Installation) -> bool:
        return self._clients.run("put_installation", self._put_installation_flow(installation))

    async def aget_installation(self, app_id: str, instance_id: str) -> Installation | None:
        return await self._clients.arun(
            "get_installation", self._get_installation_flow(app_id, instance_id)
        )

    async def aput_installation(self, installation: Installation) -> bool:
        return await self._clients.arun(
            "put_installation", self._put_installation_flow(installation)
        )

    def _page_flow(self, app_id: str, after: bytes | None) -> Flow[Page]:
        """One page of the app's index, after the member ``after``, with the records."""
        index = self.index_key(app_id)
        members = yield from MembersAfter(index, after, _ITER_BATCH)
        ids = []
        for member in members:
            try:
                ids.append(member.decode())
            except UnicodeDecodeError:
                log.warning("ignoring a non-UTF-8 member of %s in %s", index, self.url)
        keys = tuple(self.installation_key(app_id, i) for i in ids)
        values = (yield from MGet(keys)) if ids else []
        last = members[-1] if len(members) == _ITER_BATCH else None
        return list(zip(ids, values, strict=True)), last

    def iter_installations(
        self, app_id: str, *, include_removed: bool = False
    ) -> Iterator[Installation]:
        def page_after(after: bytes | None) -> Page:
            return self._clients.run("iter_installations", self._page_flow(app_id, after))

        # The first page is read now, so a broken store fails at the call, not
        # at some later next(); each page is its own pair of round trips.
        first = page_after(None)

        def generate(page: Page) -> Iterator[Installation]:
            while True:
                batch, last = page
                for instance_id, raw in batch:
                    found = self._installation_or_none(app_id, instance_id, raw)
                    if found is not None and (include_removed or found.active):
                        yield found
                if last is None:
                    return
                page = page_after(last)

        return generate(first)
