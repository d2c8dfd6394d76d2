"""A herd on a cold key through the token API: ~200 callers over loopback, one Wix request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tokenbroker import TokenBroker
from tokenbroker.service.app import create_app
from tokenbroker.service.keys import ServiceKeys
from tokenbroker.testing.emulator import WixEmulator

from ..conftest import APP_ID, APP_SECRET
from ..polling import wait_until
from ..webhook_helpers import running
from .service_api import bearer, token_path

CALLERS = 200


class Entered:
    """An ASGI wrapper counting the token requests that reached the app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/token"):
            self.count += 1
        await self.app(scope, receive, send)


@pytest.fixture
def herd_broker(wix_emulator: WixEmulator) -> Iterator[TokenBroker]:
    with TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store="memory://", api_url=wix_emulator.url
    ) as broker:
        yield broker


async def read_all(url: str, key: str, count: int) -> list[httpx2.Response]:
    limits = httpx2.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx2.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        return await asyncio.gather(
            *(client.get(token_path("inst-1"), headers=bearer(key)) for _ in range(count))
        )


def test_two_hundred_callers_on_a_cold_key_make_one_wix_request(
    herd_broker: TokenBroker, wix_emulator: WixEmulator
) -> None:
    keys = ServiceKeys(herd_broker.store)
    key = keys.add("herd", ["default"], ["token"])
    app = Entered(create_app(herd_broker, token_api=True, keys=keys))
    wix_emulator.pause()  # hold the first token request until every caller is in
    with running(app) as url:
        results: list[httpx2.Response] = []

        def herd() -> None:
            results.extend(asyncio.run(read_all(url, key, CALLERS)))

        thread = threading.Thread(target=herd)
        thread.start()
        try:
            wait_until(lambda: app.count == CALLERS, "every caller to reach the service")
            assert wix_emulator.wait_for_in_flight(1)
        finally:
            wix_emulator.resume()
            thread.join(60)
    assert len(results) == CALLERS
    assert {r.status_code for r in results} == {200}
    assert len({r.json()["access_token"] for r in results}) == 1
    assert wix_emulator.token_requests == 1
    assert wix_emulator.peak_concurrency == 1
