"""The Prometheus ``/metrics`` endpoint: tokenbroker's own registry, exposed.

``RegistryCollector`` is a prometheus-client custom collector that reads
``tokenbroker.core.metrics.REGISTRY`` when scraped (nothing is counted through
prometheus-client itself: the token path counts plain numbers). ``metrics_route``
serves it from the service (``tokenbroker serve``; ``--no-metrics`` leaves it
out) and ``metrics_app`` on a listener of its own (``--metrics-port``, on
loopback, as Vault Agent's metrics listener).

The endpoint is **not authenticated**: metrics carry no token, secret or
instance id, but they do show traffic and health. Keep it on loopback or a private
network (a separate ``--metrics-port`` makes that easy).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..core.metrics import REGISTRY, Registry, Snapshot

ROUTE: Final = "/metrics"


def _family(snapshot: Snapshot) -> Metric:
    names = list(snapshot.labelnames)
    if snapshot.kind == "counter":
        counter = CounterMetricFamily(snapshot.name, snapshot.help, labels=names)
        for labels, value in snapshot.samples:
            counter.add_metric(list(labels), value)
        return counter
    if snapshot.kind == "gauge":
        gauge = GaugeMetricFamily(snapshot.name, snapshot.help, labels=names)
        for labels, value in snapshot.samples:
            gauge.add_metric(list(labels), value)
        return gauge
    histogram = HistogramMetricFamily(snapshot.name, snapshot.help, labels=names)
    for sample in snapshot.histograms:
        buckets = [(repr(bound), float(count)) for bound, count in sample.buckets]
        buckets.append(("+Inf", float(sample.count)))
        histogram.add_metric(list(sample.labels), buckets, sample.total)
    return histogram


class RegistryCollector(Collector):
    """Reads a tokenbroker ``Registry`` at every scrape."""

    def __init__(self, registry: Registry = REGISTRY) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for snapshot in self.registry.collect():
            yield _family(snapshot)


def exposition(registry: Registry = REGISTRY) -> bytes:
    """The Prometheus text format of ``registry`` now (reads the store for the gauges
    that need it, each cached briefly: call it off the event loop)."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(RegistryCollector(registry))
    return generate_latest(collectors)


async def metrics_route(request: Request) -> Response:
    """``GET /metrics``: unauthenticated (see the module docstring)."""
    body = await run_in_threadpool(exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def metrics_app() -> Starlette:
    """An app serving only ``GET /metrics``: the metrics-only listener."""
    return Starlette(routes=[Route(ROUTE, metrics_route, methods=["GET"])])
