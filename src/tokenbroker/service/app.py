"""The webhook service: an ASGI app (Starlette) to run or to mount.

``POST /webhooks/wix`` verifies the JWT body, records the installation in the
store, answers 200, and only then runs the plugin hooks (in a worker thread),
so a slow hook never makes Wix wait past its 1250 ms and retry. ``GET
/healthz`` says whether the store answers.

Mount it in FastAPI or Starlette::

    app.mount("/tokenbroker", tokenbroker.service.create_app(broker))

or run it: ``tokenbroker serve --host 127.0.0.1 --port 8080``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..broker import TokenBroker, WebhookOutcome
from ..core.errors import ConfigError, StorageError, TokenBrokerError
from ..wix.errors import WebhookRejected

log = logging.getLogger("tokenbroker.service")

MAX_BODY_BYTES: Final = 64 * 1024
RETRY_SETUP_EVERY: Final = 60.0


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def _rejected(request: Request, status: int, reason: str) -> JSONResponse:
    """Refuse a delivery, and say so at INFO: ``reason`` is a fixed phrase, never the body."""
    client = request.client.host if request.client is not None else "?"
    # A 409 is another replica recording the same delivery: routine, and Wix resends it.
    level = logging.DEBUG if status == 409 else logging.INFO
    log.log(level, "webhook rejected: %d %s (from %s)", status, reason, client)
    return _error(status, reason)


async def _read_body(request: Request, limit: int) -> bytes | None:
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


def _run_hooks(outcome: WebhookOutcome) -> None:
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


def create_app(
    broker: TokenBroker | None = None,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    retry_setup_every: float = RETRY_SETUP_EVERY,
) -> Starlette:
    """Build the ASGI app. Without ``broker``, one is made from the environment
    when the app starts (and closed when it stops)."""
    state: dict[str, TokenBroker] = {}
    if broker is not None:
        state["broker"] = broker

    async def webhook(request: Request) -> JSONResponse:
        try:
            body = await _read_body(request, max_body_bytes)
        except ClientDisconnect:  # gone mid-body (or cut off by the receipt deadline)
            return _rejected(request, 400, "client disconnected")
        if body is None:
            return _rejected(request, 413, "body too large")
        try:
            outcome = await state["broker"].ahandle_webhook(body, defer_hooks=True)
        except WebhookRejected as exc:
            return _rejected(request, exc.status, exc.reason)
        except StorageError as exc:  # not recorded: make Wix deliver it again
            log.error("webhook not recorded, the store failed: %s", exc)
            return _error(503, "storage unavailable")
        except ConfigError as exc:
            log.error("webhook service misconfigured: %s", exc)
            return _error(500, "webhook verification is not configured")
        except TokenBrokerError as exc:
            log.error("webhook failed: %s", exc)
            return _error(500, "internal error")
        task = BackgroundTask(_run_hooks, outcome) if outcome.hooks else None
        return JSONResponse(
            {"ok": True, "news": outcome.news, "duplicate": outcome.duplicate}, background=task
        )

    async def healthz(request: Request) -> JSONResponse:
        current = state["broker"]
        try:
            await current.store.aget_installation(current.app_id, "tokenbroker-healthz")
        except TokenBrokerError:
            return JSONResponse({"status": "degraded", "store": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "store": "ok"})

    async def retry_pending(current: TokenBroker) -> None:
        while True:
            await asyncio.sleep(retry_setup_every)
            try:
                await current.wix.aretry_pending_setup()
            except Exception:  # keep retrying next round
                log.exception("retrying pending finish-setup failed")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = "broker" not in state
        if owned:
            state["broker"] = TokenBroker.from_env()
        current = state["broker"]
        current.verifier  # noqa: B018 - fail at start-up, not on the first webhook
        retry = asyncio.create_task(retry_pending(current)) if current.auto_finish_setup else None
        try:
            yield
        finally:
            if retry is not None:
                retry.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retry
            if owned:
                await current.aclose()

    routes: list[Any] = [
        Route("/webhooks/wix", webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
