"""``httpx.Auth`` that signs requests with an installation's access token."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from .client import TokenBroker
    from .core.token import Token


def _authorize(request: httpx.Request, token: Token) -> httpx.Request:
    # Wix wants the raw token: no "Bearer " prefix.
    request.headers["Authorization"] = token.access_token
    return request


class BrokerAuth(httpx.Auth):
    """Sets ``Authorization: <raw token>``. On a 401 it drops that token, gets a
    fresh one and retries the request once; a second 401 is returned as is."""

    requires_request_body = True  # the body is replayed on the retry

    def __init__(self, broker: TokenBroker, instance_id: str) -> None:
        self._broker = broker
        self.instance_id = broker.key(instance_id).instance_id

    def __repr__(self) -> str:
        return f"BrokerAuth(instance_id={self.instance_id!r})"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        request.read()
        token = self._broker.token(self.instance_id)
        response = yield _authorize(request, token)
        if response.status_code == 401:
            self._broker.invalidate(token)
            yield _authorize(request, self._broker.token(self.instance_id))

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        token = await self._broker.atoken(self.instance_id)
        response = yield _authorize(request, token)
        if response.status_code == 401:
            await self._broker.ainvalidate(token)
            yield _authorize(request, await self._broker.atoken(self.instance_id))
