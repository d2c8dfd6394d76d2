"""The bulk refresher: keep every installation's token fresh ahead of need.

``broker.refresh_due(within=1800, concurrency=20)`` walks the active
installations (removed ones are never refreshed) and, for each whose stored
token is missing or expires within ``within`` seconds, gets a new one through
the same path ``broker.token()`` uses: fleet-wide lease, compare-and-set write,
so several refreshers and the app's own callers never fetch one token twice.

A per-instance rate guard keeps a refresher from asking Wix for one instance
more than once per ``min_interval`` (default 60 s), and honours a 429's
``Retry-After`` for that instance, so ``--watch`` loops cannot trip Wix's
per-instance limit (about 200 requests a minute).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal

import attrs

from .core.clock import to_timestamp
from .core.errors import ConfigError, RateLimited, TokenBrokerError
from .core.policy import TokenState

if TYPE_CHECKING:
    from .client import TokenBroker

log = logging.getLogger("tokenbroker.refresh")

Outcome = Literal["refreshed", "fresh", "skipped", "failed"]
DEFAULT_MIN_INTERVAL: Final = 60.0


@attrs.frozen
class RefreshResult:
    instance_id: str
    outcome: Outcome
    reason: str | None = None


@attrs.define
class RefreshReport:
    """What one bulk refresh did."""

    refreshed: list[str] = attrs.field(factory=list)
    fresh: list[str] = attrs.field(factory=list)
    skipped: list[tuple[str, str]] = attrs.field(factory=list)
    failed: list[tuple[str, str]] = attrs.field(factory=list)
    seconds: float = 0.0

    def add(self, result: RefreshResult) -> None:
        if result.outcome == "refreshed":
            self.refreshed.append(result.instance_id)
        elif result.outcome == "fresh":
            self.fresh.append(result.instance_id)
        elif result.outcome == "skipped":
            self.skipped.append((result.instance_id, result.reason or ""))
        else:
            self.failed.append((result.instance_id, result.reason or ""))

    @property
    def total(self) -> int:
        return len(self.refreshed) + len(self.fresh) + len(self.skipped) + len(self.failed)

    def summary(self) -> str:
        return (
            f"{self.total} installation(s) in {self.seconds:.1f}s: "
            f"{len(self.refreshed)} refreshed, {len(self.fresh)} still fresh, "
            f"{len(self.skipped)} skipped, {len(self.failed)} failed"
        )


class RateGuard:
    """Per-instance spacing of upstream requests made by refreshers in this process."""

    def __init__(self, min_interval: float = DEFAULT_MIN_INTERVAL) -> None:
        self.min_interval = min_interval
        self._not_before: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait_needed(self, instance_id: str, now: float) -> float:
        with self._lock:
            return max(self._not_before.get(instance_id, 0.0) - now, 0.0)

    def note(self, instance_id: str, now: float, retry_after: float | None = None) -> None:
        with self._lock:
            self._not_before[instance_id] = now + max(self.min_interval, retry_after or 0.0)


async def arefresh_due(
    broker: TokenBroker,
    *,
    within: float,
    concurrency: int,
    guard: RateGuard,
    progress: Callable[[RefreshResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> RefreshReport:
    if within < 0:
        raise ConfigError(f"within must not be negative, not {within}")
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, not {concurrency}")
    started = time.monotonic()
    installations = await asyncio.to_thread(broker.installations)
    if on_start is not None:
        on_start(len(installations))
    report = RefreshReport()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for inst in installations:
        queue.put_nowait(inst.instance_id)
    engine = broker.engine

    async def one(instance_id: str) -> RefreshResult:
        key = broker.key(instance_id)
        now = broker.clock.time()
        want_until = now + within
        try:
            stored = await broker.store.aget_token(key)
        except TokenBrokerError:
            stored = None  # arefresh below degrades properly
        if (
            stored is not None
            and to_timestamp(stored.expires_at) > want_until
            and broker.policy.state(stored, now) is TokenState.FRESH
        ):
            return RefreshResult(instance_id, "fresh")
        wait = guard.wait_needed(instance_id, now)
        if wait > 0:  # due, but this refresher asked Wix for it too recently
            return RefreshResult(instance_id, "skipped", f"rate guard: next try in {wait:.0f}s")
        try:
            token = await engine.arefresh(key, want_until=want_until)
        except RateLimited as exc:
            guard.note(instance_id, broker.clock.time(), exc.retry_after)
            return RefreshResult(instance_id, "failed", str(exc))
        except TokenBrokerError as exc:
            return RefreshResult(instance_id, "failed", str(exc))
        # obtained during this call (datetimes keep microseconds: allow for rounding)
        if to_timestamp(token.obtained_at) >= now - 0.001:
            guard.note(instance_id, broker.clock.time())
            return RefreshResult(instance_id, "refreshed")
        return RefreshResult(instance_id, "fresh")  # another process refreshed it

    async def worker() -> None:
        while True:
            try:
                instance_id = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            result = await one(instance_id)
            report.add(result)
            if progress is not None:
                progress(result)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, max(len(installations), 1)))))
    report.seconds = time.monotonic() - started
    if report.failed:
        log.warning("bulk refresh: %s", report.summary())
    return report
