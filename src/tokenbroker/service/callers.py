"""Who is calling the token API or the proxy: the service key of the request.

A caller sends ``Authorization: Bearer <service key>``, once. Anything else is the
one 401 (``problems.unauthorized``): no header, two of them, another scheme, stray
whitespace, a key of the wrong form, an unknown, revoked or wrong key. The body is
the same whatever the reason, so a refusal tells nothing about which keys exist. A
key without the scope, or for an app it does not cover, is a 403.
"""

from __future__ import annotations

from typing import Final

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..core.errors import StorageError
from .keys import NAME, PROXY, TOKEN, ServiceKey, ServiceKeys, name_of
from .problems import log, refuse, request_id, unauthorized

_DOING: Final = {TOKEN: "read tokens", PROXY: "use the proxy"}


def bearer_key(headers: Headers) -> str | None:
    """The service key of ``Authorization: Bearer <key>``, or ``None`` when there is
    not exactly one such header with exactly one well-formed key in it."""
    values = headers.getlist("authorization")
    if len(values) != 1:
        return None
    scheme, space, key = values[0].partition(" ")
    if space != " " or scheme.lower() != "bearer" or name_of(key) is None:
        return None
    return key


async def authorize(
    request: Request, keys: ServiceKeys, *, scope: str, app: str
) -> ServiceKey | JSONResponse:
    """The caller's key if it may use ``scope`` on ``app``; else the refusal to send."""
    presented = bearer_key(request.headers)
    if presented is None:
        return unauthorized(request)
    try:
        key = await keys.aauthenticate(presented)
    except StorageError as exc:
        log.warning("cannot check a service key (request id %s): %s", request_id(request), exc)
        return refuse(request, 503, "store_unavailable", "the token store is unavailable")
    if key is None:
        return unauthorized(request)
    if not key.allows(scope):
        return refuse(
            request,
            403,
            "forbidden",
            f"service key {key.name!r} may not {_DOING[scope]} (its scopes: "
            f"{', '.join(key.scopes)})",
            key=key.name,
        )
    if NAME.fullmatch(app) is None or not key.covers(app):
        shown = repr(app)[:70]
        return refuse(
            request,
            403,
            "forbidden",
            f"service key {key.name!r} does not cover app {shown}",
            key=key.name,
        )
    return key


class Slots:
    """At most ``limit`` requests at once per service key (one event loop's count)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._taken: dict[str, int] = {}

    def take(self, name: str) -> bool:
        """Take a slot for ``name``; ``False`` when all of its slots are taken."""
        taken = self._taken.get(name, 0)
        if taken >= self.limit:
            return False
        self._taken[name] = taken + 1
        return True

    def give_back(self, name: str) -> None:
        left = self._taken.get(name, 0) - 1
        if left > 0:
            self._taken[name] = left
        else:
            self._taken.pop(name, None)

    def taken(self, name: str) -> int:
        return self._taken.get(name, 0)
