"""The ports the bulk refresher's batch flow runs on: threads or tasks.

Both bound the requests in flight across the whole run (every batch shares them):
``ThreadPort`` by its pool of ``concurrency`` fetch threads, ``TaskPort`` by a
semaphore of ``concurrency``; and each request to a ``RateBudget``, when the
refresher has one. Both keep every fenced lease of a batch renewed
while its fetches wait and run (the engine's ``ThreadWatchdog`` on threads, a
``LoopWatch`` a lease on a loop), and report a lease found lost meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import TYPE_CHECKING

from ..core.bulk import BulkTokenStore
from ..core.errors import InvalidCredentials, TokenBrokerError
from ..core.metrics import CURRENT_APP
from ..core.protocols import InstallationStore, Lease
from ..core.watchdog import LoopWatch, Watch
from .bulk_refresh import Fetch
from .refresh_types import REFUSED, RateBudget, RunState

if TYPE_CHECKING:
    from ..core.engine import TokenEngine


class _Port:
    def __init__(
        self, engine: TokenEngine, bulk: BulkTokenStore, app: str, budget: RateBudget | None
    ) -> None:
        self.engine = engine
        self.bulk = bulk
        self.app = app
        self.budget = budget
        self.provider = engine.provider
        self.store = engine.store  # the per-key ops of the health tracker and renewals

    @property
    def health_store(self) -> InstallationStore:
        registry = self.engine.registry
        assert registry is not None, "the health tracker is inactive without a registry"
        return registry


class ThreadPort(_Port):
    """Fetches on a pool of ``concurrency`` threads shared by every batch."""

    def __init__(
        self,
        engine: TokenEngine,
        bulk: BulkTokenStore,
        app: str,
        budget: RateBudget | None,
        pool: ThreadPoolExecutor,
    ) -> None:
        super().__init__(engine, bulk, app, budget)
        self.pool = pool

    def fetch_all(
        self, leases: Sequence[Lease], ttl: float, state: RunState
    ) -> list[tuple[Fetch, bool]]:
        watchdog, renew = self.engine.watchdog, self.store.renew_lease
        watches: list[Watch | None] = [
            watchdog.watch(lease, ttl, renew) if lease.fence else None for lease in leases
        ]
        provider, app, budget = self.provider, self.app, self.budget

        def one(index: int) -> Fetch:
            watch = watches[index]
            if budget is not None and (wait := budget.reserve()) > 0:
                time.sleep(wait)  # the app's requests a second
            if state.refused is not None or (watch is not None and watch.lost):
                return None
            scope = CURRENT_APP.set(app)  # labels the provider's request metrics
            try:
                return provider.acquire(leases[index].key)
            except InvalidCredentials as exc:
                state.refused = REFUSED  # the fetches not yet started are not sent
                return exc
            except TokenBrokerError as exc:
                return exc
            finally:
                with suppress(ValueError):
                    CURRENT_APP.reset(scope)

        try:
            outcomes = list(self.pool.map(one, range(len(leases))))
        finally:
            for watch in watches:
                if watch is not None:
                    watchdog.stop(watch)
        return [
            (outcome, watch is not None and watch.lost)
            for outcome, watch in zip(outcomes, watches, strict=True)
        ]

    async def afetch_all(
        self, leases: Sequence[Lease], ttl: float, state: RunState
    ) -> list[tuple[Fetch, bool]]:
        raise TypeError("the thread port runs sync flows only")


class TaskPort(_Port):
    """Fetches on tasks of the running loop, ``concurrency`` at a time."""

    def __init__(
        self,
        engine: TokenEngine,
        bulk: BulkTokenStore,
        app: str,
        budget: RateBudget | None,
        slots: asyncio.Semaphore,
    ) -> None:
        super().__init__(engine, bulk, app, budget)
        self.slots = slots

    def fetch_all(
        self, leases: Sequence[Lease], ttl: float, state: RunState
    ) -> list[tuple[Fetch, bool]]:
        raise TypeError("the task port runs async flows only")

    async def afetch_all(
        self, leases: Sequence[Lease], ttl: float, state: RunState
    ) -> list[tuple[Fetch, bool]]:
        renew = self.store.arenew_lease
        watches = [LoopWatch(lease, ttl, renew) if lease.fence else None for lease in leases]
        provider, slots, budget = self.provider, self.slots, self.budget

        async def one(lease: Lease, watch: LoopWatch | None) -> Fetch:
            async with slots:
                if budget is not None and (wait := budget.reserve()) > 0:
                    await asyncio.sleep(wait)
                if state.refused is not None or (watch is not None and watch.lost):
                    return None
                try:
                    return await provider.aacquire(lease.key)
                except InvalidCredentials as exc:
                    state.refused = REFUSED
                    return exc
                except TokenBrokerError as exc:
                    return exc

        scope = CURRENT_APP.set(self.app)  # the tasks copy it: labels their requests
        try:
            outcomes = await asyncio.gather(
                *(one(lease, watch) for lease, watch in zip(leases, watches, strict=True))
            )
        finally:
            with suppress(ValueError):
                CURRENT_APP.reset(scope)
            for watch in watches:
                if watch is not None:
                    watch.stop()
        return [
            (outcome, watch is not None and watch.lost)
            for outcome, watch in zip(outcomes, watches, strict=True)
        ]
