"""The token API's and the proxy's errors: ``{"error", "message", "request_id"}``.

``error`` is a fixed code a client can switch on, ``message`` one line for a person
(never a token, a key or the app secret: tokenbroker's own messages never hold them),
``request_id`` the id this service gave the request, also in the ``X-Request-Id``
header of every answer and in the log lines about it.

What a failure to get a token becomes (the same for both endpoints):

=====  ====================  ================================================
409    ``not_installed``     the app is not installed on the instance, was
                             removed, or tokenbroker knows it as dead
429    ``rate_limited``      Wix answered 429 (``Retry-After``: Wix's wait)
429    ``backing_off``       Wix keeps refusing this instance; tokenbroker
                             waits before asking again (``Retry-After``)
502    ``wix_error``         Wix answered with an error
503    ``wix_unavailable``   Wix did not answer, or its circuit is open
503    ``store_unavailable`` the token store is down
=====  ====================  ================================================
"""

from __future__ import annotations

import logging
import math
import secrets
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..core import health_policy
from ..core.clock import to_timestamp
from ..core.errors import (
    InstanceNotInstalled,
    ProviderError,
    RateLimited,
    StorageError,
    TokenBrokerError,
    TransientProviderError,
)

log = logging.getLogger("tokenbroker.service")

REQUEST_ID_HEADER: Final = "X-Request-Id"
DEFAULT_RETRY_AFTER: Final = 1
UNAUTHORIZED: Final = "a valid service key is required: Authorization: Bearer <service key>"


def request_id(request: Request) -> str:
    """This request's id (made on first use): 16 hex digits."""
    found = request.scope.setdefault("state", {}).get("tokenbroker_request_id")
    if not isinstance(found, str):
        found = secrets.token_hex(8)
        request.scope["state"]["tokenbroker_request_id"] = found
    return found


def problem(
    request: Request,
    status: int,
    error: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error answer; ``message`` is one line (a longer one is joined)."""
    rid = request_id(request)
    line = " ".join(message.split())
    return JSONResponse(
        {"error": error, "message": line, "request_id": rid},
        status_code=status,
        headers={**(headers or {}), REQUEST_ID_HEADER: rid},
    )


def refuse(
    request: Request,
    status: int,
    error: str,
    message: str,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """``problem``, and one INFO line saying so (never the request's contents)."""
    client = request.client.host if request.client is not None and request.client.host else "?"
    log.info(
        "refused %d %s: %s (%s %s, key %s, from %s, request id %s)",
        status,
        error,
        " ".join(message.split()),
        request.method,
        _route_of(request),
        key or "none",
        client,
        request_id(request),
    )
    return problem(request, status, error, message, headers=headers)


def unauthorized(request: Request) -> JSONResponse:
    """The one 401: the same body for a missing, malformed, unknown or revoked key."""
    return refuse(
        request,
        401,
        "unauthorized",
        UNAUTHORIZED,
        headers={"WWW-Authenticate": 'Bearer realm="tokenbroker"'},
    )


def _route_of(request: Request) -> str:
    """The matched route's template (``/v1/apps/{name}/...``): no caller data."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "(no route)"


def retry_after(exc: ProviderError, now: float) -> int:
    """Seconds to wait before asking again, at least 1."""
    wait: float | None = None
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        wait = exc.retry_after
    else:
        # the next attempt of a remembered error (tokenbroker.core.health_policy)
        next_attempt = health_policy.remembered_next_attempt(exc)
        if next_attempt is not None:
            wait = to_timestamp(next_attempt) - now
    if wait is None or not math.isfinite(wait):
        return DEFAULT_RETRY_AFTER
    return max(DEFAULT_RETRY_AFTER, math.ceil(wait))


def failure(
    request: Request, exc: TokenBrokerError, now: float, *, key: str | None = None
) -> JSONResponse:
    """The answer for a failure to get a token (see the module's table)."""
    if isinstance(exc, InstanceNotInstalled):
        return refuse(request, 409, "not_installed", str(exc), key=key)
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(retry_after(exc, now))}
        return refuse(request, 429, "rate_limited", str(exc), key=key, headers=headers)
    if isinstance(exc, ProviderError) and health_policy.is_remembered(exc):
        headers = {"Retry-After": str(retry_after(exc, now))}
        return refuse(request, 429, "backing_off", str(exc), key=key, headers=headers)
    if isinstance(exc, TransientProviderError):
        return refuse(request, 503, "wix_unavailable", str(exc), key=key)
    if isinstance(exc, ProviderError):
        return refuse(request, 502, "wix_error", str(exc), key=key)
    if isinstance(exc, StorageError):
        log.warning("the token store failed (request id %s): %s", request_id(request), exc)
        # the store's URL and driver text stay in the log, not in the answer
        return refuse(request, 503, "store_unavailable", "the token store is unavailable", key=key)
    log.error("token request failed (request id %s): %s", request_id(request), exc)
    return refuse(request, 500, "internal", "internal error", key=key)
