"""``GET /metrics``: the Prometheus endpoint of the service, and its own listener.

The exposition is parsed with prometheus-client's own parser (what a Prometheus
server reads). Values are compared before and after, since the registry is the
process's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from tokenbroker import TokenBroker
from tokenbroker.cli import main
from tokenbroker.core.errors import ConfigError
from tokenbroker.service.app import create_app
from tokenbroker.service.server import metrics_socket
from tokenbroker.testing.emulator import WixEmulator

from ..conftest import APP_ID, APP_SECRET, INSTANCE
from ..webhook_helpers import free_port, running
from .conftest import PUBLIC
from .service_api import bearer, serving, token_path
from .serving import serving as serve_process

EVERY_FAMILY = {
    "tokenbroker_token_requests",
    "tokenbroker_provider_requests",
    "tokenbroker_provider_request_duration_seconds",
    "tokenbroker_lease_wait_seconds",
    "tokenbroker_refreshes",
    "tokenbroker_webhooks",
    "tokenbroker_installations",
    "tokenbroker_store_degraded",
    "tokenbroker_breaker_open",
    "tokenbroker_token_api_requests",
}


def scrape(
    client: httpx2.Client, url: str = "/metrics"
) -> dict[tuple[str, tuple[str, ...]], float]:
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[str, ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value  # type: ignore[arg-type]
    return samples


def sample(name: str, **labels: str) -> tuple[str, tuple[str, ...]]:
    return name, tuple(sorted(labels.items()))  # type: ignore[arg-type]


def families(client: httpx2.Client) -> set[str]:
    return {f.name for f in text_string_to_metric_families(client.get("/metrics").text)}


@pytest.fixture
def broker(wix_emulator: WixEmulator, sqlite_url: str) -> Iterator[TokenBroker]:
    """A broker that takes webhooks (the service refuses to start without a key)."""
    with TokenBroker(
        app_id=APP_ID,
        app_secret=APP_SECRET,
        store=sqlite_url,
        api_url=wix_emulator.url,
        public_key=PUBLIC,
    ) as b:
        yield b


@pytest.fixture
def served_broker(broker: TokenBroker) -> Iterator[httpx2.Client]:
    with running(create_app(broker, token_api=False)) as url, httpx2.Client(base_url=url) as c:
        yield c


def test_metrics_are_served_without_a_key_and_name_every_family(
    served_broker: httpx2.Client, broker: TokenBroker
) -> None:
    broker.token(INSTANCE)
    broker.token(INSTANCE)
    assert families(served_broker) >= EVERY_FAMILY


def test_a_hit_and_a_fetch_show_in_the_scrape(
    served_broker: httpx2.Client, broker: TokenBroker
) -> None:
    near = sample("tokenbroker_token_requests_total", app=APP_ID, source="near", outcome="ok")
    provider = sample(
        "tokenbroker_token_requests_total", app=APP_ID, source="provider", outcome="ok"
    )
    before = scrape(served_broker)
    broker.token(INSTANCE)
    for _ in range(3):
        broker.token(INSTANCE)
    after = scrape(served_broker)
    assert after[provider] - before.get(provider, 0.0) == 1
    assert after[near] - before.get(near, 0.0) == 3
    lease_count = sample("tokenbroker_lease_wait_seconds_count", app=APP_ID)
    assert after[lease_count] - before.get(lease_count, 0.0) == 1


def test_no_metrics_leaves_the_route_out(broker: TokenBroker) -> None:
    with running(create_app(broker, metrics=False)) as url:
        assert httpx2.get(url + "/metrics").status_code == 404


def test_token_api_reads_are_counted_by_key_and_outcome(broker: TokenBroker) -> None:
    with serving(broker) as api:
        secret = api.key("metrics-reader")
        ok = sample(
            "tokenbroker_token_api_requests_total",
            app="default",
            key="metrics-reader",
            outcome="ok",
        )
        refused = sample(
            "tokenbroker_token_api_requests_total", app="default", key="", outcome="401"
        )
        before = scrape(api.client)
        assert api.token(secret).status_code == 200
        assert api.client.get(token_path(INSTANCE), headers=bearer("tb_wrong")).status_code == 401
        after = scrape(api.client)
    assert after[ok] - before.get(ok, 0.0) == 1
    assert after[refused] - before.get(refused, 0.0) == 1


def test_a_metrics_port_in_use_is_a_config_error() -> None:
    port = free_port()
    with (
        metrics_socket(port),
        pytest.raises(ConfigError, match=f"127.0.0.1:{port}"),
        metrics_socket(port),
    ):
        pass


def test_no_metrics_and_a_metrics_port_exclude_each_other() -> None:
    result = CliRunner().invoke(main, ["serve", "--no-metrics", "--metrics-port", "9100"])
    assert result.exit_code == 2
    assert "--no-metrics and --metrics-port exclude each other" in result.output


def test_serve_with_a_metrics_port_serves_them_there_only(tmp_path: Path) -> None:
    """``tokenbroker serve --metrics-port``: /metrics on its own loopback listener."""
    metrics_port = free_port()
    store = f"sqlite:///{tmp_path / 'tokens.db'}"
    with serve_process(store, PUBLIC, "--metrics-port", str(metrics_port)) as server:
        assert httpx2.get(server.base + "/metrics").status_code == 404
        with httpx2.Client(base_url=f"http://127.0.0.1:{metrics_port}") as side:
            assert families(side) >= {"tokenbroker_token_requests", "tokenbroker_webhooks"}
            assert side.get("/healthz").status_code == 404
    # stopping the main server (SIGINT, as the CLI's own Ctrl-C) stops the sidecar too
    assert server.proc.returncode is not None
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"http://127.0.0.1:{metrics_port}/metrics")
