"""``broker.auth(instance_id)``: an httpx2 ``Auth`` (and an httpx one) for Wix calls.

It sets ``Authorization: <raw token>`` (Wix wants no ``Bearer`` prefix). On a
401 it drops that token, gets a fresh one and retries the request once; a
second 401 is returned as it is. The decisions are one generator, ``_flow``,
that yields either a request for the HTTP client to send or a typed op on the
broker; ``sync_auth_flow`` and ``async_auth_flow`` only drive it.

It works with ``httpx2.Client``/``AsyncClient`` and, where httpx is installed,
with ``httpx.Client``/``AsyncClient`` too: the class derives from both ``Auth``
bases (the two share one protocol), and httpx is never a dependency.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import httpx2

from ..core.flow import Op

if TYPE_CHECKING:
    from ..core.token import Token, TokenKey


class TokenSource(Protocol):
    """What the auth needs of the broker."""

    def key(self, instance_id: str) -> TokenKey: ...

    def token(self, instance_id: str) -> Token: ...

    async def atoken(self, instance_id: str) -> Token: ...

    def invalidate(self, token: Token) -> None: ...

    async def ainvalidate(self, token: Token) -> None: ...


@attrs.frozen
class _TokenFor(Op["Token"]):
    instance_id: str

    def run(self, port: TokenSource) -> Token:
        return port.token(self.instance_id)

    async def arun(self, port: TokenSource) -> Token:
        return await port.atoken(self.instance_id)


@attrs.frozen
class _Invalidate(Op[None]):
    token: Token

    def run(self, port: TokenSource) -> None:
        port.invalidate(self.token)

    async def arun(self, port: TokenSource) -> None:
        await port.ainvalidate(self.token)


def _authorize(request: Any, token: Token) -> Any:
    request.headers["Authorization"] = token.access_token
    return request


def _httpx_auth_base() -> type[httpx2.Auth]:
    """httpx2's ``Auth``, joined by httpx's when httpx is importable."""
    try:
        import httpx  # noqa: PLC0415 - optional: only to be accepted by httpx clients
    except ImportError:
        return httpx2.Auth
    return type("_Auth", (httpx2.Auth, httpx.Auth), {})


_AuthBase: type[httpx2.Auth] = httpx2.Auth if TYPE_CHECKING else _httpx_auth_base()

# What the flow yields: a request for the client to send, or an op on the broker.
_Step = Any


class BrokerAuth(_AuthBase):  # type: ignore[misc,valid-type]
    """Sets ``Authorization: <raw token>``; on a 401 re-mints once and retries."""

    requires_request_body = True  # the body is replayed on the retry

    def __init__(self, broker: TokenSource, instance_id: str) -> None:
        self._broker = broker
        self.instance_id = broker.key(instance_id).instance_id

    def __repr__(self) -> str:
        return f"BrokerAuth(instance_id={self.instance_id!r})"

    def _flow(self, request: Any) -> Generator[_Step, Any, None]:
        token = yield from _TokenFor(self.instance_id)
        response = yield _authorize(request, token)
        if response.status_code == 401:
            yield from _Invalidate(token)
            token = yield from _TokenFor(self.instance_id)
            yield _authorize(request, token)

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        request.read()
        flow = self._flow(request)
        sent: Any = None
        while True:
            try:
                step = flow.send(sent)
            except StopIteration:
                return
            sent = step.run(self._broker) if isinstance(step, Op) else (yield step)

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        await request.aread()
        flow = self._flow(request)
        sent: Any = None
        while True:
            try:
                step = flow.send(sent)
            except StopIteration:
                return
            sent = (await step.arun(self._broker)) if isinstance(step, Op) else (yield step)
