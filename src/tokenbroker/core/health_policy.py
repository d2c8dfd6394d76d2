"""How an installation's health changes, and how long a failing one waits.

Pure decisions, no I/O: the engine's ``HealthTracker`` reads the health before a
fetch, asks these functions, and writes what they return.

Which errors count (``verdict``); Wix documents none of this, so each rule is
**assumed** (what "not installed" looks like is ``tokenbroker.wix.errors``' business):

* ``InstanceNotInstalled``: the installation is **dead**.
* ``InvalidCredentials``: nothing. The app's id or secret is refused: that is the
  app's fault, not an installation's, and would mark every one of them failing (the
  provider's own credentials cooldown keeps it from hammering Wix).
* any other ``ProviderError`` from an HTTP error answer about this installation:
  **failing**. A 4xx other than the credentials' (400, 404, ...), a 429 (its
  ``retry_after`` honoured).
* a ``TransientProviderError`` (5xx, 408, past the retry budget): nothing. It is Wix
  failing as a whole, which the circuit breaker rides out for every installation at
  once; backing each one off as well would only delay its recovery.
* a ``ProviderError`` without an error status: nothing. No answer, timeouts and the
  circuit breaker open are the network or Wix as a whole (the circuit breaker's
  business), and a 200 that is no usable token is more likely a proxy in the way
  than this installation; nothing was learnt about it.
* ``StorageError``, ``ConfigError``, anything else: nothing; not the installation's
  fault. Nor does an error raised again from memory during a back-off.

The back-off is *decorrelated jitter* (Marc Brooker, "Exponential Backoff And
Jitter", AWS Architecture Blog, 2015): the first wait is drawn uniformly between
``base`` and three times ``base``, each later one between ``base`` and three times
the previous wait, never above ``cap``. With the defaults (30 s, 1 h) the first
retry comes 30 to 90 s after the first failure and the waits grow about 1.5-fold a
failure on average until they reach the hour; replicas and installations that
failed together spread out. A 429's ``retry_after`` is honoured when it is longer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Final, Literal

import attrs

from .clock import to_datetime, to_timestamp
from .errors import (
    ConfigError,
    InstanceNotInstalled,
    InvalidCredentials,
    ProviderError,
    RateLimited,
    TransientProviderError,
)
from .health import (
    NOT_INSTALLED,
    REMOVED,
    HealthState,
    InstallationHealth,
    RecordedError,
)
from .installation import Installation
from .token import Token

_US: Final = timedelta(microseconds=1)
_REMEMBERED: Final = "remembered_next_attempt"
_REQUEST_ID: Final = "request_id"


def _seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"Backoff.{attribute.name} must be a number of seconds")
    if not 0 < value < math.inf:  # also false for NaN
        raise ConfigError(f"Backoff.{attribute.name} must be positive and finite, not {value}")


@attrs.frozen
class Backoff:
    """How long a failing installation waits before Wix is asked for it again.

    Decorrelated jitter between ``base`` and ``cap`` seconds (see the module's
    docstring). ``random`` returns a float in [0, 1); tests pass their own.
    """

    base: float = attrs.field(default=30.0, validator=_seconds)
    cap: float = attrs.field(default=3600.0, validator=_seconds)
    random: Callable[[], float] = attrs.field(default=random.random, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.cap < self.base:
            raise ConfigError(f"Backoff.cap ({self.cap}) must not be below base ({self.base})")

    def next_wait(self, previous: float | None = None) -> float:
        """The wait after a failure, given the wait before it (``None``: the first)."""
        previous = self.base if previous is None or previous < self.base else previous
        high = min(self.cap, previous * 3.0)
        return min(self.cap, self.base + self.random() * (high - self.base))


Verdict = Literal["dead", "failing"]


def verdict(error: BaseException) -> Verdict | None:
    """What ``error`` says about the installation a fetch was for (module docstring)."""
    if is_remembered(error) or not isinstance(error, ProviderError):
        return None
    if isinstance(error, InstanceNotInstalled):
        return "dead"
    if isinstance(error, InvalidCredentials | TransientProviderError):
        return None
    if error.status is None or error.status < 400:
        return None
    return "failing"


# -- transitions -------------------------------------------------------------------------
def _stamped(
    current: InstallationHealth, new: InstallationHealth, now: float
) -> InstallationHealth:
    """``new`` with ``updated_at`` now, and after ``current``'s: a write based on what
    was read wins over it even when this host's clock is behind the writer's."""
    at = to_datetime(now)
    if current.updated_at is not None and at <= current.updated_at:
        at = current.updated_at + _US
    return attrs.evolve(new, updated_at=at)


def after_failure(
    current: InstallationHealth,
    error: BaseException,
    now: float,
    backoff: Backoff,
    registry_at: datetime | None = None,
) -> InstallationHealth | None:
    """The health after a failed fetch; ``None`` when the error does not count.
    ``registry_at`` is the registry record's ``updated_at`` as the fetch saw it."""
    kind = verdict(error)
    if kind is None:
        return None
    assert isinstance(error, ProviderError)
    at = to_datetime(now)
    failures = current.failures + 1 if not current.healthy else 1
    recorded = RecordedError.of(error)
    if kind == "dead":
        new = attrs.evolve(
            current,
            state=HealthState.DEAD,
            since=current.since if current.dead else at,
            failures=failures,
            error=recorded,
            next_attempt=None,
            backoff=0.0,
            dead_reason=NOT_INSTALLED,
            registry_at=registry_at,
        )
        return _stamped(current, new, now)
    wait = backoff.next_wait(current.backoff if current.failing else None)
    retry_after = recorded.retry_after
    if isinstance(error, RateLimited) and retry_after is not None and retry_after > wait:
        wait = retry_after  # Wix asked for this much
    new = attrs.evolve(
        current,
        state=HealthState.FAILING,
        since=current.since if current.failing else at,
        failures=failures,
        error=recorded,
        next_attempt=to_datetime(now + wait),
        backoff=wait,
        dead_reason=None,
        registry_at=None,
    )
    return _stamped(current, new, now)


def _healthy(current: InstallationHealth, now: float) -> InstallationHealth:
    since = current.since if current.healthy and current.since is not None else to_datetime(now)
    return attrs.evolve(
        current,
        state=HealthState.HEALTHY,
        since=since,
        failures=0,
        error=None,
        next_attempt=None,
        backoff=0.0,
        dead_reason=None,
        registry_at=None,
    )


def after_success(current: InstallationHealth, token: Token, now: float) -> InstallationHealth:
    """The health after a token was minted."""
    new = attrs.evolve(
        _healthy(current, now),
        last_token_at=token.obtained_at,
        next_refresh_at=token.refresh_at,
    )
    return _stamped(current, new, now)


def cleared(current: InstallationHealth, now: float) -> InstallationHealth:
    """The health of an installation made healthy without a fetch: a dead one that
    was installed again, or one whose health was reset by hand."""
    return _stamped(current, _healthy(current, now), now)


def after_removal(
    current: InstallationHealth, now: float, registry_at: datetime | None
) -> InstallationHealth:
    """The health of an installation the registry now records as removed."""
    new = attrs.evolve(
        current,
        state=HealthState.DEAD,
        since=current.since if current.dead else to_datetime(now),
        next_attempt=None,
        backoff=0.0,
        dead_reason=REMOVED,
        registry_at=registry_at,
    )
    return _stamped(current, new, now)


def reinstalled(health: InstallationHealth, record: Installation | None) -> bool:
    """Whether a dead installation has been installed again since it died: its registry
    record is active and newer than the one it died with (an ``AppInstalled``
    webhook's ``iat`` or a re-add moves ``updated_at``)."""
    if not health.dead or record is None or not record.active:
        return False
    if health.dead_reason == REMOVED:
        return True
    if record.updated_at is None:
        return False
    return health.registry_at is None or record.updated_at > health.registry_at


def effective(
    health: InstallationHealth | None, record: Installation | None, instance_id: str
) -> InstallationHealth:
    """The health to show and act on: the stored one, with what the registry says on
    top (a removed installation is dead; a dead one installed again is healthy)."""
    current = health if health is not None else InstallationHealth(instance_id)
    if record is not None and not record.active:
        if current.dead and current.dead_reason == REMOVED:
            return current
        return attrs.evolve(
            current,
            state=HealthState.DEAD,
            since=record.removed_at or record.updated_at or current.since,
            next_attempt=None,
            dead_reason=REMOVED,
        )
    if record is not None and reinstalled(current, record):
        return attrs.evolve(_healthy(current, 0.0), since=record.updated_at or current.since)
    return current


# -- the remembered error ------------------------------------------------------------------
def _error_class(kind: str) -> type[ProviderError]:
    """The ``ProviderError`` subclass named ``kind`` (``ProviderError`` if none is)."""
    stack: list[type[ProviderError]] = [ProviderError]
    while stack:
        cls = stack.pop()
        if cls.__name__ == kind:
            return cls
        stack.extend(cls.__subclasses__())
    return ProviderError


def _when(moment: datetime | None) -> str:
    return "an unknown time" if moment is None else moment.isoformat(timespec="seconds")


def remembered(health: InstallationHealth, now: float) -> ProviderError:
    """The error to raise, without asking Wix, for an installation that is backing off
    or dead: the last error's class, with a message saying it is remembered and when
    Wix will be asked again."""
    error = health.error
    if health.dead:
        reason = "Wix says it is not installed" if health.dead_reason == NOT_INSTALLED else ""
        reason = "it was removed" if health.dead_reason == REMOVED else reason
        note = (
            f"remembered: {health.instance_id} is dead since {_when(health.since)}"
            + (f" ({reason})" if reason else "")
            + "; no token is fetched for it until it is installed again"
        )
        default: type[ProviderError] = InstanceNotInstalled
        next_attempt = None
    else:
        next_attempt = health.next_attempt
        wait = 0.0 if next_attempt is None else max(to_timestamp(next_attempt) - now, 0.0)
        note = (
            f"remembered error, {health.failures} failed fetch(es) since "
            f"{_when(health.since)}; Wix is not asked again before "
            f"{_when(next_attempt)} (in {math.ceil(wait)}s)"
        )
        default = ProviderError
    if error is None:
        cls, message = default, f"{health.instance_id}: {note}"
        status = code = wix_message = None
    else:
        cls, message = _error_class(error.kind), f"{error.message} [{note}]"
        status, code, wix_message = error.status, error.code, error.wix_message
    try:
        exc = cls(message, status=status, wix_message=wix_message, code=code)
    except TypeError:  # a subclass with another signature
        exc = ProviderError(message, status=status, wix_message=wix_message, code=code)
    if isinstance(exc, RateLimited) and next_attempt is not None:
        exc.retry_after = max(to_timestamp(next_attempt) - now, 0.0)
    if error is not None:
        with suppress(AttributeError):  # read-only: the message has it anyway
            setattr(exc, _REQUEST_ID, error.request_id)
    setattr(exc, _REMEMBERED, next_attempt)
    return exc


def remembered_next_attempt(error: BaseException) -> datetime | None:
    """When Wix is asked again, for an error raised again from memory (else ``None``)."""
    found = getattr(error, _REMEMBERED, None)
    return found if isinstance(found, datetime) else None


def is_remembered(error: BaseException) -> bool:
    """Whether ``error`` was raised again from memory (no request was sent)."""
    return hasattr(error, _REMEMBERED)
