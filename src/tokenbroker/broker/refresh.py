"""The bulk refresher: keep every installation's token fresh ahead of need.

``broker.refresher.refresh_due(within=1800, concurrency=20)`` walks the active
installations (removed ones are never refreshed) and, for each whose stored
token is missing or expires within ``within`` seconds, gets a new one through
the same path ``broker.token()`` uses: fleet-wide lease, compare-and-set write,
so several refreshers and the app's own callers never fetch one token twice.

A per-instance rate guard keeps a refresher from asking Wix for one instance
more than once per ``min_interval`` (default 60 s), and honours a 429's
``Retry-After`` for that instance, so ``--watch`` loops cannot trip Wix's
per-instance limit (about 200 requests a minute).

Installation health (``tokenbroker.core.health``) is read in one walk of the store
per run: a dead installation is skipped, and so is a failing one whose back-off
has not run out, without a request to Wix (the engine checks again under the
lease, so a refresher never asks Wix for an installation another process has just
seen fail).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final, Literal

import attrs

from ..core.clock import Clock, to_timestamp
from ..core.engine import TokenEngine
from ..core.errors import ConfigError, InvalidCredentials, RateLimited, TokenBrokerError
from ..core.flow import Flow, run_async, run_sync
from ..core.health import REMOVED
from ..core.health_policy import is_remembered
from ..core.ops import GetToken
from ..core.policy import TokenState
from ..core.tracing import span

if TYPE_CHECKING:
    from ..core.health import InstallationHealth
    from ..core.token import Token, TokenKey
    from .installations import Installations

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
    error: str | None = None
    """Why the run stopped before it began (the installations could not be listed):
    set only by the many-apps walk (``refresh_apps``), which goes on to the next app."""

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
        if self.error is not None:
            return f"not run: {self.error}"
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


def _not_now(health: InstallationHealth | None, now: float) -> str | None:
    """Why an installation is not to be asked for now, if it is dead or backing off."""
    if health is None or not health.backing_off(now):
        return None
    if health.dead:
        why = "removed" if health.dead_reason == REMOVED else "Wix says it is not installed"
        return f"dead ({why}): not fetched until it is installed again"
    assert health.next_attempt is not None
    error = f" ({health.error.kind})" if health.error is not None else ""
    return (
        f"backing off after {health.failures} failure(s){error}: next attempt at "
        f"{health.next_attempt.isoformat(timespec='seconds')}"
    )


def _check(within: float, concurrency: int) -> None:
    if within < 0:
        raise ConfigError(f"within must not be negative, not {within}")
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, not {concurrency}")


@attrs.define
class _Run:
    """What one bulk refresh has learnt so far that concerns every installation."""

    refused: str | None = None
    """Set once Wix refuses the app's credentials: the rest are not asked for."""


Progress = Callable[[RefreshResult], None]
Start = Callable[[int], None]
AppProgress = Callable[[str, RefreshResult], None]
"""``progress(app_name, result)`` of the many-apps walk."""
AppStart = Callable[[str, int], None]
"""``on_start(app_name, total)`` of the many-apps walk."""


class Refresher:
    """``broker.refresher``: the bulk refresher of one app.

    Each installation goes through one flow (``_one_flow``) over the engine's own
    refresh flow, so the engine is the port: the sync refresher drives it on
    worker threads, the async one on tasks.
    """

    def __init__(
        self,
        *,
        engine: TokenEngine,
        installations: Installations,
        clock: Clock,
        key: Callable[[str], TokenKey],
        guard: RateGuard | None = None,
    ) -> None:
        self._engine = engine
        self._installations = installations
        self._clock = clock
        self._key = key
        self.guard = guard or RateGuard()

    def _one_flow(
        self, instance_id: str, health: InstallationHealth | None, within: float, run: _Run
    ) -> Flow[RefreshResult]:
        """The decisions for one installation, written once for threads and tasks."""
        engine, guard = self._engine, self.guard
        if run.refused is not None:  # asking again would only spend the budget
            return RefreshResult(instance_id, "skipped", run.refused)
        now = self._clock.time()
        if (why := _not_now(health, now)) is not None:
            return RefreshResult(instance_id, "skipped", why)
        key = self._key(instance_id)
        want_until = now + within
        try:
            stored = yield from GetToken(key)
        except TokenBrokerError:
            stored = None  # the refresh below degrades properly
        if (
            stored is not None
            and to_timestamp(stored.expires_at) > want_until
            and engine.policy.state(stored, now) is TokenState.FRESH
        ):
            return RefreshResult(instance_id, "fresh")
        wait = guard.wait_needed(instance_id, now)
        if wait > 0:  # due, but this refresher asked Wix for it too recently
            return RefreshResult(instance_id, "skipped", f"rate guard: next try in {wait:.0f}s")
        try:
            token: Token = yield from engine.refresh_flow(key, want_until=want_until)
        except RateLimited as exc:
            guard.note(instance_id, self._clock.time(), exc.retry_after)
            return RefreshResult(instance_id, "failed", str(exc))
        except InvalidCredentials as exc:
            first = run.refused is None
            run.refused = "not tried: Wix refused the app's credentials"
            if first:
                return RefreshResult(instance_id, "failed", str(exc))
            return RefreshResult(instance_id, "skipped", run.refused)
        except TokenBrokerError as exc:
            if is_remembered(exc):  # another process saw it fail a moment ago
                return RefreshResult(instance_id, "skipped", str(exc))
            return RefreshResult(instance_id, "failed", str(exc))
        # obtained during this call (datetimes keep microseconds: allow for rounding)
        if to_timestamp(token.obtained_at) >= now - 0.001:
            guard.note(instance_id, self._clock.time())
            return RefreshResult(instance_id, "refreshed")
        return RefreshResult(instance_id, "fresh")  # another process refreshed it

    def refresh_due(
        self,
        *,
        within: float = 1800.0,
        concurrency: int = 20,
        progress: Progress | None = None,
        on_start: Start | None = None,
    ) -> RefreshReport:
        """Refresh every active installation whose token is missing or expires within
        ``within`` seconds: ``concurrency`` worker threads on the sync path."""
        _check(within, concurrency)
        with span("tokenbroker.bulk_refresh", app=self._installations.app_id) as current:
            report = self._refresh_due(within, concurrency, progress, on_start)
            current.set_attribute("refreshed", len(report.refreshed))
            current.set_attribute("failed", len(report.failed))
        return report

    def _refresh_due(
        self, within: float, concurrency: int, progress: Progress | None, on_start: Start | None
    ) -> RefreshReport:
        started = time.monotonic()
        ids = [(i.instance_id, health) for i, health in self._installations.list_with_health()]
        if on_start is not None:
            on_start(len(ids))
        report = RefreshReport()
        run = _Run()
        lock = threading.Lock()

        def work(item: tuple[str, InstallationHealth]) -> None:
            instance_id, health = item
            result = run_sync(self._one_flow(instance_id, health, within, run), self._engine)
            with lock:
                report.add(result)
                if progress is not None:
                    progress(result)

        workers = min(concurrency, max(len(ids), 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="tokenbroker-refresh") as pool:
            for _ in pool.map(work, ids):
                pass
        return _finish(report, started)

    async def arefresh_due(
        self,
        *,
        within: float = 1800.0,
        concurrency: int = 20,
        progress: Progress | None = None,
        on_start: Start | None = None,
    ) -> RefreshReport:
        """The async twin: ``concurrency`` tasks on the async path."""
        _check(within, concurrency)
        with span("tokenbroker.bulk_refresh", app=self._installations.app_id) as current:
            report = await self._arefresh_due(within, concurrency, progress, on_start)
            current.set_attribute("refreshed", len(report.refreshed))
            current.set_attribute("failed", len(report.failed))
        return report

    async def _arefresh_due(
        self, within: float, concurrency: int, progress: Progress | None, on_start: Start | None
    ) -> RefreshReport:
        started = time.monotonic()
        installations = await self._installations.alist_with_health()
        if on_start is not None:
            on_start(len(installations))
        report = RefreshReport()
        run = _Run()
        queue: asyncio.Queue[tuple[str, InstallationHealth]] = asyncio.Queue()
        for inst, health in installations:
            queue.put_nowait((inst.instance_id, health))

        async def worker() -> None:
            while True:
                try:
                    instance_id, health = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                flow = self._one_flow(instance_id, health, within, run)
                result = await run_async(flow, self._engine)
                report.add(result)
                if progress is not None:
                    progress(result)

        workers = min(concurrency, max(len(installations), 1))
        await asyncio.gather(*(worker() for _ in range(workers)))
        return _finish(report, started)


def _finish(report: RefreshReport, started: float) -> RefreshReport:
    report.seconds = time.monotonic() - started
    if report.failed:
        log.warning("bulk refresh: %s", report.summary())
    return report


def _per_app(
    name: str, progress: AppProgress | None, on_start: AppStart | None
) -> tuple[Progress | None, Start | None]:
    """The one-app callbacks that tell the many-apps ones which app it is."""
    step = None if progress is None else (lambda result: progress(name, result))
    start = None if on_start is None else (lambda total: on_start(name, total))
    return step, start


def _stopped(name: str, exc: TokenBrokerError) -> RefreshReport:
    log.warning("bulk refresh of app %s not run: %s", name, exc)
    return RefreshReport(error=str(exc))


def refresh_apps(
    apps: Sequence[tuple[str, Refresher]],
    within: float,
    concurrency: int,
    *,
    progress: AppProgress | None = None,
    on_start: AppStart | None = None,
) -> dict[str, RefreshReport]:
    """Each app's bulk refresh in turn, each on its own budget: ``concurrency``
    workers, its own rate guard, and a credential refusal that stops that app
    alone. One app's store error is its report's ``error``; the rest still run."""
    _check(within, concurrency)
    reports: dict[str, RefreshReport] = {}
    for name, refresher in apps:
        step, start = _per_app(name, progress, on_start)
        try:
            reports[name] = refresher.refresh_due(
                within=within, concurrency=concurrency, progress=step, on_start=start
            )
        except TokenBrokerError as exc:
            reports[name] = _stopped(name, exc)
    return reports


async def arefresh_apps(
    apps: Sequence[tuple[str, Refresher]],
    within: float,
    concurrency: int,
    *,
    progress: AppProgress | None = None,
    on_start: AppStart | None = None,
) -> dict[str, RefreshReport]:
    """The async twin of ``refresh_apps``."""
    _check(within, concurrency)
    reports: dict[str, RefreshReport] = {}
    for name, refresher in apps:
        step, start = _per_app(name, progress, on_start)
        try:
            reports[name] = await refresher.arefresh_due(
                within=within, concurrency=concurrency, progress=step, on_start=start
            )
        except TokenBrokerError as exc:
            reports[name] = _stopped(name, exc)
    return reports
