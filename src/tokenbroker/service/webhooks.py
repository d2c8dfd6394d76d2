"""Receiving Wix's webhooks: ``POST /webhooks/wix/{name}``, and ``/webhooks/wix`` for one app.

The body (a JWT) is verified with the app's public key and recorded in the store
before the answer; the plugin hooks run after it (in a worker thread), so a slow hook
never makes Wix wait past its 1250 ms and retry (**documented** by Wix: "About
Webhooks"; see the Wix facts page). Refusals are ``{"error": reason}``
with a fixed, short reason, and one INFO line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from ..broker import TokenBroker, WebhookOutcome
from ..core.errors import ConfigError, StorageError, TokenBrokerError
from ..wix.errors import WebhookRejected
from .apps import Served

log = logging.getLogger("tokenbroker.service")

MAX_BODY_BYTES: Final = 64 * 1024
ROUTE: Final = "/webhooks/wix"

Endpoint = Callable[[Request], Awaitable[JSONResponse]]


def error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def rejected(request: Request, status: int, reason: str) -> JSONResponse:
    """Refuse a delivery, and say so at INFO: ``reason`` is a fixed phrase, never the body."""
    client = request.client.host if request.client is not None else "?"
    # A 409 is another replica recording the same delivery: routine, and Wix resends it.
    level = logging.DEBUG if status == 409 else logging.INFO
    log.log(level, "webhook rejected: %d %s (from %s)", status, reason, client)
    return error(status, reason)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is over ``limit`` (refused before any parsing)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def run_hooks(outcome: WebhookOutcome) -> None:
    try:
        failed = outcome.run_hooks()
    except Exception:  # call_hook logs per plugin; this is for the unforeseen
        log.exception("running hooks for %s failed", outcome.event.event_type)
        return
    if failed:
        log.warning(
            "%d plugin hook(s) failed for %s %s (see the errors above)",
            failed,
            outcome.event.event_type,
            outcome.event.instance_id,
        )


async def deliver(request: Request, broker: TokenBroker, max_body_bytes: int) -> JSONResponse:
    """Verify, record and answer one delivery to ``broker``'s app."""
    try:
        body = await read_body(request, max_body_bytes)
    except ClientDisconnect:  # gone mid-body (or cut off by the receipt deadline)
        return rejected(request, 400, "client disconnected")
    if body is None:
        return rejected(request, 413, "body too large")
    try:
        outcome = await broker.ahandle_webhook(body, defer_hooks=True)
    except WebhookRejected as exc:
        return rejected(request, exc.status, exc.reason)
    except StorageError as exc:  # not recorded: make Wix deliver it again
        log.error("webhook not recorded, the store failed: %s", exc)
        return error(503, "storage unavailable")
    except ConfigError as exc:
        log.error("webhook service misconfigured: %s", exc)
        return error(500, "webhook verification is not configured")
    except TokenBrokerError as exc:
        log.error("webhook failed: %s", exc)
        return error(500, "internal error")
    task = BackgroundTask(run_hooks, outcome) if outcome.hooks else None
    return JSONResponse(
        {"ok": True, "news": outcome.news, "duplicate": outcome.duplicate}, background=task
    )


def single_app_route(served: Served, max_body_bytes: int) -> Endpoint:
    """The endpoint of ``POST /webhooks/wix``: the one app's, or a 404 naming the route."""

    async def webhook(request: Request) -> JSONResponse:
        broker = served.only()
        if broker is None:
            return rejected(
                request,
                404,
                f"{len(served.names)} apps are served: post to {ROUTE}/{{name}} "
                f"(apps: {', '.join(served.names)})",
            )
        return await deliver(request, broker, max_body_bytes)

    return webhook


def named_app_route(served: Served, max_body_bytes: int) -> Endpoint:
    """The endpoint of ``POST /webhooks/wix/{name}``."""

    async def webhook(request: Request) -> JSONResponse:
        broker = served.get(request.path_params["name"])
        if broker is None:
            return rejected(request, 404, "unknown app")
        return await deliver(request, broker, max_body_bytes)

    return webhook
