"""Keeping a lease while its holder's fetch runs long.

A fetch that outlasts a third of the lease's TTL renews the lease then, and
every third of the TTL after, so a slow provider does not let a second holder
in. A renewal that finds the lease gone (it lapsed: the holder stalled, or
the store lost it) marks the watch ``lost``: the holder then must not write
(its fenced write would be refused anyway; see ``tokenbroker.core.fencing``).
A renewal the store cannot answer (an outage) is logged and tried again at
the next beat: the lease may well still be ours.

``ThreadWatchdog`` serves every fetch of one engine on threads from one
daemon thread (a heap of deadlines under a condition variable), started on
first use and gone after a while with nothing to watch, or at once when its
engine closes. ``LoopWatch`` serves
one fetch on an event loop: ``loop.call_later`` schedules each renewal as a
task, and stopping the watch cancels both.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Final

import attrs

from .errors import StorageError
from .protocols import Lease

__all__ = ["LoopWatch", "ThreadWatchdog", "Watch", "renew_every"]

log = logging.getLogger("tokenbroker")

IDLE_EXIT: Final = 10.0
"""Seconds the watchdog thread waits with nothing to watch before it ends."""

Renew = Callable[[Lease, float], "Lease | None"]
ARenew = Callable[[Lease, float], Awaitable["Lease | None"]]


def renew_every(ttl: float) -> float:
    """The beat of a lease's renewals: a third of its TTL, so that one late or
    failed renewal still leaves another before the lease lapses."""
    return ttl / 3


@attrs.define(eq=False)
class Watch:
    """One lease being renewed while its fetch runs; ``lost`` once a renewal
    found it gone (it stays lost)."""

    lease: Lease
    ttl: float
    lost: bool = False
    active: bool = True
    renewals: int = 0

    def settle(self, renewed: Lease | None) -> bool:
        """Take one renewal's answer; whether to go on renewing."""
        if not self.active:
            return False
        if renewed is None:
            self.lost = True
            self.active = False
            log.warning(
                "lost the lease on %s while fetching its token (renewal %d found it gone)",
                self.lease.key,
                self.renewals + 1,
                extra={
                    "app": self.lease.key.app_id,
                    "instance": self.lease.key.instance_id,
                    "fence": self.lease.fence,
                },
            )
            return False
        self.lease = renewed
        self.renewals += 1
        return True

    def failed(self, exc: StorageError) -> None:
        log.warning(
            "could not renew the lease on %s, trying again: %s",
            self.lease.key,
            exc,
            extra={"app": self.lease.key.app_id, "instance": self.lease.key.instance_id},
        )


class ThreadWatchdog:
    """Renews the leases of fetches running on threads, from one daemon thread."""

    def __init__(self, name: str = "tokenbroker-watchdog") -> None:
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watch, Renew]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"ThreadWatchdog(watching={len(self._heap)})"

    def watch(self, lease: Lease, ttl: float, renew: Renew) -> Watch:
        """Start renewing ``lease`` with ``renew`` every third of ``ttl``."""
        watch = Watch(lease, ttl)
        with self._cond:
            self._closing = False
            self._push(watch, renew)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return watch

    def stop(self, watch: Watch) -> None:
        """Renew ``watch`` no more (its entry leaves the heap when it comes up)."""
        with self._cond:
            watch.active = False
            self._cond.notify()  # its entry may be all that keeps the thread waiting

    def close(self) -> None:
        """End the thread once nothing is watched, without idling first (its
        engine closes); a later ``watch`` starts another."""
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
            watching = any(entry[2].active for entry in self._heap)
        if thread is not None and not watching and thread is not threading.current_thread():
            thread.join(IDLE_EXIT)  # it ends at once, or after a renewal under way

    def _push(self, watch: Watch, renew: Renew) -> None:
        due = time.monotonic() + renew_every(watch.ttl)
        heapq.heappush(self._heap, (due, next(self._order), watch, renew))

    def _next(self) -> tuple[Watch, Renew] | None:
        """The next watch due (waiting for it), or ``None`` once idle long enough."""
        with self._cond:
            idle_since = time.monotonic()
            while True:
                while self._heap and not self._heap[0][2].active:
                    heapq.heappop(self._heap)
                now = time.monotonic()
                if not self._heap:
                    if self._closing or now - idle_since >= IDLE_EXIT:
                        self._thread = None  # under the lock: a new watch starts another
                        return None
                    self._cond.wait(IDLE_EXIT - (now - idle_since))
                    continue
                due = self._heap[0][0]
                if due <= now:
                    _, _, watch, renew = heapq.heappop(self._heap)
                    return watch, renew
                self._cond.wait(due - now)

    def _run(self) -> None:
        while (found := self._next()) is not None:
            watch, renew = found
            try:
                renewed = renew(watch.lease, watch.ttl)
            except StorageError as exc:
                watch.failed(exc)
                again = watch.active
            except BaseException:  # one store call must not end renewals for every fetch
                log.exception("renewing the lease on %s failed", watch.lease.key)
                again = watch.active
            else:
                with self._cond:
                    again = watch.settle(renewed)
            if again:
                with self._cond:
                    if watch.active:
                        self._push(watch, renew)


class LoopWatch:
    """Renews one lease on the running event loop while its fetch runs."""

    def __init__(self, lease: Lease, ttl: float, renew: ARenew) -> None:
        self.watch = Watch(lease, ttl)
        self._renew = renew
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._schedule()

    @property
    def lost(self) -> bool:
        return self.watch.lost

    def stop(self) -> None:
        """Cancel the next renewal and any running one."""
        self.watch.active = False
        if self._handle is not None:
            self._handle.cancel()
        if self._task is not None:
            self._task.cancel()

    def _schedule(self) -> None:
        self._handle = self._loop.call_later(renew_every(self.watch.ttl), self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self.watch.active:
            self._task = self._loop.create_task(self._beat())

    async def _beat(self) -> None:
        watch = self.watch
        try:
            renewed = await self._renew(watch.lease, watch.ttl)
        except StorageError as exc:
            watch.failed(exc)
            again = watch.active
        except Exception:  # logged here: nobody awaits this task
            log.exception("renewing the lease on %s failed", watch.lease.key)
            again = watch.active
        else:
            again = watch.settle(renewed)
        self._task = None
        if again:
            self._schedule()
