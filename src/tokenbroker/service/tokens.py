"""``GET /v1/apps/{name}/instances/{instance_id}/token``: a token, for callers in any language.

It is ``broker.atoken(instance_id)``, the library's own path: the near cache, then
single-flight (a thousand callers on a cold key wait for one fetch), the store and
its fleet-wide lease. The answer::

    {"access_token": "...", "token_type": "Bearer",
     "expires_at": "2025-01-01T12:00:00Z", "refresh_at": "2025-01-01T11:40:00Z"}

with ``Cache-Control: no-store``. ``refresh_at`` is when the broker itself will fetch
a new one: a caller that caches the token should come back then. Every read is logged
at INFO with the key's name, the app and the instance, never the token.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..core.clock import to_datetime
from ..core.errors import ConfigError, TokenBrokerError
from ..core.metrics import TOKEN_API_REQUESTS
from ..core.token import Token, validate_id
from .apps import Served
from .callers import authorize
from .keys import TOKEN
from .problems import REQUEST_ID_HEADER, failure, log, refuse, request_id

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def rfc3339(moment: datetime) -> str:
    """``moment`` in UTC, to the second (rounded down), with a ``Z``."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def token_json(token: Token, refresh_at: datetime) -> dict[str, str]:
    return {
        "access_token": token.access_token,
        "token_type": token.token_type,
        "expires_at": rfc3339(token.expires_at),
        "refresh_at": rfc3339(refresh_at),
    }


async def unknown_app(request: Request, name: str, key: str) -> JSONResponse:
    return refuse(request, 404, "unknown_app", f"app {name!r} is not served here", key=key)


def bad_instance(request: Request, instance_id: str, key: str) -> JSONResponse | None:
    """The 400 for an instance id that is no id (blank, too long, control characters)."""
    try:
        validate_id(instance_id)
    except ConfigError as exc:
        return refuse(request, 400, "bad_request", str(exc), key=key)
    return None


async def read_token(request: Request, served: Served) -> Response:
    """The endpoint (see the module), counted in ``tokenbroker_token_api_requests_total``:
    ``app`` is the app asked for when it is served (else ``unknown``: the path must not
    grow the label set), ``key`` the service key's name (empty before it is known),
    ``outcome`` ``ok`` or the status answered."""
    name = request.path_params["name"]
    holder: list[str] = [""]
    response = await _read_token(request, served, name, holder)
    app = name if served.get(name) is not None else "unknown"
    outcome = "ok" if response.status_code == 200 else str(response.status_code)
    TOKEN_API_REQUESTS.inc((app, holder[0], outcome))
    return response


async def _read_token(request: Request, served: Served, name: str, holder: list[str]) -> Response:
    instance_id = request.path_params["instance_id"]
    assert served.keys is not None  # set when the token API is on
    key = await authorize(request, served.keys, scope=TOKEN, app=name)
    if isinstance(key, Response):
        return key
    holder[0] = key.name
    broker = served.get(name)
    if broker is None:
        return await unknown_app(request, name, key.name)
    if (refused := bad_instance(request, instance_id, key.name)) is not None:
        return refused
    try:
        token = await broker.atoken(instance_id)
    except TokenBrokerError as exc:
        return failure(request, exc, broker.clock.time(), key=key.name)
    refresh_at = to_datetime(broker.policy.thresholds(token)[0])
    rid = request_id(request)
    log.info(
        "token read: key %s, app %s, instance %r, token %s (request id %s)",
        key.name,
        name,
        instance_id,
        token.fingerprint,
        rid,
    )
    return JSONResponse(token_json(token, refresh_at), headers={**NO_STORE, REQUEST_ID_HEADER: rid})
