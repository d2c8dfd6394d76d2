"""A circuit breaker: stop calling a service that keeps failing, then probe it.

* **closed**: requests go through; consecutive failures are counted and any
  success resets the count. ``failure_threshold`` failures in a row open it.
* **open**: ``allow()`` refuses every request for ``cooldown`` seconds.
* **half-open**: once the cooldown is over, exactly one *trial* request is
  admitted; everyone else is still refused while it runs. Its success closes
  the circuit and resets the cooldown; its failure re-opens the circuit with the
  cooldown doubled, up to ``max_cooldown``.

``allow()`` hands out a ``Permit``, and the request's outcome is reported with
that permit. A permit issued before the circuit last changed state is stale and
its outcome is ignored: a slow request that set off before the outage was
declared cannot re-open or close the circuit after the fact, and only the
trial's own outcome decides a half-open circuit. A request that ended with no
verdict on the service (cancelled, or failed on our side) gives its permit back
with ``release()`` so a cancelled trial does not leave the circuit stuck; as a
last resort, a trial that has not reported within ``trial_timeout`` seconds is
given up and another one admitted.

Pure logic, no I/O. Every method takes a ``threading.Lock`` for a few
assignments and never blocks otherwise, so one breaker serves threads and
asyncio tasks alike. Time comes from the injected ``Clock``; if that clock
steps backwards, a wait grows by at most one cooldown.
"""

from __future__ import annotations

import enum
import threading

import attrs

from .clock import Clock, SystemClock
from .errors import ConfigError


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@attrs.frozen
class Permit:
    """Leave to send one request. Report its outcome to the breaker that issued it."""

    epoch: int
    trial: bool = False


@attrs.define(eq=False, repr=False)
class CircuitBreaker:
    """Counts consecutive failures of one service and refuses calls while it is down.

    Thread-safe. See the module docstring for the states and the permit rules.
    """

    _failure_threshold: int = 5
    _cooldown: float = 15.0
    _max_cooldown: float = 300.0
    _trial_timeout: float = 60.0
    _clock: Clock = attrs.field(factory=SystemClock)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _open: bool = attrs.field(default=False, init=False)
    _failures: int = attrs.field(default=0, init=False)
    _epoch: int = attrs.field(default=0, init=False)
    _opened_at: float = attrs.field(default=0.0, init=False)
    _wait: float = attrs.field(default=0.0, init=False)
    _trial_started: float | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        if self._failure_threshold < 1:
            raise ConfigError(
                f"failure_threshold must be at least 1, not {self._failure_threshold}"
            )
        if not self._cooldown > 0:
            raise ConfigError(f"cooldown must be positive, not {self._cooldown}")
        if not self._max_cooldown >= self._cooldown:
            raise ConfigError(
                f"max_cooldown ({self._max_cooldown}) must be at least cooldown ({self._cooldown})"
            )
        if not self._trial_timeout > 0:
            raise ConfigError(f"trial_timeout must be positive, not {self._trial_timeout}")
        self._wait = self._cooldown

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self.state.value!r}, failures={self.failures}, "
            f"failure_threshold={self._failure_threshold}, cooldown={self._cooldown}, "
            f"max_cooldown={self._max_cooldown})"
        )

    # -- settings ------------------------------------------------------------------
    @property
    def failure_threshold(self) -> int:
        return self._failure_threshold

    @property
    def cooldown(self) -> float:
        """The first cooldown after the circuit opens."""
        return self._cooldown

    @property
    def max_cooldown(self) -> float:
        return self._max_cooldown

    # -- what it knows ---------------------------------------------------------------
    @property
    def state(self) -> CircuitState:
        with self._lock:
            now = self._now()
            if not self._open:
                return CircuitState.CLOSED
            if self._trial_started is not None or now - self._opened_at >= self._wait:
                return CircuitState.HALF_OPEN
            return CircuitState.OPEN

    @property
    def failures(self) -> int:
        """Consecutive failures so far, failed trials included."""
        with self._lock:
            return self._failures

    @property
    def current_cooldown(self) -> float:
        """The cooldown of the current opening (or of the next one, when closed)."""
        with self._lock:
            return self._wait

    def retry_in(self) -> float:
        """Seconds until ``allow()`` may admit a request, if no outcome arrives first.

        0 when closed, or half-open and waiting for a trial. While a trial is in
        flight, the time until it would be given up.
        """
        with self._lock:
            now = self._now()
            if not self._open:
                return 0.0
            if self._trial_started is not None:
                return max(0.0, self._trial_timeout - (now - self._trial_started))
            return max(0.0, self._wait - (now - self._opened_at))

    def holds(self, permit: Permit) -> bool:
        """Whether ``permit`` is the trial now in flight."""
        with self._lock:
            return permit.trial and permit.epoch == self._epoch and self._trial_started is not None

    # -- the protocol ------------------------------------------------------------------
    def allow(self) -> Permit | None:
        """A permit to send one request, or ``None`` if the circuit refuses it."""
        with self._lock:
            now = self._now()
            if not self._open:
                return Permit(self._epoch)
            if self._trial_started is not None:
                if now - self._trial_started < self._trial_timeout:
                    return None
                # the trial never reported back: give it up and admit another
            elif now - self._opened_at < self._wait:
                return None
            self._epoch += 1
            self._trial_started = now
            return Permit(self._epoch, trial=True)

    def record_success(self, permit: Permit) -> bool:
        """The service answered. Returns whether this closed the circuit."""
        with self._lock:
            if permit.epoch != self._epoch:
                return False
            if not self._open:
                self._failures = 0
                return False
            self._open = False
            self._failures = 0
            self._wait = self._cooldown
            self._trial_started = None
            self._epoch += 1
            return True

    def record_failure(self, permit: Permit) -> bool:
        """The service failed. Returns whether this opened (or re-opened) the circuit."""
        with self._lock:
            now = self._now()
            if permit.epoch != self._epoch:
                return False
            self._failures += 1
            if self._open:
                self._wait = min(self._wait * 2, self._max_cooldown)
            elif self._failures >= self._failure_threshold:
                self._wait = self._cooldown
            else:
                return False
            self._open = True
            self._opened_at = now
            self._trial_started = None
            self._epoch += 1
            return True

    def release(self, permit: Permit) -> None:
        """The request ended with no verdict on the service; free its trial slot."""
        with self._lock:
            if permit.trial and permit.epoch == self._epoch and self._trial_started is not None:
                self._trial_started = None
                self._epoch += 1

    # -- inside the lock ---------------------------------------------------------------
    def _now(self) -> float:
        now = self._clock.time()
        # a clock that stepped back would otherwise stretch the wait by the step
        self._opened_at = min(self._opened_at, now)
        if self._trial_started is not None:
            self._trial_started = min(self._trial_started, now)
        return now
