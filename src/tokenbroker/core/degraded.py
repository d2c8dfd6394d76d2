"""Degraded mode: how the engine rides out a store outage.

Every store operation on the token path goes through ``StoreHealth.guard``. An
outage (``StoreUnavailable``) puts the engine in degraded mode: it keeps serving
the near cache, fetches misses from the provider directly (single-flight in the
process, no fleet-wide lease) and keeps what it fetched in the near cache; the
first successful store call ends it. The change either way is logged once and
reported to the listeners. A misconfiguration (any other ``StorageError``)
raises at once; so does an outage when degrading is off (one-shot commands).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from .errors import StorageError, StoreUnavailable
from .flow import Flow, Op

log = logging.getLogger("tokenbroker")

R = TypeVar("R")


class StoreHealth:
    """Whether one store answers, as the engine has last seen it."""

    def __init__(
        self,
        url: str,
        *,
        degrade: bool,
        on_degraded: Callable[[str, BaseException], None],
        on_recovered: Callable[[str], None],
        app: str = "",
    ) -> None:
        self.url = url
        self.app = app
        self.degrade = degrade
        self.on_degraded = on_degraded
        self.on_recovered = on_recovered
        self.error: StorageError | None = None
        """The outage that put the engine in degraded mode, or ``None``."""

    def guard(self, op: Op[R], default: R) -> Flow[R]:
        """``op``, or ``default`` (degraded) when the store is out."""
        try:
            result = yield from op
        except StoreUnavailable as exc:
            if not self.degrade:
                raise
            self.degraded(exc)
            return default
        self.recovered()
        return result

    def degraded(self, exc: StorageError) -> None:
        if self.error is None:
            self.error = exc
            log.warning(
                "store %s unreachable; serving near-cache tokens and fetching misses "
                "directly until it is back: %s",
                self.url,
                exc,
                extra={"app": self.app, "outcome": "degraded"},
            )
            self.on_degraded(self.url, exc)

    def recovered(self) -> None:
        if self.error is not None:
            self.error = None
            log.warning(
                "store %s reachable again; leaving degraded mode",
                self.url,
                extra={"app": self.app, "outcome": "recovered"},
            )
            self.on_recovered(self.url)
