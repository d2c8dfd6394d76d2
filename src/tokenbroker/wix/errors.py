"""Wix's errors: classifying its error answers, and refusing its webhook deliveries.

Which codes and phrases mean "not installed" is not documented by Wix: these
rules are assumed, and kept here so that they are one edit away.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import httpx2

from ..core.errors import (
    InstanceNotInstalled,
    InvalidCredentials,
    ProviderError,
    RateLimited,
    TokenBrokerError,
    TransientProviderError,
)

NOT_INSTALLED_CODES: Final = frozenset(
    {"APP_NOT_INSTALLED", "INSTANCE_NOT_FOUND", "APP_INSTANCE_NOT_FOUND", "APP_REMOVED"}
)
NOT_INSTALLED_TEXT: Final = re.compile(
    r"not\s+installed|instance\s+not\s+found|app\s+removed", re.IGNORECASE
)


def error_fields(response: httpx2.Response) -> tuple[str | None, str | None]:
    """Wix's ``message`` and ``details.applicationError.code``, if present."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    message = body.get("message")
    details = body.get("details")
    code = None
    if isinstance(details, dict):
        app_error = details.get("applicationError")
        if isinstance(app_error, dict) and isinstance(app_error.get("code"), str):
            code = app_error["code"]
    return (message if isinstance(message, str) else None), code


def classify(response: httpx2.Response, what: str, scrub: Callable[[str], str]) -> ProviderError:
    """The error a non-2xx answer to ``what`` stands for; ``scrub`` cleans Wix's message."""
    message, code = error_fields(response)
    message = scrub(message) if message else None
    status = response.status_code
    detail = f"{what}: Wix answered {status}" + (f": {message}" if message else "")
    kwargs: dict[str, Any] = {"status": status, "wix_message": message, "code": code}
    if code in NOT_INSTALLED_CODES or (
        status in (400, 401, 403, 404) and message and NOT_INSTALLED_TEXT.search(message)
    ):
        return InstanceNotInstalled(detail, **kwargs)
    if status in (401, 403):
        return InvalidCredentials(detail, **kwargs)
    if status == 429:
        return RateLimited(detail, **kwargs)
    if status == 408 or status >= 500:
        return TransientProviderError(detail, **kwargs)
    return ProviderError(detail, **kwargs)


class WebhookRejected(TokenBrokerError):
    """A webhook delivery that must not be acted on.

    ``status`` is the HTTP status to answer with (400 malformed, 401 not
    authentic or not current, 413 too big) and ``reason`` a short fixed phrase
    that is safe to send back: it never quotes the body, the key or a traceback.
    Wix retries anything that is not a 200, so a rejection is also a signal to
    whoever is forging or mangling deliveries, and says as little as possible.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"webhook rejected ({status}): {reason}")
        self.status = status
        self.reason = reason
