"""tokenbroker's spans, seen through the OpenTelemetry SDK's in-memory exporter.

The SDK is in the test dependency group; tokenbroker itself needs only the API
(the ``otel`` extra) and is a no-op without it. A process has one global tracer
provider, so it is set once here and the exporter cleared per test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tokenbroker import TokenBroker, TransientProviderError
from tokenbroker.core import tracing
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.webhooks import make_key_pair, sign_webhook

from .conftest import APP_ID, APP_SECRET, INSTANCE

_EXPORTER = InMemorySpanExporter()


def _install_provider() -> bool:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)  # refused (logged) if another was set first
    return isinstance(trace.get_tracer_provider(), TracerProvider)


_INSTALLED = _install_provider()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    if not _INSTALLED:
        pytest.skip("another tracer provider was installed in this process first")
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def test_the_api_is_found() -> None:
    assert tracing.enabled()


def test_a_fetch_is_one_span_with_app_instance_source_and_outcome(
    spans: InMemorySpanExporter, memory_broker: TokenBroker
) -> None:
    token = memory_broker.token(INSTANCE)
    memory_broker.token(INSTANCE)  # a hit: no span
    (fetch,) = named(spans, "tokenbroker.fetch")
    assert fetch.attributes is not None
    assert dict(fetch.attributes) == {
        "app": APP_ID,
        "instance": INSTANCE,
        "source": "provider",
        "outcome": "ok",
    }
    # never the token, in any span
    dumped = json.dumps([s.to_json() for s in spans.get_finished_spans()])
    assert token.access_token not in dumped


async def test_an_async_fetch_that_fails_records_its_error(
    spans: InMemorySpanExporter, memory_broker: TokenBroker, wix_emulator: WixEmulator
) -> None:
    wix_emulator.fail_next(503, times=3)
    with pytest.raises(TransientProviderError):
        await memory_broker.atoken(INSTANCE)
    (fetch,) = named(spans, "tokenbroker.fetch")
    assert fetch.attributes is not None
    assert fetch.attributes["outcome"] == "transient_provider_error"
    assert not fetch.status.is_ok
    assert [event.name for event in fetch.events] == ["exception"]


def test_a_webhook_is_a_span_with_its_event_type_and_outcome(
    spans: InMemorySpanExporter, wix_emulator: WixEmulator
) -> None:
    private_pem, public_pem = make_key_pair()
    with TokenBroker(
        app_id=APP_ID,
        app_secret=APP_SECRET,
        store="memory://",
        api_url=wix_emulator.url,
        public_key=public_pem,
    ) as broker:
        body = sign_webhook(
            private_pem, event_type="AppInstalled", instance_id="inst-hook", data={"appId": APP_ID}
        )
        broker.handle_webhook(body)
        broker.handle_webhook(body)
    first, again = named(spans, "tokenbroker.webhook")
    assert first.attributes is not None
    assert again.attributes is not None
    assert first.attributes["event_type"] == again.attributes["event_type"]
    assert (first.attributes["outcome"], again.attributes["outcome"]) == (
        "accepted",
        "duplicate",
    )
    assert first.attributes["instance"] == "inst-hook"


def test_a_bulk_refresh_is_a_span_with_its_counts(
    spans: InMemorySpanExporter, memory_broker: TokenBroker, wix_emulator: WixEmulator
) -> None:
    for instance_id in ("b-1", "b-2"):
        wix_emulator.install(instance_id)
    memory_broker.add_installations(["b-1", "b-2"])
    report = memory_broker.refresh_due(concurrency=1)
    (bulk,) = named(spans, "tokenbroker.bulk_refresh")
    assert bulk.attributes is not None
    assert bulk.attributes["refreshed"] == len(report.refreshed) == 2
    assert bulk.attributes["failed"] == 0


def test_without_the_api_a_span_is_the_shared_no_op(
    monkeypatch: pytest.MonkeyPatch, memory_broker: TokenBroker
) -> None:
    """The path taken when ``opentelemetry-api`` is not installed (the import guard's
    ``None``): one shared object, no span recorded, the token path unchanged."""
    monkeypatch.setattr(tracing, "_trace", None)
    assert not tracing.enabled()
    with tracing.span("tokenbroker.fetch", app="a") as current:
        current.set_attribute("outcome", "ok")
    assert tracing.span("x") is tracing.NO_SPAN
    _EXPORTER.clear()
    memory_broker.token(INSTANCE)
    assert _EXPORTER.get_finished_spans() == ()


def test_with_the_api_but_no_sdk_a_span_is_the_shared_no_op(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No SDK configured: OpenTelemetry's proxy provider would record nothing, at a cost.
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    assert tracing.span("tokenbroker.fetch", app="a") is tracing.NO_SPAN
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    assert tracing.span("tokenbroker.fetch", app="a") is tracing.NO_SPAN
