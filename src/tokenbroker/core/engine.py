"""The get-or-refresh engine: the path a token travels, hop by hop.

``get(key)``: near cache → (single-flight) → store → fleet-wide lease → store
again → provider → policy stamps → store writes (compare-and-set) → lease
released → listeners told → token returned.

The hops after the near cache are one generator, ``_refresh_flow``, of typed
ops (``tokenbroker.core.ops``), driven by ``run_sync`` for threads and
``run_async`` for asyncio; the decisions live there once. The engine is its own
port: the ops act on its ``store`` and ``provider``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final, Literal

from .clock import Clock
from .degraded import StoreHealth
from .errors import (
    InstanceNotInstalled,
    InvalidCredentials,
    ProviderError,
    StorageError,
    TokenBrokerError,
)
from .flow import Flow, Sleep, run_async, run_sync
from .health import InstallationHealth
from .health_policy import Backoff
from .health_tracker import HealthListener, HealthTracker
from .installation import Installation
from .nearcache import NearCache
from .ops import Acquire, AcquireLease, DeleteToken, GetToken, PutToken, Registered, ReleaseLease
from .policy import RefreshPolicy, TokenState, state_at
from .protocols import InstallationStore, Lease, TokenProvider, TokenStore
from .singleflight import TaskFlights, ThreadFlights
from .token import Token, TokenKey

log = logging.getLogger("tokenbroker")


Source = Literal["store", "provider"]
AcquiredListener = Callable[[TokenKey, Token, Source], None]
FailedListener = Callable[[TokenKey, BaseException], None]
DegradedListener = Callable[[str, BaseException], None]
RecoveredListener = Callable[[str], None]


# Stands in for a lease when the store cannot grant one (degraded mode).
NO_LEASE: Final = Lease(key=TokenKey("", "", ""), owner="", expires_at=0.0)


def _ignore(*_: Any) -> None:
    """The default listener."""


class TokenEngine:
    """Hands out tokens that are never expired, fetching each one once.

    ``lease_ttl`` bounds how long one holder may keep a key's lease (it must
    outlast the provider's whole retry budget); ``wait_timeout`` how long a
    caller waits for another process's refresh before giving up. With a
    ``registry``, the slow path refuses an installation recorded as removed
    (without asking the provider) and purges a token whose installation was
    removed while it was being fetched; it keeps each installation's health there
    (``tokenbroker.core.health``), backing off by ``backoff`` from one Wix refuses.
    ``degrade=False`` (one-shot commands) raises a store outage instead of riding it out.
    """

    def __init__(
        self,
        *,
        provider: TokenProvider,
        store: TokenStore,
        policy: RefreshPolicy,
        clock: Clock,
        near_cache: NearCache | None = None,
        lease_ttl: float = 30.0,
        wait_timeout: float = 45.0,
        registry: InstallationStore | None = None,
        degrade: bool = True,
        backoff: Backoff | None = None,
        on_acquired: AcquiredListener = _ignore,
        on_failed: FailedListener = _ignore,
        on_degraded: DegradedListener = _ignore,
        on_recovered: RecoveredListener = _ignore,
        on_health_changed: HealthListener = _ignore,
    ) -> None:
        self.provider = provider
        self.store = store
        self.policy = policy
        self.clock = clock
        self.near = near_cache
        self.lease_ttl = lease_ttl
        self.wait_timeout = wait_timeout
        self.registry = registry
        self.on_acquired = on_acquired
        self.on_failed = on_failed
        self.health = StoreHealth(
            store.url, degrade=degrade, on_degraded=on_degraded, on_recovered=on_recovered
        )
        self.health_store = registry  # the port of the health ops (none: health is off)
        self.tracker = HealthTracker(
            backoff or Backoff(), clock, self.health, on_health_changed, active=registry is not None
        )
        self._threads: ThreadFlights[TokenKey, Token] = ThreadFlights()
        self._tasks: TaskFlights[TokenKey, Token] = TaskFlights()
        self._background: set[asyncio.Task[None]] = set()

    # -- the hot path ---------------------------------------------------------
    def get(self, key: TokenKey) -> Token:
        near = self.near
        if near is not None:
            entry = near.get(key)
            if entry is not None:
                now = self.clock.time()
                if now < entry.refresh_at:
                    return entry.token
                if now < entry.must_refresh_at and self._threads.in_flight(key):
                    return entry.token  # advisory: someone is refreshing already
        return self._get_slow(key)

    async def aget(self, key: TokenKey) -> Token:
        near = self.near
        if near is not None:
            entry = near.get(key)
            if entry is not None:
                now = self.clock.time()
                if now < entry.refresh_at:
                    return entry.token
                if now < entry.must_refresh_at:
                    # advisory: refresh in the background, serve the valid token now
                    self._refresh_in_background(key)
                    return entry.token
        return await self._aget_slow(key)

    # -- single-flight ----------------------------------------------------------
    def _get_slow(self, key: TokenKey) -> Token:
        flight, leader = self._threads.join(key)
        if not leader:
            return flight.result()
        try:
            token = run_sync(self._refresh_flow(key), self)
        except BaseException as exc:
            flight.set_exception(exc)
            if isinstance(exc, Exception):
                self.on_failed(key, exc)
            raise
        else:
            flight.set_result(token)
            return token
        finally:
            self._threads.land(key, flight)

    async def _aget_slow(self, key: TokenKey) -> Token:
        flight, leader = self._tasks.join(key)
        if not leader:
            # shield: one waiter being cancelled must not cancel the shared flight
            return await asyncio.shield(flight)
        try:
            token = await run_async(self._refresh_flow(key), self)
        except BaseException as exc:
            flight.set_exception(exc)
            if isinstance(exc, Exception):
                self.on_failed(key, exc)
            flight.exception()  # mark retrieved: no "never retrieved" warning without waiters
            raise
        else:
            flight.set_result(token)
            return token
        finally:
            self._tasks.land(key, flight)

    def _refresh_in_background(self, key: TokenKey) -> None:
        if self._tasks.in_flight(key):
            return
        task = asyncio.get_running_loop().create_task(self._background_refresh(key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _background_refresh(self, key: TokenKey) -> None:
        try:
            await self._aget_slow(key)
        except TokenBrokerError as exc:  # the caller already has a valid token
            log.warning("early refresh of %s failed; serving the current token: %s", key, exc)

    # -- the decision core ----------------------------------------------------
    def _thresholds(self, token: Token) -> tuple[float, float, float]:
        return self.policy.thresholds(token)

    def _remember(self, token: Token, thresholds: tuple[float, float, float]) -> None:
        if self.near is not None:
            self.near.put(token, thresholds, self.clock.time())

    def _usable(self, token: Token | None) -> tuple[TokenState, tuple[float, float, float]] | None:
        if token is None:
            return None
        thresholds = self._thresholds(token)
        return state_at(thresholds, self.clock.time()), thresholds

    def _servable(self, token: Token) -> bool:
        return self.policy.state(token, self.clock.time()).servable

    def _take_if_fresh(
        self, key: TokenKey, stored: Token | None, want_until: float | None = None
    ) -> Token | None:
        """A fresh token found in the store (one that outlives ``want_until``, when
        given): keep it near and use it."""
        seen = self._usable(stored)
        if stored is None or seen is None or seen[0] is not TokenState.FRESH:
            return None
        if want_until is not None and seen[1][2] <= want_until:
            return None
        self._remember(stored, seen[1])
        self.on_acquired(key, stored, "store")
        return stored

    # -- store faults (see tokenbroker.core.degraded) ----------------------------
    @property
    def degraded(self) -> StorageError | None:
        """The store error that put the engine in degraded mode, or ``None``."""
        return self.health.error

    def _check_installed(
        self, key: TokenKey, written: Token | None = None
    ) -> Flow[Installation | None]:
        """The registry's record of ``key``'s installation; refuse one it knows as
        removed, purging ``written`` first when it was stored while the removal landed."""
        if self.registry is None:
            return None
        installation = yield from self.health.guard(Registered(key), None)
        if installation is None or installation.active:
            return installation
        if self.near is not None:
            self.near.discard(key)
        if written is not None:
            yield from self.health.guard(DeleteToken(key, only=written.access_token), False)
        raise InstanceNotInstalled(
            f"{key.instance_id} is recorded as removed; no token is fetched for it "
            "until it is installed again"
        )

    def _acquire_servable(self, key: TokenKey) -> Flow[Token]:
        """A new, stamped token that can be handed out now.

        A token whose life ran out during its own fetch, or whose lifetime is
        shorter than the mandatory window, is fetched once more; twice unusable is
        a ``ProviderError``: an expired token is never handed out.
        """
        for _ in range(2):
            token = self.policy.stamp((yield from Acquire(key)))
            if self.policy.state(token, self.clock.time()).servable:
                return token
            log.warning(
                "the new token for %s was already due when it arrived (lifetime %.1fs)",
                key,
                token.lifetime,
            )
        raise ProviderError(
            f"the provider's tokens for {key.instance_id} are due before they can be "
            f"used (lifetime {token.lifetime:.1f}s, fetched twice); none was handed out"
        )

    def _health_gate(
        self, key: TokenKey, record: Installation | None, fallback: Token | None
    ) -> Flow[InstallationHealth | Token | None]:
        """The health before a fetch (``None``: not kept), or ``fallback`` while it backs
        off; the remembered error, with no request sent, if nothing else can be served."""
        health = yield from self.tracker.current(key, record)
        if (refusal := self.tracker.refusal(health)) is None:
            return health
        assert health is not None
        if fallback is not None and not health.dead and self._servable(fallback):
            return fallback
        if health.dead and self.near is not None:
            self.near.discard(key)
        raise refusal

    def _refresh_flow(self, key: TokenKey, want_until: float | None = None) -> Flow[Token]:
        record = yield from self._check_installed(key)
        stored: Token | None = yield from self.health.guard(GetToken(key), None)
        if (found := self._take_if_fresh(key, stored, want_until)) is not None:
            return found
        seen = self._usable(stored)
        fallback = stored if seen is not None and seen[0] is TokenState.ADVISORY else None
        health = yield from self._health_gate(key, record, fallback)
        if isinstance(health, Token):
            return health
        lease = yield from self._wait_for_lease(key, fallback, want_until)
        if isinstance(lease, Token):
            return lease
        try:
            # Between our first look and our lease another process may have finished,
            # or failed and started backing off.
            if lease is not NO_LEASE:
                stored = yield from self.health.guard(GetToken(key), None)
                if (found := self._take_if_fresh(key, stored, want_until)) is not None:
                    return found
                health = yield from self._health_gate(key, record, fallback)
                if isinstance(health, Token):
                    return health
            try:
                token = yield from self._acquire_servable(key)
            except (InstanceNotInstalled, InvalidCredentials) as exc:
                # the old token is no use either: Wix no longer accepts this pair
                if self.near is not None:
                    self.near.discard(key)
                yield from self.tracker.failed(key, health, exc, record)
                raise
            except ProviderError as exc:
                yield from self.tracker.failed(key, health, exc, record)
                if fallback is not None and self._servable(fallback):
                    log.warning(
                        "early refresh of %s failed; serving the current token: %s", key, exc
                    )
                    self.on_failed(key, exc)
                    return fallback
                raise
            written = yield from self.health.guard(PutToken(token), True)
            yield from self._check_installed(key, written=token)
            if not written:
                # a newer token landed meanwhile (a slow writer lost the race): use it
                newer = yield from self.health.guard(GetToken(key), None)
                seen = self._usable(newer)
                if newer is not None and seen is not None and seen[0].servable:
                    token = newer
            yield from self.tracker.succeeded(key, health, token)
            self._remember(token, self._thresholds(token))
            self.on_acquired(key, token, "provider")
            return token
        finally:
            if lease is not NO_LEASE:
                try:
                    yield from ReleaseLease(lease)
                except StorageError as exc:  # it lapses by itself; never mask the outcome
                    log.warning("could not release the lease on %s: %s", key, exc)

    def _wait_for_lease(
        self, key: TokenKey, fallback: Token | None, want_until: float | None = None
    ) -> Flow[Lease | Token]:
        """Take the key's lease, or return the token another holder produced.

        ``NO_LEASE`` when the store cannot grant leases now (degraded mode).
        """
        deadline = time.monotonic() + self.wait_timeout  # waiting is not wall-clock business
        pause = 0.02
        while True:
            lease: Lease | None = yield from self.health.guard(
                AcquireLease(key, self.lease_ttl), NO_LEASE
            )
            if lease is not None:
                return lease
            if fallback is not None and self._servable(fallback):
                return fallback  # advisory: someone else refreshes, keep serving
            yield from Sleep(pause)
            pause = min(pause * 1.5, 0.25)
            stored: Token | None = yield from self.health.guard(GetToken(key), None)
            if (found := self._take_if_fresh(key, stored, want_until)) is not None:
                return found
            if time.monotonic() > deadline:
                raise StorageError(
                    f"gave up after {self.wait_timeout:.0f}s waiting for another process "
                    f"to refresh {key}"
                )

    # -- invalidation ---------------------------------------------------------
    def _invalidate_flow(self, token: Token) -> Flow[None]:
        if self.near is not None:
            self.near.discard(token.key, only=token.access_token)
        # On a store failure the near cache no longer has it; that is enough now.
        yield from self.health.guard(DeleteToken(token.key, only=token.access_token), False)

    def invalidate(self, token: Token) -> None:
        """Forget ``token`` (say, Wix refused it) without touching a newer one."""
        run_sync(self._invalidate_flow(token), self)

    async def ainvalidate(self, token: Token) -> None:
        await run_async(self._invalidate_flow(token), self)

    # -- bulk refresh ---------------------------------------------------------------
    def refresh_flow(self, key: TokenKey, *, want_until: float) -> Flow[Token]:
        """A token that outlives ``want_until``: the stored one if it does, else a new
        one (fleet-wide lease and compare-and-set as usual; no near-cache shortcut)."""
        return self._refresh_flow(key, want_until)

    def refresh(self, key: TokenKey, *, want_until: float) -> Token:
        return run_sync(self._refresh_flow(key, want_until), self)

    async def arefresh(self, key: TokenKey, *, want_until: float) -> Token:
        return await run_async(self._refresh_flow(key, want_until), self)

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
