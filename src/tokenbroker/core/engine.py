"""The get-or-refresh engine: the path a token travels, hop by hop.

``get(key)``: near cache → (single-flight) → store → fleet-wide lease → store
again → provider → policy stamps → store writes (compare-and-set) → lease
released → listeners told → token returned.

The hops after the near cache are one generator, ``_sourced_flow``, of typed
ops (``tokenbroker.core.ops``), driven by ``run_sync`` for threads and
``run_async`` for asyncio; the decisions live there once (the steps it takes are
in ``tokenbroker.core.engine_steps``). The engine is its own port: the ops act
on its ``store`` and ``provider``.

What it reports (``tokenbroker.core.metrics``, ``tokenbroker.core.tracing``): a
near-cache hit adds one to a plain integer and nothing else; the slow path
counts each request by where its token came from (store, provider, or a still
valid "stale" one served because a refresh failed or someone else refreshes),
counts each provider fetch by window, runs under a ``tokenbroker.fetch`` span
and logs the fetch at DEBUG with its fields.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from .clock import Clock
from .degraded import StoreHealth
from .engine_steps import NO_LEASE, EngineSteps, Served, Source
from .errors import (
    InstanceNotInstalled,
    InvalidCredentials,
    ProviderError,
    StorageError,
    TokenBrokerError,
)
from .flow import Flow, run_async, run_sync
from .health_policy import Backoff
from .health_tracker import HealthListener, HealthTracker
from .metrics import CURRENT_APP, REFRESHES, TOKEN_REQUESTS, outcome_of
from .nearcache import NearCache
from .ops import GetToken, ReleaseLease
from .policy import RefreshPolicy, TokenState
from .protocols import InstallationStore, TokenProvider, TokenStore
from .singleflight import TaskFlights, ThreadFlights
from .token import Token, TokenKey
from .tracing import span
from .watchdog import ThreadWatchdog

__all__ = ["NO_LEASE", "Source", "TokenEngine"]

log = logging.getLogger("tokenbroker")

AcquiredListener = Callable[[TokenKey, Token, Source], None]
FailedListener = Callable[[TokenKey, BaseException], None]
DegradedListener = Callable[[str, BaseException], None]
RecoveredListener = Callable[[str], None]


def _ignore(*_: Any) -> None:
    """The default listener."""


class TokenEngine(EngineSteps):
    """Hands out tokens that are never expired, fetching each one once.

    ``lease_ttl`` bounds how long one holder may keep a key's lease (it must
    outlast the provider's whole retry budget); ``wait_timeout`` how long a
    caller waits for another process's refresh before giving up. A fetch under a
    fenced lease renews it every third of ``lease_ttl`` (``watchdog``) and writes
    with the lease's fence; one that lost its lease meanwhile writes nothing
    (``tokenbroker.core.fencing``). With a
    ``registry``, the slow path refuses an installation recorded as removed
    (without asking the provider) and purges a token whose installation was
    removed while it was being fetched; it keeps each installation's health there
    (``tokenbroker.core.health``), backing off by ``backoff`` from one Wix refuses.
    ``degrade=False`` (one-shot commands) raises a store outage instead of riding it out.
    ``app`` labels what the engine reports (metrics; the keys' app id otherwise).
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
        app: str = "",
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
        self.app = app
        self.near_hits = 0
        self.health = StoreHealth(
            store.url,
            degrade=degrade,
            on_degraded=on_degraded,
            on_recovered=on_recovered,
            app=app,
        )
        self.health_store = registry  # the port of the health ops (none: health is off)
        self.tracker = HealthTracker(
            backoff or Backoff(), clock, self.health, on_health_changed, active=registry is not None
        )
        self.watchdog = ThreadWatchdog()
        self._threads = ThreadFlights()
        self._tasks = TaskFlights()
        self._background = set()
        self._report()

    # -- the hot path ---------------------------------------------------------
    def get(self, key: TokenKey) -> Token:
        near = self.near
        if near is not None:
            entry = near.get(key)
            if entry is not None:
                now = self.clock.time()
                if now < entry.refresh_at:
                    self.near_hits += 1
                    return entry.token
                if now < entry.must_refresh_at and self._threads.in_flight(key):
                    self.near_hits += 1
                    return entry.token  # advisory: someone is refreshing already
        return self._get_slow(key)

    async def aget(self, key: TokenKey) -> Token:
        near = self.near
        if near is not None:
            entry = near.get(key)
            if entry is not None:
                now = self.clock.time()
                if now < entry.refresh_at:
                    self.near_hits += 1
                    return entry.token
                if now < entry.must_refresh_at:
                    # advisory: refresh in the background, serve the valid token now
                    self._refresh_in_background(key)
                    self.near_hits += 1
                    return entry.token
        return await self._aget_slow(key)

    # -- single-flight ----------------------------------------------------------
    def _counted(self, key: TokenKey, source: str, exc: BaseException | None = None) -> None:
        TOKEN_REQUESTS.inc((self.app or key.app_id, source, outcome_of(exc)))

    def _get_slow(self, key: TokenKey) -> Token:
        flight, leader = self._threads.join(key)
        if not leader:
            try:
                token, source = flight.result()
            except BaseException as exc:
                self._counted(key, "provider", exc)
                raise
            self._counted(key, source)
            return token
        app = CURRENT_APP.set(self.app or key.app_id)
        started = time.monotonic()
        try:
            with span("tokenbroker.fetch", app=key.app_id, instance=key.instance_id) as current:
                result = run_sync(self._sourced_flow(key), self)
                current.set_attribute("source", result[1])
                current.set_attribute("outcome", "ok")
        except BaseException as exc:
            flight.set_exception(exc)
            self._fetched(key, "provider", started, exc)
            if isinstance(exc, Exception):
                self.on_failed(key, exc)
            raise
        else:
            flight.set_result(result)
            self._fetched(key, result[1], started)
            return result[0]
        finally:
            CURRENT_APP.reset(app)
            self._threads.land(key, flight)

    async def _aget_slow(self, key: TokenKey, *, counted: bool = True) -> Token:
        flight, leader = self._tasks.join(key)
        if not leader:
            # shield: one waiter being cancelled must not cancel the shared flight
            try:
                token, source = await asyncio.shield(flight)
            except Exception as exc:
                self._counted(key, "provider", exc)
                raise
            self._counted(key, source)
            return token
        app = CURRENT_APP.set(self.app or key.app_id)
        started = time.monotonic()
        try:
            with span("tokenbroker.fetch", app=key.app_id, instance=key.instance_id) as current:
                result = await run_async(self._sourced_flow(key), self)
                current.set_attribute("source", result[1])
                current.set_attribute("outcome", "ok")
        except BaseException as exc:
            flight.set_exception(exc)
            if counted:
                self._fetched(key, "provider", started, exc)
            if isinstance(exc, Exception):
                self.on_failed(key, exc)
            flight.exception()  # mark retrieved: no "never retrieved" warning without waiters
            raise
        else:
            flight.set_result(result)
            if counted:
                self._fetched(key, result[1], started)
            return result[0]
        finally:
            CURRENT_APP.reset(app)
            self._tasks.land(key, flight)

    def _fetched(
        self, key: TokenKey, source: str, started: float, exc: BaseException | None = None
    ) -> None:
        """Count one slow-path request and log it at DEBUG (fields, never the token)."""
        self._counted(key, source, exc)
        duration = time.monotonic() - started
        outcome = outcome_of(exc)
        log.debug(
            "token for %s from %s in %.3fs: %s",
            key,
            source,
            duration,
            outcome,
            extra={
                "app": key.app_id,
                "instance": key.instance_id,
                "source": source,
                "duration": duration,
                "outcome": outcome,
                "request_id": getattr(exc, "request_id", None),
            },
        )

    def _refresh_in_background(self, key: TokenKey) -> None:
        if self._tasks.in_flight(key):
            return
        task = asyncio.get_running_loop().create_task(self._background_refresh(key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _background_refresh(self, key: TokenKey) -> None:
        try:
            await self._aget_slow(key, counted=False)  # the caller was counted as a hit
        except TokenBrokerError as exc:  # the caller already has a valid token
            log.warning("early refresh of %s failed; serving the current token: %s", key, exc)

    # -- the flow -------------------------------------------------------------
    def _refreshed(self, key: TokenKey, window: str, exc: BaseException | None = None) -> None:
        REFRESHES.inc((self.app or key.app_id, window, outcome_of(exc)))

    def _sourced_flow(
        self, key: TokenKey, want_until: float | None = None
    ) -> Flow[tuple[Token, Served]]:
        """A servable token for ``key`` and where it came from."""
        record = yield from self._check_installed(key)
        stored: Token | None = yield from self.health.guard(GetToken(key), None)
        if (found := self._take_if_fresh(key, stored, want_until)) is not None:
            return found, "store"
        seen = self._usable(stored)
        fallback = stored if seen is not None and seen[0] is TokenState.ADVISORY else None
        health = yield from self._health_gate(key, record, fallback)
        if isinstance(health, Token):
            return health, "stale"
        lease = yield from self._wait_for_lease(key, fallback, want_until)
        if isinstance(lease, Token):
            return lease, "stale" if lease is fallback else "store"
        window = "bulk" if want_until is not None else "advisory" if fallback else "mandatory"
        try:
            # Between our first look and our lease another process may have finished,
            # or failed and started backing off.
            if lease is not NO_LEASE:
                stored = yield from self.health.guard(GetToken(key), None)
                if (found := self._take_if_fresh(key, stored, want_until)) is not None:
                    return found, "store"
                health = yield from self._health_gate(key, record, fallback)
                if isinstance(health, Token):
                    return health, "stale"
            try:
                fetched = yield from self._acquire_servable(key, lease)
            except (InstanceNotInstalled, InvalidCredentials) as exc:
                self._refreshed(key, window, exc)
                # the old token is no use either: Wix no longer accepts this pair
                if self.near is not None:
                    self.near.discard(key)
                yield from self.tracker.failed(key, health, exc, record)
                raise
            except ProviderError as exc:
                self._refreshed(key, window, exc)
                yield from self.tracker.failed(key, health, exc, record)
                if fallback is not None and self._servable(fallback):
                    log.warning(
                        "early refresh of %s failed; serving the current token: %s", key, exc
                    )
                    self.on_failed(key, exc)
                    return fallback, "stale"
                raise
            self._refreshed(key, window)
            return (yield from self._keep(key, fetched, health, lease)), "provider"
        finally:
            if lease is not NO_LEASE:
                try:
                    yield from ReleaseLease(lease)
                except StorageError as exc:  # it lapses by itself; never mask the outcome
                    log.warning("could not release the lease on %s: %s", key, exc)

    def _refresh_flow(self, key: TokenKey, want_until: float | None = None) -> Flow[Token]:
        token, _ = yield from self._sourced_flow(key, want_until)
        return token

    # -- bulk refresh ---------------------------------------------------------------
    def refresh_flow(self, key: TokenKey, *, want_until: float) -> Flow[Token]:
        """A token that outlives ``want_until``: the stored one if it does, else a new
        one (fleet-wide lease and compare-and-set as usual; no near-cache shortcut)."""
        scope = CURRENT_APP.set(self.app or key.app_id)  # labels the provider requests
        try:
            return (yield from self._refresh_flow(key, want_until))
        finally:
            with suppress(ValueError):  # closed from another context: nothing to undo
                CURRENT_APP.reset(scope)

    def refresh(self, key: TokenKey, *, want_until: float) -> Token:
        return run_sync(self.refresh_flow(key, want_until=want_until), self)

    async def arefresh(self, key: TokenKey, *, want_until: float) -> Token:
        return await run_async(self.refresh_flow(key, want_until=want_until), self)

    def close(self) -> None:
        """End the watchdog's thread now rather than after it idled (fetches still
        running on other threads keep it until they end)."""
        self.watchdog.close()

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.to_thread(self.watchdog.close)
