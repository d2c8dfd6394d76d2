"""``broker.auth()`` with every client kind: httpx2 and httpx, sync and async.

tokenbroker depends on httpx2 only; httpx is installed in the test environment
to prove that apps still on httpx can pass ``broker.auth()`` to their clients.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import httpx2
import pytest
from starlette.testclient import TestClient

from tokenbroker import TokenBroker
from tokenbroker.service import create_app
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.webhooks import make_key_pair

from .conftest import APP_ID, APP_SECRET, INSTANCE

CLIENTS = {
    "httpx2.Client": (httpx2.Client, False),
    "httpx2.AsyncClient": (httpx2.AsyncClient, True),
    "httpx.Client": (httpx.Client, False),
    "httpx.AsyncClient": (httpx.AsyncClient, True),
}


async def call(kind: str, url: str, auth: Any, method: str, path: str, **kw: Any) -> Any:
    """One request through a client of ``kind``; the response."""
    cls, is_async = CLIENTS[kind]
    if is_async:
        async with cls(base_url=url, auth=auth) as client:
            return await client.request(method, path, **kw)
    with cls(base_url=url, auth=auth) as client:
        return client.request(method, path, **kw)


@contextmanager
def no_deprecation_warnings() -> Iterator[None]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
    deprecations = [
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in seen
        if issubclass(w.category, DeprecationWarning | PendingDeprecationWarning)
    ]
    assert not deprecations, deprecations


@pytest.mark.parametrize("kind", sorted(CLIENTS))
class TestEveryClientKind:
    async def test_the_request_carries_the_raw_token(
        self, kind: str, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        response = await call(
            kind, wix_emulator.url, broker.auth(INSTANCE), "GET", "/apps/v1/instance"
        )
        assert response.status_code == 200
        sent = response.request.headers["Authorization"]
        assert sent == (await broker.atoken(INSTANCE)).access_token
        assert not sent.startswith("Bearer")

    async def test_a_401_re_mints_once_and_replays_the_body(
        self, kind: str, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        old = await broker.atoken(INSTANCE)
        wix_emulator.revoke(old.access_token)
        response = await call(
            kind,
            wix_emulator.url,
            broker.auth(INSTANCE),
            "POST",
            "/apps/v1/bi-event",
            json={"eventName": "APP_FINISHED_CONFIGURATION"},
        )
        assert response.status_code == 200
        assert wix_emulator.token_requests == 2
        assert response.request.headers["Authorization"] != old.access_token
        assert json.loads(response.request.content) == {"eventName": "APP_FINISHED_CONFIGURATION"}

    async def test_a_second_401_is_returned_as_it_is(
        self, kind: str, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.fail_next(401, endpoint="apps/v1/instance", times=5)
        response = await call(
            kind, wix_emulator.url, broker.auth(INSTANCE), "GET", "/apps/v1/instance"
        )
        assert response.status_code == 401
        assert wix_emulator.calls["apps/v1/instance"] == 2

    async def test_no_deprecation_warning_is_raised(
        self, kind: str, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        with no_deprecation_warnings():
            response = await call(
                kind, wix_emulator.url, broker.auth(INSTANCE), "GET", "/apps/v1/instance"
            )
        assert response.status_code == 200


class TestTheAuthIsAnAuthOfBothLibraries:
    def test_it_is_an_httpx2_auth_and_an_httpx_auth(self, broker: TokenBroker) -> None:
        auth = broker.auth(INSTANCE)
        assert isinstance(auth, httpx2.Auth)
        assert isinstance(auth, httpx.Auth)


class TestTheServiceTestClient:
    def test_starlette_s_test_client_raises_no_deprecation_warning(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        _, public = make_key_pair()
        with (
            TokenBroker(
                app_id=APP_ID,
                app_secret=APP_SECRET,
                store=sqlite_url,
                api_url=wix_emulator.url,
                public_key=public,
            ) as broker,
            no_deprecation_warnings(),
            TestClient(create_app(broker)) as client,
        ):
            response = client.get("/healthz")
        assert response.status_code == 200
