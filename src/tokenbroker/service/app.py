"""The service: an ASGI app (Starlette) to run (``tokenbroker serve``) or to mount.

Always:

* ``POST /webhooks/wix/{name}``: Wix's webhooks for the app ``name``, verified and
  recorded before the answer (see ``tokenbroker.service.webhooks``);
  ``POST /webhooks/wix`` is the same when one app is served;
* ``GET /healthz``: whether the store answers;
* ``GET /metrics``: Prometheus metrics (``tokenbroker.service.metrics``; unauthenticated,
  carries no secrets; ``metrics=False`` leaves it out), when prometheus-client is installed.

With ``token_api=True`` (``tokenbroker serve --token-api``), for callers holding a
service key (``tokenbroker.service.keys``):

* ``GET /v1/apps/{name}/instances/{instance_id}/token``: a token
  (``tokenbroker.service.tokens``);
* ``ANY /v1/apps/{name}/instances/{instance_id}/wix/{path}``: a call to the app's
  API as the installation, without seeing its token (``tokenbroker.service.proxy``;
  ``proxy=False`` leaves it out);
* ``GET /v1/openapi.json``: their OpenAPI document.

Mount it in FastAPI or Starlette::

    app.mount("/tokenbroker", tokenbroker.service.create_app(broker))

or run it: ``tokenbroker serve --host 127.0.0.1 --port 8080``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import math
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import httpx2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..broker import TokenBroker, TokenBrokers
from ..core.errors import ConfigError, TokenBrokerError
from . import openapi
from .apps import BrokerSource, Served
from .keys import ServiceKeys
from .problems import refuse
from .proxy import DEFAULT_KEY_CONCURRENCY, DEFAULT_MAX_BODY, DEFAULT_TIMEOUT, Proxy
from .tokens import read_token
from .webhooks import MAX_BODY_BYTES, ROUTE, named_app_route, single_app_route

log = logging.getLogger("tokenbroker.service")

RETRY_SETUP_EVERY: Final = 60.0
PROXY_METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _whole(value: object, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{what} must be a whole number of at least {low}, not {value!r}")
    return value


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what} must be a finite number of seconds above 0, not {value}")
    return float(value)


async def _not_found(request: Request, exc: Exception) -> Response:
    """Unknown routes and methods: the JSON error shape, not Starlette's plain text."""
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    if status == 405:
        return refuse(request, 405, "method_not_allowed", f"{request.method} is not allowed here")
    return refuse(request, 404, "not_found", "no such route")


def create_app(
    broker_or_brokers: BrokerSource | None = None,
    *,
    token_api: bool = False,
    proxy: bool | None = None,
    keys: ServiceKeys | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    proxy_max_body: int = DEFAULT_MAX_BODY,
    key_concurrency: int = DEFAULT_KEY_CONCURRENCY,
    proxy_timeout: float = DEFAULT_TIMEOUT,
    proxy_transport: httpx2.AsyncBaseTransport | None = None,
    retry_setup_every: float = RETRY_SETUP_EVERY,
    metrics: bool | None = None,
) -> Starlette:
    """Build the ASGI app.

    ``broker_or_brokers`` is a ``TokenBroker`` (served as the app ``default``), a
    ``TokenBrokers`` or any mapping of app names to brokers sharing one store;
    without it, ``TokenBrokers.load()`` (``TOKENBROKER_CONFIG``, else the
    environment) is built when the app starts and closed when it stops.

    ``token_api`` turns on the ``/v1`` endpoints, and with them the proxy unless
    ``proxy=False``. ``keys`` checks the service keys (default: ``ServiceKeys`` on the
    apps' store). ``max_body_bytes`` bounds a webhook body, ``proxy_max_body`` a
    proxied one (413 beyond), ``key_concurrency`` the proxied calls in flight per key
    (429 beyond); ``proxy_timeout`` is the proxy's timeout for Wix, and
    ``proxy_transport`` an ``httpx2`` transport for it (tests use
    ``httpx2.MockTransport``). ``metrics`` serves ``GET /metrics`` (default: when
    prometheus-client is installed; ``True`` without it is a ``ConfigError``). A bad
    option is a ``ConfigError``, here.
    """
    if proxy is None:
        proxy = token_api
    if proxy and not token_api:
        raise ConfigError("the proxy is part of the token API: give token_api=True too")
    max_body_bytes = _whole(max_body_bytes, "max_body_bytes", 1)
    proxy_max_body = _whole(proxy_max_body, "proxy_max_body", 0)
    key_concurrency = _whole(key_concurrency, "key_concurrency", 1)
    proxy_timeout = _seconds(proxy_timeout, "proxy_timeout")
    retry_setup_every = _seconds(retry_setup_every, "retry_setup_every")
    if keys is not None and not isinstance(keys, ServiceKeys):
        raise ConfigError(f"keys must be a ServiceKeys, not {type(keys).__name__}")
    served = Served()
    if broker_or_brokers is not None:
        # now, not when the app starts: a bad one is refused here, and a mounted app
        # (whose lifespan its parent does not run) has its brokers and keys all the same
        served.load(broker_or_brokers, keys, token_api=token_api)
    forwarder = (
        Proxy(
            served,
            max_body=proxy_max_body,
            key_concurrency=key_concurrency,
            timeout=proxy_timeout,
            transport=proxy_transport,
        )
        if proxy
        else None
    )
    service = _Service(served, broker_or_brokers, keys, token_api, forwarder, retry_setup_every)
    routes: list[Any] = [
        Route(ROUTE, single_app_route(served, max_body_bytes), methods=["POST"]),
        Route(ROUTE + "/{name}", named_app_route(served, max_body_bytes), methods=["POST"]),
        Route("/healthz", service.healthz, methods=["GET"]),
    ]
    has_client = importlib.util.find_spec("prometheus_client") is not None
    if metrics and not has_client:
        raise ConfigError(
            "/metrics needs prometheus-client; install it with: pip install 'tokenbroker[server]'"
        )
    if metrics or (metrics is None and has_client):
        from .metrics import ROUTE as METRICS_ROUTE  # noqa: PLC0415 - prometheus-client
        from .metrics import metrics_route  # noqa: PLC0415

        routes.append(Route(METRICS_ROUTE, metrics_route, methods=["GET"]))
    if token_api:
        routes += [
            Route(openapi.TOKEN_ROUTE, service.token, methods=["GET"]),
            Route("/v1/openapi.json", service.document, methods=["GET"]),
        ]
    if forwarder is not None:
        route = openapi.PROXY_ROUTE.replace("{path}", "{path:path}")
        routes.append(Route(route, forwarder.handle, methods=PROXY_METHODS))
    app = Starlette(
        routes=routes,
        lifespan=service.lifespan,
        exception_handlers={404: _not_found, 405: _not_found},
    )
    app.router.redirect_slashes = False  # no redirect from an authenticated endpoint
    return app


class _Service:
    """One app's endpoints that need its state, and its start and stop."""

    def __init__(
        self,
        served: Served,
        source: BrokerSource | None,
        keys: ServiceKeys | None,
        token_api: bool,
        forwarder: Proxy | None,
        retry_setup_every: float,
    ) -> None:
        self.served = served
        self.source = source
        self.keys = keys
        self.token_api = token_api
        self.forwarder = forwarder
        self.retry_setup_every = retry_setup_every

    async def healthz(self, request: Request) -> JSONResponse:
        first = next(iter(self.served.brokers.values()))
        try:
            await first.store.aget_installation(first.app_id, "tokenbroker-healthz")
        except TokenBrokerError:
            return JSONResponse({"status": "degraded", "store": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "store": "ok"})

    async def token(self, request: Request) -> Response:
        return await read_token(request, self.served)

    async def document(self, request: Request) -> JSONResponse:
        return JSONResponse(openapi.document())

    async def retry_pending(self, name: str, current: TokenBroker) -> None:
        while True:
            await asyncio.sleep(self.retry_setup_every)
            try:
                await current.wix.aretry_pending_setup()
            except Exception:  # keep retrying next round
                log.exception("retrying pending finish-setup for app %s failed", name)

    def start(self, source: BrokerSource) -> None:
        if not self.served.brokers:  # built from the config when the app starts
            self.served.load(source, self.keys, token_api=self.token_api)
        check_webhooks(self.served.brokers, required=not self.token_api)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        owned: TokenBrokers | None = None
        source = self.source
        if source is None:
            source = owned = TokenBrokers.load()
        try:
            self.start(source)
        except BaseException:
            if owned is not None:
                await owned.aclose()
            raise
        retries = [
            asyncio.create_task(self.retry_pending(name, broker))
            for name, broker in self.served.brokers.items()
            if broker.auto_finish_setup
        ]
        try:
            yield
        finally:
            for retry in retries:
                retry.cancel()
            for retry in retries:
                with contextlib.suppress(asyncio.CancelledError):
                    await retry
            if self.forwarder is not None:
                await self.forwarder.aclose()
            if owned is not None:
                await owned.aclose()


def check_webhooks(
    brokers: Mapping[str, TokenBroker], *, required: bool, warn: bool = True
) -> None:
    """Fail at start-up, not on the first webhook: each app's public key must load.

    An app that cannot verify webhooks (no key: say an ``oauth2`` app) is a warning
    while another app can, or when not ``required`` (the token API is on); with none,
    and ``required``, the service would have nothing to do: the first app's error is
    raised (a ``ConfigError``). ``warn=False`` leaves the warnings to a later call."""
    failures: dict[str, ConfigError] = {}
    for name, broker in brokers.items():
        try:
            broker.verifier  # noqa: B018 - loads and checks the public key
        except ConfigError as exc:
            failures[name] = exc
    if required and len(failures) == len(brokers):
        raise next(iter(failures.values()))
    for name, failure in failures.items() if warn else ():
        log.warning("app %s takes no webhooks: %s", name, failure)
