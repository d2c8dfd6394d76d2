"""The engine's steps between the near cache and the provider, and what it reports.

``EngineSteps`` is ``TokenEngine``'s base (``tokenbroker.core.engine``): the
decisions one refresh makes on the way (is the stored token fresh, is the
installation still there, may a fetch go out now, whose lease is it) and the
invalidation flows, kept apart so that each module stays readable. It also holds
what the engine reports: counters in ``tokenbroker.core.metrics`` and
structured log lines (fields in ``extra``, never a token).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final, Literal

from .clock import Clock
from .degraded import StoreHealth
from .errors import InstanceNotInstalled, ProviderError, StorageError
from .flow import Flow, Sleep, run_async, run_sync
from .health import InstallationHealth
from .health_tracker import HealthTracker
from .installation import Installation
from .metrics import LEASE_WAIT, STORE_DEGRADED, TOKEN_REQUESTS, Reading
from .nearcache import NearCache
from .ops import (
    Acquire,
    AcquireHeld,
    AcquireLease,
    DeleteToken,
    Fetched,
    GetToken,
    PutToken,
    Registered,
)
from .policy import RefreshPolicy, TokenState, state_at
from .protocols import InstallationStore, Lease, TokenProvider, TokenStore
from .singleflight import TaskFlights, ThreadFlights
from .token import Token, TokenKey
from .watchdog import ThreadWatchdog

log = logging.getLogger("tokenbroker")

Source = Literal["store", "provider"]
Served = Literal["store", "provider", "stale"]

# Stands in for a lease when the store cannot grant one (degraded mode).
NO_LEASE: Final = Lease(key=TokenKey("", "", ""), owner="", expires_at=0.0)


def _near_reading(engine: EngineSteps) -> Reading:
    """The engine's near-cache hits, as ``tokenbroker_token_requests_total`` counts them."""
    return [((engine.app, "near", "ok"), float(engine.near_hits))]


def _degraded_reading(engine: EngineSteps) -> Reading:
    return [((engine.app,), 1.0 if engine.health.error is not None else 0.0)]


class EngineSteps:
    """The decisions of one refresh; ``TokenEngine`` drives them (see its docstring)."""

    provider: TokenProvider
    store: TokenStore
    policy: RefreshPolicy
    clock: Clock
    near: NearCache | None
    lease_ttl: float
    wait_timeout: float
    registry: InstallationStore | None
    health: StoreHealth
    tracker: HealthTracker
    watchdog: ThreadWatchdog
    """Renews the leases of fetches on threads that run long (one thread per engine)."""
    on_acquired: Callable[[TokenKey, Token, Source], None]
    app: str
    near_hits: int
    """Near-cache hits so far: a plain integer, bumped on the hit path, read at scrape."""
    _threads: ThreadFlights[TokenKey, tuple[Token, Served]]
    _tasks: TaskFlights[TokenKey, tuple[Token, Served]]
    _background: set[asyncio.Task[None]]

    def _report(self) -> None:
        """Register this engine's scrape-time readings (weakly: it may go away)."""
        TOKEN_REQUESTS.add_source(self, _near_reading)
        STORE_DEGRADED.add_source(self, _degraded_reading)

    def settle_counts(self) -> None:
        """Move the near-hit count into the registry itself (when the engine closes:
        the total must not drop when this engine stops being read)."""
        hits, self.near_hits = self.near_hits, 0
        if hits:
            TOKEN_REQUESTS.inc((self.app, "near", "ok"), hits)

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

    def _fetch(self, key: TokenKey, lease: Lease) -> Flow[Fetched]:
        """One provider fetch; under a fenced lease the watchdog renews it meanwhile."""
        if lease.fence:
            return (yield from AcquireHeld(key, lease, self.lease_ttl))
        return Fetched((yield from Acquire(key)), lost=False)

    def _acquire_servable(self, key: TokenKey, lease: Lease = NO_LEASE) -> Flow[Fetched]:
        """A new, stamped token that can be handed out now, and whether ``lease``
        was lost while it was fetched.

        A token whose life ran out during its own fetch, or whose lifetime is
        shorter than the mandatory window, is fetched once more; twice unusable is
        a ``ProviderError``: an expired token is never handed out.
        """
        lost = False
        for _ in range(2):
            fetched = yield from self._fetch(key, lease)
            lost = lost or fetched.lost
            token = self.policy.stamp(fetched.token)
            if self.policy.state(token, self.clock.time()).servable:
                return Fetched(token, lost)
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

    def _keep(
        self,
        key: TokenKey,
        fetched: Fetched,
        health: InstallationHealth | None,
        lease: Lease = NO_LEASE,
    ) -> Flow[Token]:
        """Store a new token (compare-and-set, fenced by ``lease``) and keep it near;
        the token to hand out: this one, or a newer one that landed meanwhile (a slow
        writer lost the race, or its lease: its write was refused).

        A fetch whose lease was lost writes nothing: the holder that took over
        writes. It hands out that holder's token when the store has a servable
        one, else its own (valid and just fetched, only not stored).
        """
        token = fetched.token
        if fetched.lost:
            log.warning(
                "not writing the new token for %s: its lease was lost during the fetch",
                key,
                extra={"app": key.app_id, "instance": key.instance_id, "fence": lease.fence},
            )
            written = False
            yield from self._check_installed(key)
        else:
            written = yield from self.health.guard(PutToken(token, lease.fence), True)
            yield from self._check_installed(key, written=token)
        if not written:
            newer = yield from self.health.guard(GetToken(key), None)
            seen = self._usable(newer)
            if newer is not None and seen is not None and seen[0].servable:
                token = newer
        yield from self.tracker.succeeded(key, health, token)
        self._remember(token, self._thresholds(token))
        self.on_acquired(key, token, "provider")
        return token

    def _wait_for_lease(
        self, key: TokenKey, fallback: Token | None, want_until: float | None = None
    ) -> Flow[Lease | Token]:
        """Take the key's lease, or return the token another holder produced.

        ``NO_LEASE`` when the store cannot grant leases now (degraded mode). How long
        this took goes to ``tokenbroker_lease_wait_seconds``; a wait that had to
        pause is logged at DEBUG.
        """
        started = time.monotonic()  # waiting is not wall-clock business
        deadline = started + self.wait_timeout
        pause = 0.02
        waited = False
        try:
            while True:
                lease: Lease | None = yield from self.health.guard(
                    AcquireLease(key, self.lease_ttl), NO_LEASE
                )
                if lease is not None:
                    return lease
                if fallback is not None and self._servable(fallback):
                    return fallback  # advisory: someone else refreshes, keep serving
                waited = True
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
        finally:
            duration = time.monotonic() - started
            LEASE_WAIT.observe((self.app,), duration)
            if waited:
                log.debug(
                    "waited %.3fs for the lease on %s",
                    duration,
                    key,
                    extra={"app": key.app_id, "instance": key.instance_id, "duration": duration},
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
