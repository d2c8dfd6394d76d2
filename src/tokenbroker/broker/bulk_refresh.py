"""The bulk refresher's batched path: due tokens listed, then fetched a batch at a time.

The store's batch operations (``tokenbroker.core.bulk``, found by
``tokenbroker.backends.bulk.bulk_for``) list the due installations a page at a time
with their tokens and health. Each page's rows are sorted (``sort_page``): fresh,
skipped (dead, backing off, rate guard, credentials refused), or to fetch. Those to
fetch go through ``batch_flow``, one decision core for threads and tasks, a batch at
a time: leases for the whole batch in one call, a second look at their tokens under
the leases (another refresher may have just finished), the fetches with at most
``concurrency`` requests in flight across the run (the leases renewed meanwhile by
the engine's watchdog if the fetches run long), the new tokens written in one
fenced compare-and-set call, the leases released in one call. Health is written
only when it changes: a failure that counts, or a success after failures.

Three batches are in progress at once, so one's store calls overlap the others'
fetches and the request slots stay busy.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias

import attrs

from ..core.bulk import BulkTokenStore, Due, DuePage
from ..core.clock import to_timestamp
from ..core.errors import (
    InstanceNotInstalled,
    InvalidCredentials,
    ProviderError,
    RateLimited,
    StorageError,
    TokenBrokerError,
)
from ..core.flow import Flow, Op
from ..core.health import InstallationHealth
from ..core.health_policy import is_remembered, reinstalled
from ..core.installation import Installation
from ..core.metrics import REFRESHES, outcome_of
from ..core.policy import TokenState
from ..core.protocols import InstallationStore, Lease
from ..core.token import Token, TokenKey
from .refresh_types import REFUSED, RateGuard, RefreshResult, RunState, not_now

if TYPE_CHECKING:
    from ..core.engine import TokenEngine

log = logging.getLogger("tokenbroker.refresh")

PAGE: Final = 500
"""Installations a page of the listing covers."""
WORKERS: Final = 3
"""Batches in progress at once."""

Fetch: TypeAlias = "Token | TokenBrokerError | None"
"""A fetch's outcome: the token, the error, or ``None`` when it was not tried."""


def batch_size(concurrency: int) -> int:
    """Keys a batch takes leases for: four rounds of the request slots, 50 to 500
    (fewer, larger store calls; the watchdog renews their leases if Wix is slow)."""
    return min(max(4 * concurrency, 50), PAGE)


class BatchPort(Protocol):
    """What the batch ops act on (``tokenbroker.broker.bulk_ports``)."""

    @property
    def bulk(self) -> BulkTokenStore: ...

    @property
    def health_store(self) -> InstallationStore: ...

    def fetch_all(
        self, leases: Sequence[Lease], ttl: float, state: RunState
    ) -> list[tuple[Fetch, bool]]: ...

    async def afetch_all(
        self, leases: Sequence[Lease], ttl: float, state: RunState
    ) -> list[tuple[Fetch, bool]]: ...


# -- the ops ----------------------------------------------------------------------------
@attrs.frozen
class TakeLeases(Op["list[Lease | None]"]):
    keys: tuple[TokenKey, ...]
    ttl: float

    def run(self, port: BatchPort) -> list[Lease | None]:
        return port.bulk.acquire_leases(self.keys, self.ttl)

    async def arun(self, port: BatchPort) -> list[Lease | None]:
        return await port.bulk.aacquire_leases(self.keys, self.ttl)


@attrs.frozen
class ReadTokens(Op["list[Token | None]"]):
    keys: tuple[TokenKey, ...]

    def run(self, port: BatchPort) -> list[Token | None]:
        return port.bulk.get_tokens(self.keys)

    async def arun(self, port: BatchPort) -> list[Token | None]:
        return await port.bulk.aget_tokens(self.keys)


@attrs.frozen
class FetchAll(Op["list[tuple[Fetch, bool]]"]):
    """Each lease's key fetched from the provider, at most the run's concurrency in
    flight; with each outcome, whether its lease was lost meanwhile. A credential
    refusal sets ``state.refused`` at once, and a fetch not started by then is not
    tried."""

    leases: tuple[Lease, ...]
    ttl: float
    state: RunState = attrs.field(eq=False)

    def run(self, port: BatchPort) -> list[tuple[Fetch, bool]]:
        return port.fetch_all(self.leases, self.ttl, self.state)

    async def arun(self, port: BatchPort) -> list[tuple[Fetch, bool]]:
        return await port.afetch_all(self.leases, self.ttl, self.state)


@attrs.frozen
class WriteTokens(Op["list[bool]"]):
    writes: tuple[tuple[Token, int], ...]

    def run(self, port: BatchPort) -> list[bool]:
        return port.bulk.put_tokens(self.writes)

    async def arun(self, port: BatchPort) -> list[bool]:
        return await port.bulk.aput_tokens(self.writes)


@attrs.frozen
class ReleaseLeases(Op[int]):
    leases: tuple[Lease, ...]

    def run(self, port: BatchPort) -> int:
        return port.bulk.release_leases(self.leases)

    async def arun(self, port: BatchPort) -> int:
        return await port.bulk.arelease_leases(self.leases)


# -- the decisions ----------------------------------------------------------------------
@attrs.frozen
class Sorted:
    """A page sorted: results decided without a fetch, rows for the batches, and
    rows for the per-key path (a dead installation installed again since)."""

    results: list[RefreshResult]
    batch: list[Due]
    per_key: list[Due]


@attrs.define
class BatchRun:
    """One bulk refresh on the batched path: the engine it refreshes for, and what
    every batch shares."""

    engine: TokenEngine
    guard: RateGuard
    app: str
    now: float
    """When the run began (the listing judges by it)."""
    until: float
    state: RunState = attrs.field(factory=RunState)

    def _fresh(self, token: Token | None, now: float) -> bool:
        return (
            token is not None
            and to_timestamp(token.expires_at) > self.until
            and self.engine.policy.state(token, now) is TokenState.FRESH
        )

    def sort_page(self, page: DuePage) -> Sorted:
        """What each row of a page needs, decided without I/O."""
        results = [RefreshResult(i, "fresh") for i in page.fresh]
        batch: list[Due] = []
        per_key: list[Due] = []
        now = self.engine.clock.time()
        for row in page.due:
            instance_id, health = row.key.instance_id, row.health
            if self.state.refused is not None:
                results.append(RefreshResult(instance_id, "skipped", self.state.refused))
            elif health is not None and reinstalled(health, _record(row)):
                per_key.append(row)  # the engine's flow revives it, then fetches
            elif (why := not_now(health, now)) is not None:
                results.append(RefreshResult(instance_id, "skipped", why))
            elif self._fresh(row.token, now):
                results.append(RefreshResult(instance_id, "fresh"))
            elif (wait := self.guard.wait_needed(instance_id, now)) > 0:
                reason = f"rate guard: next try in {wait:.0f}s"
                results.append(RefreshResult(instance_id, "skipped", reason))
            else:
                batch.append(row)
        return Sorted(results, batch, per_key)

    def batch_flow(self, rows: Sequence[Due]) -> Flow[list[RefreshResult]]:
        """Leases, a second look, fetches, writes and releases for one batch."""
        results: list[RefreshResult] = []
        ttl = self.engine.lease_ttl
        leases = yield from TakeLeases(tuple(row.key for row in rows), ttl)
        taken: list[Lease] = []
        for row, lease in zip(rows, leases, strict=True):
            if lease is None:
                reason = "another process holds its lease (it is refreshing it)"
                results.append(RefreshResult(row.key.instance_id, "skipped", reason))
            else:
                taken.append(lease)
        if not taken:
            return results
        by_key = {row.key: row for row in rows}
        try:
            # Between the listing and our leases another refresher may have finished.
            current = yield from ReadTokens(tuple(lease.key for lease in taken))
            now = self.engine.clock.time()
            wanted = []
            for lease, token in zip(taken, current, strict=True):
                if self._fresh(token, now):
                    results.append(RefreshResult(lease.key.instance_id, "fresh"))
                else:
                    wanted.append(lease)
            fetched = yield from FetchAll(tuple(wanted), ttl, self.state)
            writes: list[tuple[Token, int]] = []
            for lease, (outcome, lost) in zip(wanted, fetched, strict=True):
                row = by_key[lease.key]
                if isinstance(outcome, Token):
                    if lost:  # a fenced write would be refused: another holder took over
                        reason = "lost its lease while fetching: not written"
                        results.append(RefreshResult(row.key.instance_id, "skipped", reason))
                        continue
                    stamped = self._stamped(outcome)
                    if isinstance(stamped, Token):
                        writes.append((stamped, lease.fence))
                        continue
                    results.append((yield from self._failed(row, stamped)))
                else:
                    results.append((yield from self._failed(row, outcome)))
            self._count(fetched)
            if writes:
                written = yield from WriteTokens(tuple(writes))
                for (token, _), ok in zip(writes, written, strict=True):
                    results.append((yield from self._kept(by_key[token.key], token, ok)))
        finally:
            try:
                yield from ReleaseLeases(tuple(taken))
            except StorageError as exc:  # they lapse by themselves; never mask the outcome
                log.warning("could not release %d bulk refresh leases: %s", len(taken), exc)
        return results

    def _stamped(self, token: Token) -> Token | ProviderError:
        policy, now = self.engine.policy, self.engine.clock.time()
        stamped = policy.stamp(token)
        if policy.state(stamped, now).servable:
            return stamped
        return ProviderError(
            f"the provider's token for {token.key.instance_id} was due before it could "
            f"be used (lifetime {token.lifetime:.1f}s); not stored"
        )

    def _count(self, fetched: Sequence[tuple[Fetch, bool]]) -> None:
        outcomes = Counter(
            outcome_of(None if isinstance(f, Token) else f) for f, _ in fetched if f is not None
        )
        for outcome, count in outcomes.items():
            REFRESHES.inc((self.app, "bulk", outcome), count)

    def _failed(self, row: Due, error: TokenBrokerError | None) -> Flow[RefreshResult]:
        instance_id, engine = row.key.instance_id, self.engine
        if error is None:  # not tried: the credentials were refused meanwhile
            return RefreshResult(instance_id, "skipped", self.state.refused or REFUSED)
        if isinstance(error, InvalidCredentials):
            self.state.refused = REFUSED
            if not self.state.refusal_reported:
                self.state.refusal_reported = True
                return RefreshResult(instance_id, "failed", str(error))
            return RefreshResult(instance_id, "skipped", REFUSED)
        if isinstance(error, RateLimited):
            self.guard.note(instance_id, engine.clock.time(), error.retry_after)
        if is_remembered(error):
            return RefreshResult(instance_id, "skipped", str(error))
        if isinstance(error, InstanceNotInstalled) and engine.near is not None:
            engine.near.discard(row.key)
        health = row.health
        if health is None and engine.tracker.active:  # none kept yet: healthy so far
            health = InstallationHealth(instance_id)
        yield from engine.tracker.failed_at(row.key, health, error, row.registry_at)
        return RefreshResult(instance_id, "failed", str(error))

    def _kept(self, row: Due, token: Token, written: bool) -> Flow[RefreshResult]:
        instance_id, engine = row.key.instance_id, self.engine
        self.guard.note(instance_id, engine.clock.time())
        if not written:  # a newer token, or a newer lease's, is there
            return RefreshResult(instance_id, "fresh")
        yield from engine.tracker.recovered(row.key, row.health, token)
        near = engine.near
        if near is not None and near.get(row.key) is not None:
            # Replaced where held; not added: a refresher need not keep the fleet.
            near.put(token, engine.policy.thresholds(token), engine.clock.time())
        engine.on_acquired(row.key, token, "provider")
        return RefreshResult(instance_id, "refreshed")


def _record(row: Due) -> Installation:
    """The registry record as the listing saw it (active, and its ``updated_at``)."""
    return Installation(
        app_id=row.key.app_id, instance_id=row.key.instance_id, updated_at=row.registry_at
    )


def chunks(rows: Sequence[Due], size: int) -> list[Sequence[Due]]:
    return [rows[start : start + size] for start in range(0, len(rows), size)]
