"""Clocks: the system clock and a manual one for tests and demos.

Expiry is wall-clock time (UTC seconds since the epoch) because tokens are
shared between processes and hosts; a monotonic clock means nothing across them.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import attrs


@runtime_checkable
class Clock(Protocol):
    """Tells the time. Implementations must be thread-safe and cheap to call."""

    def time(self) -> float:
        """Seconds since the epoch, UTC."""
        ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


@attrs.define
class ManualClock:
    """A clock that moves only when told; for tests and the demo."""

    _now: float = attrs.field(factory=time.time, alias="start")
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def set(self, timestamp: float) -> None:
        with self._lock:
            self._now = timestamp


@attrs.define
class OffsetClock:
    """Another clock shifted by ``offset`` seconds (the demo's time machine)."""

    base: Clock
    offset: float = 0.0

    def time(self) -> float:
        return self.base.time() + self.offset


def to_datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def to_timestamp(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: tokenbroker only handles timezone-aware times")
    return moment.timestamp()
