"""Spans through the OpenTelemetry API, when it is installed (the ``otel`` extra).

``span(name, **attributes)`` is a context manager. Without ``opentelemetry-api``
it is a shared no-op object (the import is tried once, here); with the API and
no SDK configured, OpenTelemetry's own no-op tracer answers; with an SDK, real
spans go to whatever exporter the application set up. The span is made current,
so the HTTP client's own span (an instrumented httpx) nests under it.

Spans: ``tokenbroker.fetch`` (the slow path of one token request: store, lease
wait and provider request), ``tokenbroker.webhook`` and ``tokenbroker.bulk_refresh``.
Attributes name the app, the instance (fine on a trace, never a metric label),
the source and the outcome; never a token or a secret.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any

from .metrics import outcome_of

_trace: Any
try:  # guarded once: everything below is a no-op without the API
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - exercised when the extra is absent
    _trace = None
else:
    _trace = _otel_trace

TRACER_NAME = "tokenbroker"


class _NoSpan:
    """What ``span`` yields without OpenTelemetry: takes attributes, keeps none."""

    __slots__ = ()

    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


NO_SPAN = _NoSpan()


def enabled() -> bool:
    """Whether the OpenTelemetry API is importable."""
    return _trace is not None


@contextmanager
def _real_span(name: str, attributes: dict[str, Any]) -> Any:
    assert _trace is not None
    tracer = _trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(name, attributes=attributes) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_attribute("outcome", outcome_of(exc))
            raise


def span(name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A current span named ``name`` (a no-op without OpenTelemetry).

    On an exception the span records it (OpenTelemetry's default) and gets an
    ``outcome`` attribute naming the error class.
    """
    if _trace is None or not _recording():
        return NO_SPAN
    return _real_span(name, {k: v for k, v in attributes.items() if v is not None})


def _recording() -> bool:
    """Whether an SDK is configured: with the API alone, the global provider is still
    OpenTelemetry's proxy (or its no-op), whose spans record nothing but still cost a
    context switch each; skipping them keeps the slow path as cheap as without it."""
    assert _trace is not None
    provider = _trace.get_tracer_provider()
    return not isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider)
