"""``ANY /v1/apps/{name}/instances/{instance_id}/wix/{path}``: calling Wix without a token.

The call goes to the app's API URL plus ``/{path}`` (see ``tokenbroker.service.paths``
for what may not leave it), with the query and the body as they came, and:

* ``Authorization`` set to the instance's token, raw as Wix wants it (**documented**
  by Wix's OAuth guide; **seen in Wix's SDK**: ``auth/AppStrategy.js``), through
  ``broker.auth(instance_id)``: a 401 from Wix is retried once with a newer token,
  re-minted at most once per instance per grace period, fleet-wide (see
  ``tokenbroker.broker.auth``); the caller's service key is never forwarded;
* the hop-by-hop headers dropped both ways (``Connection`` and those it names,
  ``Keep-Alive``, ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``,
  ``Upgrade``: RFC 9110 section 7.6.1), ``Host`` set to the API URL's;
* the body bounded (``max_body``, 413 beyond it) and buffered, since a retry after a
  401 sends it again; the answer streamed back as it arrives, not buffered;
* at most ``key_concurrency`` calls in flight per service key (429 beyond it).

Wix's answer, whatever its status, goes back as it is. Only what kept Wix from
answering is tokenbroker's own error: the token (the table in
``tokenbroker.service.problems``), a Wix that does not answer (503) or answers too
slowly (504).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Final

import anyio
import httpx2
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ..broker import TokenBroker
from ..core.errors import TokenBrokerError
from .apps import Served
from .callers import Slots, authorize
from .keys import PROXY
from .paths import UnsafePath, build_url, target_of
from .problems import REQUEST_ID_HEADER, failure, refuse, request_id
from .tokens import bad_instance, unknown_app

log = logging.getLogger("tokenbroker.service")

DEFAULT_MAX_BODY: Final = 10 * 1024 * 1024
DEFAULT_KEY_CONCURRENCY: Final = 32
DEFAULT_TIMEOUT: Final = 30.0
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the proxy (Host, Authorization), recomputed from the body (Content-Length),
# or answered by the server in front (Expect): never copied from the caller.
# The caller's credentials and identity claims stay here: Wix sees tokenbroker calling
# as the installation, not a client who says who it is.
_NOT_FORWARDED: Final = frozenset(
    {
        b"host",
        b"authorization",
        b"content-length",
        b"expect",
        b"cookie",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-real-ip",
    }
)
# uvicorn adds its own: a copy of Wix's would make two of each.
_NOT_RETURNED: Final = frozenset({b"date", b"server"})
_DECODED: Final = frozenset({b"content-encoding", b"content-length"})


def end_to_end(
    headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes] = frozenset()
) -> list[tuple[bytes, bytes]]:
    """``headers`` without the hop-by-hop ones (and those ``Connection`` names) and ``drop``."""
    pairs = [(name.lower(), value) for name, value in headers]
    named = {
        option.strip().lower()
        for name, value in pairs
        if name == b"connection"
        for option in value.split(b",")
    }
    return [
        (name, value)
        for name, value in pairs
        if name not in HOP_BY_HOP
        and not name.startswith(b"proxy-")
        and name not in named
        and name not in drop
    ]


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or ``None`` when it is over ``limit`` (declared or counted)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _once(content: bytes) -> AsyncIterator[bytes]:
    yield content


class _Streamed(StreamingResponse):
    """Wix's answer, streamed; the upstream response is closed and the key's slot
    given back however the stream ends (done, failed, or the caller went away)."""

    def __init__(self, upstream: httpx2.Response, slots: Slots, key: str, rid: str) -> None:
        drop = _NOT_RETURNED
        if upstream.is_stream_consumed:  # read already (a transport that does not
            # stream, such as a test's): its content is decoded, so say nothing of encoding
            body: AsyncIterator[bytes] = _once(upstream.content)
            drop = drop | _DECODED
        else:
            body = upstream.aiter_raw()  # as it came: compressed if Wix compressed it
        super().__init__(body, status_code=upstream.status_code)
        headers = end_to_end(upstream.headers.raw, drop)
        if not any(name == b"x-request-id" for name, _ in headers):
            headers.append((REQUEST_ID_HEADER.lower().encode(), rid.encode()))
        self.raw_headers = headers  # every header, repeated ones too (Set-Cookie)
        self._upstream = upstream
        self._slots = slots
        self._key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give_back(self._key)
            # shielded: a caller that went away cancels this task, and the upstream
            # connection must still go back to the pool (or be closed)
            with anyio.CancelScope(shield=True):
                await self._upstream.aclose()


class Proxy:
    """The proxy endpoint of one service (its client, its per-key slots)."""

    def __init__(
        self,
        served: Served,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        key_concurrency: int = DEFAULT_KEY_CONCURRENCY,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.served = served
        self.max_body = max_body
        self.slots = Slots(key_concurrency)
        self._timeout = timeout
        self._transport = transport
        self._client: httpx2.AsyncClient | None = None

    @property
    def client(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = httpx2.AsyncClient(
                transport=self._transport, timeout=self._timeout, follow_redirects=False
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def handle(self, request: Request) -> Response:
        """The endpoint (see the module)."""
        name = request.path_params["name"]
        assert self.served.keys is not None  # set when the proxy is on
        key = await authorize(request, self.served.keys, scope=PROXY, app=name)
        if isinstance(key, Response):
            return key
        broker = self.served.get(name)
        if broker is None:
            return await unknown_app(request, name, key.name)
        try:
            target = target_of(request.scope, request.path_params)
        except UnsafePath as exc:
            return refuse(request, 400, "bad_path", f"the path has {exc}", key=key.name)
        if (refused := bad_instance(request, target.instance_id, key.name)) is not None:
            return refused
        api_url = self.served.api_url(name)
        if api_url is None:
            return refuse(
                request, 404, "no_api_url", f"app {name!r} has no API URL to call", key=key.name
            )
        try:
            url = build_url(api_url, target.path, request.scope.get("query_string", b""))
        except UnsafePath as exc:
            return refuse(request, 400, "bad_path", f"the path has {exc}", key=key.name)
        if not self.slots.take(key.name):
            return refuse(
                request,
                429,
                "too_many_requests",
                f"service key {key.name!r} has {self.slots.limit} proxied calls in flight",
                key=key.name,
                headers={"Retry-After": "1"},
            )
        try:
            response = await self._forward(request, broker, target.instance_id, url, key.name)
        except BaseException:
            self.slots.give_back(key.name)
            raise
        if not isinstance(response, _Streamed):
            self.slots.give_back(key.name)
        return response

    async def _forward(
        self, request: Request, broker: TokenBroker, instance_id: str, url: httpx2.URL, key: str
    ) -> Response:
        try:
            body = await _read_body(request, self.max_body)
        except ClientDisconnect:
            return refuse(request, 400, "bad_request", "the client went away mid-body", key=key)
        if body is None:
            return refuse(
                request,
                413,
                "payload_too_large",
                f"the body is over the proxy's limit of {self.max_body} bytes",
                key=key,
            )
        sends_body = bool(body) or "content-length" in request.headers
        outgoing = httpx2.Request(
            request.method,
            url,
            headers=end_to_end(request.headers.raw, _NOT_FORWARDED),
            content=body if sends_body else None,
        )
        rid = request_id(request)
        try:
            upstream = await self.client.send(outgoing, auth=broker.auth(instance_id), stream=True)
        except TokenBrokerError as exc:
            return failure(request, exc, broker.clock.time(), key=key)
        except httpx2.TimeoutException as exc:
            return self._unreachable(request, 504, "wix_timeout", exc, key)
        except httpx2.TransportError as exc:
            return self._unreachable(request, 503, "wix_unavailable", exc, key)
        log.info(
            "proxied %s /%s for key %s, app %s, instance %r: %d (request id %s)",
            request.method,
            url.path.lstrip("/"),
            key,
            request.path_params["name"],
            instance_id,
            upstream.status_code,
            rid,
        )
        return _Streamed(upstream, self.slots, key, rid)

    @staticmethod
    def _unreachable(
        request: Request, status: int, error: str, exc: httpx2.TransportError, key: str
    ) -> JSONResponse:
        what = "did not answer in time" if status == 504 else "could not be reached"
        return refuse(request, status, error, f"Wix {what} ({type(exc).__name__})", key=key)
