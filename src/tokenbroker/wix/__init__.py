"""All that knows Wix: the provider (Create Access Token), HTTP resilience (retry
budget, circuit breaker), error classification, the app APIs, and webhooks.
Registered as the built-in ``wix`` plugin (``tokenbroker.wix.plugin``)."""

from __future__ import annotations

from ..core.retry import RetryBudget, parse_retry_after
from .errors import WebhookRejected
from .facts import DEFAULT_API_URL, validate_api_url
from .http import WixHttp
from .provider import WixProvider

__all__ = [
    "DEFAULT_API_URL",
    "RetryBudget",
    "WebhookRejected",
    "WixHttp",
    "WixProvider",
    "parse_retry_after",
    "validate_api_url",
]
