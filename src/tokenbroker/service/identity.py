"""Who is calling your app's backend: a FastAPI/Starlette dependency and an ASGI middleware.

Both read the credential the app's own frontend sends: the ``Authorization``
header (the raw token, as Wix's own APIs take it, or ``Bearer <token>``), else
the ``instance`` query parameter (Wix adds it to the app's dashboard and iframe
URLs). Two ``Authorization`` headers or two ``instance`` parameters are refused
rather than guessed between. The credential goes to ``broker.wix.aidentify``
(see ``tokenbroker.wix.identity``).

- A rejection is a 401 with ``{"error": "unauthorized", "reason": <reason>}``
  (a fixed phrase such as ``"bad signature"`` or ``"inactive token"``, never
  the credential) and ``WWW-Authenticate: Bearer``.
- An outage of Wix's Token Info is a 503 with ``{"error": "unavailable",
  "reason": "identity provider unavailable"}`` (and ``Retry-After`` when Wix
  asked for a wait): the caller should try again, not log in again.

FastAPI::

    require_identity = IdentityDependency(broker)
    app = FastAPI()
    add_identity_errors(app)  # the JSON shape above; FastAPI's own is {"detail": reason}

    @app.get("/api/settings")
    async def settings(identity: Identity = Depends(require_identity)):
        return load_settings(identity.instance_id)

Any ASGI app (the identity lands in ``request.state.identity``)::

    app.add_middleware(IdentityMiddleware, broker=broker, exempt=["/webhooks", "/healthz"])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Final

import attrs
from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..broker import TokenBroker
from ..core.errors import ConfigError, ProviderError, RateLimited
from ..wix.identity import Identity, IdentityRejected
from ..wix.identity_model import ANONYMOUS, MALFORMED_CREDENTIAL, NO_CREDENTIAL

log = logging.getLogger("tokenbroker.service")

QUERY_PARAMETER: Final = "instance"
STATE_ATTRIBUTE: Final = "identity"
UNAVAILABLE: Final = "identity provider unavailable"
NOT_CONFIGURED: Final = "identity is not configured"
WS_POLICY_VIOLATION: Final = 1008

BrokerSource = TokenBroker | Callable[[], TokenBroker]
"""A broker, or a function that returns it (for one built when the app starts)."""


def credential_from(headers: Headers, query: QueryParams) -> str:
    """The credential of a request: ``Authorization`` (raw or ``Bearer``), else
    ``?instance=``; ``IdentityRejected`` when there is none or it is ambiguous."""
    authorizations = headers.getlist("authorization")
    if len(authorizations) > 1:
        raise IdentityRejected(MALFORMED_CREDENTIAL)
    if authorizations:
        value = authorizations[0].strip()
        scheme, _, rest = value.partition(" ")
        if scheme.lower() == "bearer":
            value = rest.strip()
        if value:
            return value
    instances = query.getlist(QUERY_PARAMETER)
    if len(instances) > 1:
        raise IdentityRejected(MALFORMED_CREDENTIAL)
    if instances and instances[0]:
        return instances[0]
    raise IdentityRejected(NO_CREDENTIAL)


def identity_of(request: Request) -> Identity | None:
    """The identity ``IdentityMiddleware`` (or the dependency) found for ``request``."""
    found = request.scope.get("state", {}).get(STATE_ATTRIBUTE)
    return found if isinstance(found, Identity) else None


@attrs.frozen
class Refusal:
    """Why a request gets no identity, and how to answer it."""

    status: int
    error: str
    reason: str
    headers: dict[str, str] = attrs.field(factory=dict)

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.error, "reason": self.reason},
            status_code=self.status,
            headers=self.headers,
        )


def unauthorized(reason: str) -> Refusal:
    """A rejection: ``reason`` is one of ``IdentityRejected``'s fixed phrases."""
    return Refusal(401, "unauthorized", reason, {"WWW-Authenticate": "Bearer"})


def unavailable(exc: ProviderError) -> Refusal:
    """A Token Info outage, with ``Retry-After`` when Wix asked for a wait."""
    headers = {}
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return Refusal(503, "unavailable", UNAVAILABLE, headers)


class IdentityHTTPException(HTTPException):
    """What the dependency raises: ``status_code`` 401 or 503, ``detail`` and
    ``reason`` the reason, ``error`` ``"unauthorized"`` or ``"unavailable"``.
    ``identity_exception_handler`` renders it as ``{"error", "reason"}``."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.status, detail=refusal.reason, headers=refusal.headers)
        self.refusal = refusal
        self.error = refusal.error
        self.reason = refusal.reason


async def identity_exception_handler(request: Request, exc: Exception) -> Response:
    """Render an ``IdentityHTTPException`` as ``{"error": ..., "reason": ...}``."""
    if not isinstance(exc, IdentityHTTPException):  # pragma: no cover - registered for it only
        raise exc
    return exc.refusal.response()


def add_identity_errors(app: Starlette) -> None:
    """Register ``identity_exception_handler`` on a Starlette or FastAPI app."""
    app.add_exception_handler(IdentityHTTPException, identity_exception_handler)


def _resolve(broker: BrokerSource) -> TokenBroker:
    return broker if isinstance(broker, TokenBroker) else broker()


async def _identify(
    broker: BrokerSource, headers: Headers, query: QueryParams, *, allow_anonymous: bool
) -> Identity | Refusal:
    """The identity of a request, or why it has none."""
    try:
        credential = credential_from(headers, query)
        return await _resolve(broker).wix.aidentify(credential, allow_anonymous=allow_anonymous)
    except IdentityRejected as exc:
        log.debug("request not identified: %s", exc.reason)
        return unauthorized(exc.reason)
    except ProviderError as exc:
        log.warning("cannot identify a request, Token Info is unavailable: %s", exc)
        return unavailable(exc)
    except ConfigError as exc:
        log.error("cannot identify a request: %s", exc)
        return Refusal(500, "internal", NOT_CONFIGURED)


class IdentityDependency:
    """A FastAPI dependency (``Depends(IdentityDependency(broker))``) giving the
    caller's ``Identity``, or raising ``IdentityHTTPException`` (401 or 503).

    In plain Starlette, call it: ``identity = await require_identity(request)``.
    It reuses the identity ``IdentityMiddleware`` found, and stores the one it
    finds in ``request.state.identity``. ``allow_anonymous`` lets anonymous
    callers (an ``instance`` with ``aid``, a visitor's token) through.
    """

    def __init__(self, broker: BrokerSource, *, allow_anonymous: bool = False) -> None:
        self._broker = broker
        self.allow_anonymous = allow_anonymous

    def __repr__(self) -> str:
        return f"IdentityDependency(allow_anonymous={self.allow_anonymous!r})"

    async def __call__(self, request: Request) -> Identity:
        known = identity_of(request)
        if known is not None:
            if known.anonymous and not self.allow_anonymous:
                raise IdentityHTTPException(unauthorized(ANONYMOUS))
            return known
        found = await _identify(
            self._broker,
            request.headers,
            request.query_params,
            allow_anonymous=self.allow_anonymous,
        )
        if isinstance(found, Refusal):
            raise IdentityHTTPException(found)
        request.state.identity = found
        return found


class IdentityMiddleware:
    """An ASGI middleware: every HTTP request and WebSocket needs an identity.

    The identity is put in ``request.state.identity`` (``scope["state"]``); a
    refused request gets the 401 (or 503) and never reaches the app, a refused
    WebSocket is closed with 1008 before it is accepted. ``exempt`` lists path
    prefixes left alone (``"/webhooks"`` covers ``/webhooks`` and
    ``/webhooks/wix``, not ``/webhooksx``). CORS preflights (``OPTIONS`` with
    ``Access-Control-Request-Method``) carry no credential and pass through
    unless ``check_preflight``.
    """

    def __init__(
        self,
        app: ASGIApp,
        broker: BrokerSource,
        *,
        allow_anonymous: bool = False,
        exempt: Iterable[str] = (),
        check_preflight: bool = False,
    ) -> None:
        self.app = app
        self._broker = broker
        self.allow_anonymous = allow_anonymous
        prefixes = []
        for prefix in exempt:
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise ConfigError(f"exempt paths must start with '/', not {prefix!r}")
            prefixes.append(prefix.rstrip("/") or "/")
        self.exempt = tuple(prefixes)
        self.check_preflight = check_preflight

    def _exempt(self, path: str) -> bool:
        return any(prefix in ("/", path) or path.startswith(prefix + "/") for prefix in self.exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or self._exempt(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if (
            kind == "http"
            and not self.check_preflight
            and scope.get("method") == "OPTIONS"
            and "access-control-request-method" in headers
        ):
            await self.app(scope, receive, send)
            return
        query = QueryParams(scope.get("query_string", b""))
        found = await _identify(self._broker, headers, query, allow_anonymous=self.allow_anonymous)
        if isinstance(found, Identity):
            scope.setdefault("state", {})[STATE_ATTRIBUTE] = found
            await self.app(scope, receive, send)
        elif kind == "websocket":
            await send(
                {"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": found.reason}
            )
        else:
            await found.response()(scope, receive, send)
