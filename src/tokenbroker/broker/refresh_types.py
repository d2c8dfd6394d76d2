"""What the bulk refresher reports and shares between its two paths: results, the
report, the per-instance rate guard, and why an installation is not asked for now."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal

import attrs

from ..core.errors import ConfigError
from ..core.health import REMOVED

if TYPE_CHECKING:
    from ..core.health import InstallationHealth

Outcome = Literal["refreshed", "fresh", "skipped", "failed"]
DEFAULT_MIN_INTERVAL: Final = 60.0
_PRUNE_MIN: Final = 1024
"""The fewest entries the rate guard holds before a note prunes the passed ones."""


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
    """Per-instance spacing of upstream requests made by refreshers in this process.

    Entries whose time has passed are pruned when the map has doubled since the
    last prune (at least ``_PRUNE_MIN``), so it holds about the instances asked for
    within the last ``min_interval``, not every one ever asked for.
    """

    def __init__(self, min_interval: float = DEFAULT_MIN_INTERVAL) -> None:
        self.min_interval = min_interval
        self._not_before: dict[str, float] = {}
        self._prune_above = _PRUNE_MIN
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._not_before)

    def wait_needed(self, instance_id: str, now: float) -> float:
        with self._lock:
            return max(self._not_before.get(instance_id, 0.0) - now, 0.0)

    def note(self, instance_id: str, now: float, retry_after: float | None = None) -> None:
        with self._lock:
            self._not_before[instance_id] = now + max(self.min_interval, retry_after or 0.0)
            if len(self._not_before) > self._prune_above:
                self._prune(now)

    def _prune(self, now: float) -> None:
        """Drop the entries that no longer hold anything back (under the lock):
        amortised O(1) a note, as the memory store's lease sweep."""
        kept = {i: at for i, at in self._not_before.items() if at > now}
        self._not_before = kept
        self._prune_above = max(_PRUNE_MIN, 2 * len(kept))


class RateBudget:
    """One app's requests a second, spaced across every fetch of its refresher's runs
    (threads or tasks): each fetch reserves the next free slot, ``1 / rate`` seconds
    after the previous one, and waits for it. ``clock`` and ``sleep`` are for tests;
    the refresher waits with ``time.sleep`` or ``asyncio.sleep`` itself."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
            raise ConfigError(f"the refresher's rate must be a positive number, not {rate!r}")
        self.rate = float(rate)
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot; how long to wait for it (0: at once)."""
        with self._lock:
            now = self._clock()
            at = max(now, self._next)
            self._next = at + 1.0 / self.rate
            return at - now


def not_now(health: InstallationHealth | None, now: float) -> str | None:
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


def check_arguments(within: float, concurrency: int) -> None:
    if within < 0:
        raise ConfigError(f"within must not be negative, not {within}")
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, not {concurrency}")


@attrs.define
class RunState:
    """What one bulk refresh has learnt so far that concerns every installation."""

    refused: str | None = None
    """Set once Wix refuses the app's credentials: the rest are not asked for."""
    refusal_reported: bool = False
    """Whether a result reported the refusal as a failure (only the first does)."""


REFUSED: Final = "not tried: Wix refused the app's credentials"

Progress = Callable[[RefreshResult], None]
Start = Callable[[int], None]
AppProgress = Callable[[str, RefreshResult], None]
"""``progress(app_name, result)`` of the many-apps walk."""
AppStart = Callable[[str, int], None]
"""``on_start(app_name, total)`` of the many-apps walk."""
