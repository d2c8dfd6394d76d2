"""The bulk refresher: keep every installation's token fresh ahead of need.

``broker.refresher.refresh_due(within=1800, concurrency=20)`` asks the store for
the active installations (removed ones are never refreshed) whose token is
missing, expires within ``within`` seconds or is due by the refresh policy, a
page at a time, and refreshes them in batches (``tokenbroker.broker.bulk_refresh``):
fleet-wide leases, fenced compare-and-set writes, so several refreshers and the
app's own callers never fetch one token twice, with at most ``concurrency``
requests to Wix in flight. A dead installation that was installed again since
goes through the engine's per-key flow (``_one_flow``), which revives it.

A per-instance rate guard keeps a refresher from asking Wix for one instance
more than once per ``min_interval`` (default 60 s), and honours a 429's
``Retry-After`` for that instance, so ``--watch`` loops cannot trip Wix's
per-instance limit (about 200 requests a minute).

Installation health (``tokenbroker.core.health``) comes with the listing: a dead
installation is skipped, and so is a failing one whose back-off has not run out,
without a request to Wix; it is written only when a fetch changes it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..backends.bulk import bulk_for
from ..core.bulk import BulkTokenStore, Due, DuePage
from ..core.clock import Clock, to_timestamp
from ..core.engine import TokenEngine
from ..core.errors import InvalidCredentials, RateLimited, StorageError, TokenBrokerError
from ..core.flow import Flow, run_async, run_sync
from ..core.health_policy import is_remembered
from ..core.ops import GetToken
from ..core.policy import TokenState
from ..core.tracing import span
from .bulk_ports import TaskPort, ThreadPort
from .bulk_refresh import PAGE, WORKERS, BatchRun, batch_size, chunks
from .refresh_types import (
    DEFAULT_MIN_INTERVAL,
    REFUSED,
    AppProgress,
    AppStart,
    Progress,
    RateBudget,
    RateGuard,
    RefreshReport,
    RefreshResult,
    RunState,
    Start,
    check_arguments,
    not_now,
)

if TYPE_CHECKING:
    from ..core.health import InstallationHealth
    from ..core.token import Token, TokenKey
    from .installations import Installations

log = logging.getLogger("tokenbroker.refresh")

__all__ = [
    "DEFAULT_MIN_INTERVAL",
    "RateBudget",
    "AppProgress",
    "AppStart",
    "Progress",
    "Start",
    "RateGuard",
    "RefreshReport",
    "RefreshResult",
    "Refresher",
    "arefresh_apps",
    "refresh_apps",
]


class Refresher:
    """``broker.refresher``: the bulk refresher of one app.

    Batches go through ``BatchRun.batch_flow``, driven on worker threads
    (``refresh_due``) or tasks (``arefresh_due``); what the batches do not serve goes
    through one flow per installation (``_one_flow``) over the engine's own refresh
    flow, the engine its port.
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
        self.budget: RateBudget | None = None
        """The app's requests a second (``RateBudget``), none by default: set it to
        cap them as well as ``concurrency`` (``tokenbroker refresh --rate``)."""

    def _one_flow(
        self, instance_id: str, health: InstallationHealth | None, within: float, run: RunState
    ) -> Flow[RefreshResult]:
        """The decisions for one installation, written once for threads and tasks."""
        engine, guard = self._engine, self.guard
        if run.refused is not None:  # asking again would only spend the budget
            return RefreshResult(instance_id, "skipped", run.refused)
        now = self._clock.time()
        if (why := not_now(health, now)) is not None:
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
            run.refused = REFUSED
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
        """Refresh every active installation whose token is missing or due within
        ``within`` seconds: batches on worker threads, ``concurrency`` requests at most
        in flight. ``on_start(total)`` is called before the first result and after each
        page of the listing, with the installations listed so far."""
        check_arguments(within, concurrency)
        with span("tokenbroker.bulk_refresh", app=self._installations.app_id) as current:
            report = self._refresh_due(within, concurrency, progress, on_start)
            current.set_attribute("refreshed", len(report.refreshed))
            current.set_attribute("failed", len(report.failed))
        return report

    def _batch_run(self, within: float) -> tuple[BatchRun, BulkTokenStore]:
        engine = self._engine
        app = engine.app or self._installations.app_id
        now = self._clock.time()
        run = BatchRun(engine, self.guard, app, now, now + within)
        return run, bulk_for(self._installations.store)

    def _refresh_due(
        self, within: float, concurrency: int, progress: Progress | None, on_start: Start | None
    ) -> RefreshReport:
        started = time.monotonic()
        run, bulk = self._batch_run(within)
        report = RefreshReport()
        lock = threading.Lock()
        size = batch_size(concurrency)

        def told(results: list[RefreshResult]) -> None:
            with lock:
                for result in results:
                    report.add(result)
                    if progress is not None:
                        progress(result)

        with (
            ThreadPoolExecutor(concurrency, thread_name_prefix="tokenbroker-fetch") as fetches,
            ThreadPoolExecutor(WORKERS, thread_name_prefix="tokenbroker-refresh") as batches,
        ):
            port = ThreadPort(self._engine, bulk, run.app, self.budget, fetches)

            def work(page: DuePage) -> None:
                sorted_ = run.sort_page(page)
                told(sorted_.results)
                for row in sorted_.per_key:
                    told([self._per_key(row, within, run)])
                for rows in chunks(sorted_.batch, size):
                    told(self._batch(run, rows, lambda flow: run_sync(flow, port)))

            listed, pending = 0, deque[Future[None]]()
            pages = bulk.due_pages(
                self._engine.provider.name,
                self._installations.app_id,
                now=run.now,
                until=run.until,
                page=PAGE,
            )
            for page in pages:
                listed += page.total
                if on_start is not None:
                    on_start(listed)
                pending.append(batches.submit(work, page))
                while len(pending) > WORKERS:  # a page or two listed ahead, no more
                    pending.popleft().result()
            if listed == 0 and on_start is not None:
                on_start(0)
            for future in pending:
                future.result()
        return _finish(report, started)

    def _per_key(self, row: Due, within: float, run: BatchRun) -> RefreshResult:
        flow = self._one_flow(row.key.instance_id, row.health, within, run.state)
        return run_sync(flow, self._engine)

    def _batch(
        self,
        run: BatchRun,
        rows: Sequence[Due],
        drive: Callable[[Flow[list[RefreshResult]]], list[RefreshResult]],
    ) -> list[RefreshResult]:
        try:
            return drive(run.batch_flow(rows))
        except StorageError as exc:  # this batch only: the next may find the store back
            log.warning("bulk refresh of %d installations failed: %s", len(rows), exc)
            return [RefreshResult(row.key.instance_id, "failed", str(exc)) for row in rows]

    async def arefresh_due(
        self,
        *,
        within: float = 1800.0,
        concurrency: int = 20,
        progress: Progress | None = None,
        on_start: Start | None = None,
    ) -> RefreshReport:
        """The async twin: batches on tasks, ``concurrency`` requests at most in flight."""
        check_arguments(within, concurrency)
        with span("tokenbroker.bulk_refresh", app=self._installations.app_id) as current:
            report = await self._arefresh_due(within, concurrency, progress, on_start)
            current.set_attribute("refreshed", len(report.refreshed))
            current.set_attribute("failed", len(report.failed))
        return report

    async def _arefresh_due(
        self, within: float, concurrency: int, progress: Progress | None, on_start: Start | None
    ) -> RefreshReport:
        started = time.monotonic()
        run, bulk = self._batch_run(within)
        report = RefreshReport()
        size = batch_size(concurrency)
        slots = asyncio.Semaphore(concurrency)
        port = TaskPort(self._engine, bulk, run.app, self.budget, slots)

        def told(results: list[RefreshResult]) -> None:
            for result in results:
                report.add(result)
                if progress is not None:
                    progress(result)

        async def drive(flow: Flow[list[RefreshResult]]) -> list[RefreshResult]:
            return await run_async(flow, port)

        async def work(page: DuePage) -> None:
            sorted_ = run.sort_page(page)
            told(sorted_.results)
            for row in sorted_.per_key:
                flow = self._one_flow(row.key.instance_id, row.health, within, run.state)
                told([await run_async(flow, self._engine)])
            for rows in chunks(sorted_.batch, size):
                told(await self._abatch(run, rows, drive))

        workers = asyncio.Semaphore(WORKERS)
        tasks: list[asyncio.Task[None]] = []
        listed = 0
        pages = bulk.adue_pages(
            self._engine.provider.name,
            self._installations.app_id,
            now=run.now,
            until=run.until,
            page=PAGE,
        )
        async for page in pages:
            listed += page.total
            if on_start is not None:
                on_start(listed)
            await workers.acquire()
            task = asyncio.create_task(work(page))
            task.add_done_callback(lambda _: workers.release())
            tasks.append(task)
        if listed == 0 and on_start is not None:
            on_start(0)
        await asyncio.gather(*tasks)
        return _finish(report, started)

    async def _abatch(
        self,
        run: BatchRun,
        rows: Sequence[Due],
        drive: Callable[[Flow[list[RefreshResult]]], Awaitable[list[RefreshResult]]],
    ) -> list[RefreshResult]:
        try:
            return await drive(run.batch_flow(rows))
        except StorageError as exc:
            log.warning("bulk refresh of %d installations failed: %s", len(rows), exc)
            return [RefreshResult(row.key.instance_id, "failed", str(exc)) for row in rows]


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
    check_arguments(within, concurrency)
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
    check_arguments(within, concurrency)
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
