"""A tiny metrics registry of plain numbers, read at scrape time.

tokenbroker counts what it does in ordinary Python integers and floats kept in
dicts keyed by label tuples: no metrics library sits on the token path. An
exporter (the ``/metrics`` endpoint of ``tokenbroker serve``, see
``tokenbroker.service.metrics``) reads ``REGISTRY.collect()`` when it is scraped.

Three kinds of family:

* ``Counter``: ``inc(labels)`` adds to a running total. A family may also have
  *sources*, callbacks read at scrape time: near-cache hits are counted in one
  integer attribute of the engine (``TokenEngine.near_hits``; the broker's inlined
  hit path bumps the same one) and a source turns it into
  ``tokenbroker_token_requests_total{source="near"}`` when scraped, so a hit costs
  one integer increment and nothing else (nothing at all with ``metrics=False``).
* ``Gauge``: values set directly or, usually, computed by sources at scrape time
  (several sources reporting the same labels: the largest wins).
* ``Histogram``: ``observe(labels, value)`` into fixed cumulative buckets.

Sources are held through weak references to their owner (a broker, an engine),
so a closed and dropped broker stops being reported and is never kept alive.
Updates of directly counted values take a lock (they are on slow paths only);
the near-hit integer is bumped without one, so under heavy thread contention a
rare hit may go uncounted: a counter, not a ledger.

No family takes an instance-id label: one series per installation would grow
without bound (Prometheus naming and cardinality conventions).
"""

from __future__ import annotations

import bisect
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from typing import Any, Final, Literal

import attrs

from .errors import ConfigError

log = logging.getLogger("tokenbroker")

Labels = tuple[str, ...]
Kind = Literal["counter", "gauge", "histogram"]
Reading = Iterable[tuple[Labels, float]]

# Prometheus client's default buckets, in seconds.
DEFAULT_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)

CURRENT_APP: ContextVar[str] = ContextVar("tokenbroker_current_app", default="")
"""The app whose token path is running in this context (set by the engine's slow
path), for code that has no app of its own to label with (the HTTP layer)."""


@attrs.frozen
class HistogramSample:
    """One labelled histogram at scrape time: cumulative bucket counts."""

    labels: Labels
    buckets: tuple[tuple[float, int], ...]
    total: float
    count: int


@attrs.frozen
class Snapshot:
    """One family as read at scrape time."""

    name: str
    kind: Kind
    help: str
    labelnames: tuple[str, ...]
    samples: tuple[tuple[Labels, float], ...] = ()
    histograms: tuple[HistogramSample, ...] = ()


class _Source:
    """A weakly held owner and the reading it gives at scrape time."""

    __slots__ = ("read", "ref")

    def __init__(self, owner: object, read: Callable[[Any], Reading]) -> None:
        self.ref = weakref.ref(owner)
        self.read = read


class _Family:
    kind: Kind

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._sources: list[_Source] = []

    def add_source(self, owner: object, read: Callable[[Any], Reading]) -> None:
        """Read ``read(owner)`` at every scrape while ``owner`` is alive."""
        with self._lock:
            self._sources.append(_Source(owner, read))

    def remove_source(self, owner: object) -> None:
        """Stop reading every source of ``owner`` (a broker built with metrics off)."""
        with self._lock:
            self._sources = [
                s for s in self._sources if (held := s.ref()) is not None and held is not owner
            ]

    def _read_sources(self) -> list[tuple[Labels, float]]:
        with self._lock:
            live = [s for s in self._sources if s.ref() is not None]
            self._sources = live
        readings: list[tuple[Labels, float]] = []
        for source in live:
            owner = source.ref()
            if owner is None:
                continue
            try:
                readings.extend(source.read(owner))
            except Exception:  # one broken reading must not fail the whole scrape
                log.exception("metric %s: a reading failed; left out of this scrape", self.name)
        return readings

    def _check(self, labels: Labels) -> None:
        if len(labels) != len(self.labelnames):
            raise ConfigError(
                f"{self.name} takes labels {self.labelnames}, not {len(labels)} value(s)"
            )


class Counter(_Family):
    """A running total per label tuple."""

    kind: Kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, help, labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        with self._lock:
            self.values[labels] = self.values.get(labels, 0.0) + amount

    def collect(self) -> Snapshot:
        with self._lock:
            totals = dict(self.values)
        for labels, value in self._read_sources():
            totals[labels] = totals.get(labels, 0.0) + value
        return Snapshot(self.name, self.kind, self.help, self.labelnames, tuple(totals.items()))


class Gauge(_Family):
    """A current value per label tuple; sources win over directly set values."""

    kind: Kind = "gauge"

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, help, labelnames)
        self.values: dict[Labels, float] = {}

    def set(self, labels: Labels, value: float) -> None:
        with self._lock:
            self.values[labels] = value

    def collect(self) -> Snapshot:
        with self._lock:
            current = dict(self.values)
        read: dict[Labels, float] = {}
        for labels, value in self._read_sources():
            read[labels] = max(value, read.get(labels, value))
        current.update(read)
        return Snapshot(self.name, self.kind, self.help, self.labelnames, tuple(current.items()))


class Histogram(_Family):
    """Observations in fixed buckets per label tuple (``le`` bounds, cumulative)."""

    kind: Kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help, labelnames)
        bounds = tuple(sorted(float(b) for b in buckets))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ConfigError(f"{name} needs distinct bucket bounds, not {tuple(buckets)}")
        self.bounds = bounds
        # per labels: [counts per bucket (+ one for +Inf)], sum
        self._counts: dict[Labels, list[int]] = {}
        self._sums: dict[Labels, float] = {}

    def observe(self, labels: Labels, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        with self._lock:
            counts = self._counts.get(labels)
            if counts is None:
                counts = self._counts[labels] = [0] * (len(self.bounds) + 1)
            counts[index] += 1
            self._sums[labels] = self._sums.get(labels, 0.0) + value

    def collect(self) -> Snapshot:
        with self._lock:
            rows = [
                (labels, list(counts), self._sums[labels])
                for labels, counts in self._counts.items()
            ]
        samples: list[HistogramSample] = []
        for labels, counts, total in rows:
            cumulative, running = [], 0
            for bound, count in zip(self.bounds, counts, strict=False):
                running += count
                cumulative.append((bound, running))
            samples.append(HistogramSample(labels, tuple(cumulative), total, sum(counts)))
        return Snapshot(self.name, self.kind, self.help, self.labelnames, histograms=tuple(samples))


class Registry:
    """The families of one process, by name."""

    def __init__(self) -> None:
        self._families: dict[str, Counter | Gauge | Histogram] = {}
        self._lock = threading.Lock()

    def _family(self, cls: type[Any], name: str, help: str, labelnames: Sequence[str]) -> Any:
        with self._lock:
            family = self._families.get(name)
            if family is None:
                family = self._families[name] = cls(name, help, labelnames)
            elif type(family) is not cls or family.labelnames != tuple(labelnames):
                raise ConfigError(f"metric {name} is already registered with other labels or type")
            return family

    def counter(self, name: str, help: str, labelnames: Sequence[str]) -> Counter:
        family: Counter = self._family(Counter, name, help, labelnames)
        return family

    def gauge(self, name: str, help: str, labelnames: Sequence[str]) -> Gauge:
        family: Gauge = self._family(Gauge, name, help, labelnames)
        return family

    def histogram(self, name: str, help: str, labelnames: Sequence[str]) -> Histogram:
        family: Histogram = self._family(Histogram, name, help, labelnames)
        return family

    def collect(self) -> list[Snapshot]:
        """Every family as it is now."""
        with self._lock:
            families = list(self._families.values())
        return [family.collect() for family in families]

    def value(self, name: str, labels: Labels) -> float:
        """One counter or gauge sample now (0 when absent); tests and the CLI read it."""
        for snapshot in self.collect():
            if snapshot.name == name:
                return dict(snapshot.samples).get(labels, 0.0)
        raise KeyError(name)


REGISTRY: Final = Registry()
"""The process's registry: every broker reports into it."""

TOKEN_REQUESTS: Final = REGISTRY.counter(
    "tokenbroker_token_requests_total",
    "Token requests answered, by where the token came from and how it ended.",
    ("app", "source", "outcome"),
)
PROVIDER_REQUESTS: Final = REGISTRY.counter(
    "tokenbroker_provider_requests_total",
    "HTTP requests sent to a provider, by endpoint path and status class.",
    ("app", "endpoint", "status_class"),
)
PROVIDER_DURATION: Final = REGISTRY.histogram(
    "tokenbroker_provider_request_duration_seconds",
    "How long one HTTP request to a provider took, answer or not.",
    ("app", "endpoint"),
)
LEASE_WAIT: Final = REGISTRY.histogram(
    "tokenbroker_lease_wait_seconds",
    "How long a fetch waited for the fleet-wide lease (or for another holder's token).",
    ("app",),
)
REFRESHES: Final = REGISTRY.counter(
    "tokenbroker_refreshes_total",
    "Token fetches from the provider, by refresh window and outcome.",
    ("app", "window", "outcome"),
)
WEBHOOKS: Final = REGISTRY.counter(
    "tokenbroker_webhooks_total",
    "Webhooks handled, by event type and outcome.",
    ("app", "event_type", "outcome"),
)
INSTALLATIONS: Final = REGISTRY.gauge(
    "tokenbroker_installations",
    "Installations recorded in the store, by health (computed at scrape, cached briefly).",
    ("app", "health"),
)
STORE_DEGRADED: Final = REGISTRY.gauge(
    "tokenbroker_store_degraded",
    "1 while the store is unreachable and the broker rides it out, else 0.",
    ("app",),
)
BREAKER_OPEN: Final = REGISTRY.gauge(
    "tokenbroker_breaker_open",
    "1 while the provider's circuit breaker refuses requests (open or half-open), else 0.",
    ("app",),
)
TOKEN_API_REQUESTS: Final = REGISTRY.counter(
    "tokenbroker_token_api_requests_total",
    "Requests to the token service's API, by service key name and outcome.",
    ("app", "key", "outcome"),
)


def outcome_of(exc: BaseException | None) -> str:
    """A bounded outcome label for an error: its class name in snake case ("ok": none)."""
    if exc is None:
        return "ok"
    name = type(exc).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def status_class(status: int | None) -> str:
    """``2xx`` .. ``5xx`` for an answer, ``error`` for none (timeout, connection)."""
    if status is None:
        return "error"
    return f"{status // 100}xx"
