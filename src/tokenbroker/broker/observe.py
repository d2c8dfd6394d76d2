"""What one broker reports at scrape time, besides its engine's counters.

``report(broker)`` registers two readings with ``tokenbroker.core.metrics``
(weakly held: a dropped broker stops reporting):

* ``tokenbroker_installations{app, health}``: the active installations by health
  (``healthy``, ``failing``, ``dead``), read from the store at most once per
  ``INSTALLATIONS_TTL`` seconds (a scrape every few seconds must not list a large
  fleet each time); a store that cannot be read keeps the last counts;
* ``tokenbroker_breaker_open{app}``: 1 while the provider's circuit breaker refuses
  requests (open, or half-open with its trial under way), for a provider that has one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Final, Protocol

from ..core.breaker import CircuitBreaker, CircuitState
from ..core.errors import TokenBrokerError
from ..core.health import HealthState
from ..core.metrics import BREAKER_OPEN, INSTALLATIONS, Reading
from ..core.protocols import TokenProvider
from .installations import Installations


class TokenBroker(Protocol):
    """What is read of a broker (``tokenbroker.broker.broker`` imports this module)."""

    app_id: str
    installations: Installations
    provider: TokenProvider


log = logging.getLogger("tokenbroker")

INSTALLATIONS_TTL: Final = 30.0


class _InstallationCounts:
    """The installations gauge of one broker, cached for ``INSTALLATIONS_TTL``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_at = -INSTALLATIONS_TTL
        self._counts: dict[str, int] = {}

    def read(self, broker: TokenBroker) -> Reading:
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= INSTALLATIONS_TTL:
                self._read_at = now
                try:
                    pairs = broker.installations.list_with_health()
                except TokenBrokerError as exc:  # keep the last counts; say why once per TTL
                    log.warning("could not count installations of %s: %s", broker.app_id, exc)
                else:
                    counted = Counter(health.state.value for _, health in pairs)
                    self._counts = {state.value: counted[state.value] for state in HealthState}
            counts = dict(self._counts)
        return [((broker.app_id, state), float(n)) for state, n in counts.items()]


def _breaker_reading(broker: TokenBroker) -> Reading:
    breaker = getattr(broker.provider, "breaker", None)
    if not isinstance(breaker, CircuitBreaker):
        return []
    return [((broker.app_id,), 0.0 if breaker.state is CircuitState.CLOSED else 1.0)]


def report(broker: TokenBroker) -> None:
    """Register ``broker``'s scrape-time readings."""
    counts = _InstallationCounts()
    INSTALLATIONS.add_source(broker, counts.read)
    BREAKER_OPEN.add_source(broker, _breaker_reading)
