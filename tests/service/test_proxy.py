"""The proxy over loopback: Wix called as the installation, the caller never sees a token."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import httpx2
import pytest

from tokenbroker import TokenBroker
from tokenbroker.testing.emulator import WixEmulator

from ..conftest import APP_ID, APP_SECRET
from ..polling import wait_until
from .service_api import Api, bearer, proxy_path, serving

INSTANCE_PATH = "apps/v1/instance"


@pytest.fixture
def api(broker: TokenBroker) -> Iterator[Api]:
    with serving(broker) as running_api:
        yield running_api


class TestThroughTheEmulator:
    def test_get_app_instance_answers_as_wix_does_directly(
        self, api: Api, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        key = api.key("caller", scopes=("proxy",))
        response = api.client.get(proxy_path(INSTANCE_PATH), headers=bearer(key))
        assert response.status_code == 200
        assert response.json() == broker.app_instance("inst-1")
        assert response.headers["x-wix-request-id"]
        assert wix_emulator.bearer_prefixed == 0  # the raw token, as Wix wants it

    def test_a_token_scoped_key_may_use_the_proxy_too(self, api: Api) -> None:
        key = api.key("reader", scopes=("token",))
        assert api.client.get(proxy_path(INSTANCE_PATH), headers=bearer(key)).status_code == 200

    def test_keys_and_apps_are_checked_as_for_tokens(self, api: Api) -> None:
        assert api.client.get(proxy_path(INSTANCE_PATH)).status_code == 401
        other = api.key("other", apps=("other-app",), scopes=("proxy",))
        assert api.client.get(proxy_path(INSTANCE_PATH), headers=bearer(other)).status_code == 403
        wide = api.key("wide", apps=("default", "ghost-app"), scopes=("proxy",))
        response = api.client.get(proxy_path(INSTANCE_PATH, app="ghost-app"), headers=bearer(wide))
        assert response.status_code == 404

    def test_an_instance_that_is_not_installed_is_409(self, api: Api) -> None:
        key = api.key("caller", scopes=("proxy",))
        response = api.client.get(proxy_path(INSTANCE_PATH, "ghost-1"), headers=bearer(key))
        assert response.status_code == 409
        assert response.json()["error"] == "not_installed"

    def test_a_401_from_wix_gets_one_new_token_then_is_returned_as_it_is(
        self, api: Api, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        key = api.key("caller", scopes=("proxy",))
        headers = bearer(key)
        assert api.client.get(proxy_path(INSTANCE_PATH), headers=headers).status_code == 200
        wix_emulator.revoke(broker.token("inst-1").access_token)
        # Wix refuses the token: the proxy gets a new one and retries, once
        assert api.client.get(proxy_path(INSTANCE_PATH), headers=headers).status_code == 200
        assert wix_emulator.token_requests == 2
        wix_emulator.revoke(broker.token("inst-1").access_token)
        # again within the grace: no third token, Wix's 401 goes back as it is
        refused = api.client.get(proxy_path(INSTANCE_PATH), headers=headers)
        assert refused.status_code == 401
        assert refused.headers["x-wix-request-id"]
        assert wix_emulator.token_requests == 2

    def test_a_proxied_call_is_logged_without_token_or_key(
        self, api: Api, broker: TokenBroker, caplog: pytest.LogCaptureFixture
    ) -> None:
        key = api.key("caller", scopes=("proxy",))
        with caplog.at_level(logging.DEBUG):
            assert api.client.get(proxy_path(INSTANCE_PATH), headers=bearer(key)).status_code == 200
        assert any(
            "proxied GET /apps/v1/instance for key caller" in r.getMessage() for r in caplog.records
        )
        assert broker.token("inst-1").access_token not in caplog.text
        assert key not in caplog.text

    def test_an_unreachable_wix_is_503(self, sqlite_url: str, wix_emulator: WixEmulator) -> None:
        with TokenBroker(
            app_id=APP_ID, app_secret=APP_SECRET, store=sqlite_url, api_url=wix_emulator.url
        ) as broker:
            broker.token("inst-1")  # a token in hand: only the proxied call fails
            down = httpx2.MockTransport(_refuse_to_connect)
            with serving(broker, proxy_transport=down) as api:
                key = api.key("caller", scopes=("proxy",))
                response = api.client.get(proxy_path(INSTANCE_PATH), headers=bearer(key))
        assert response.status_code == 503
        assert response.json()["error"] == "wix_unavailable"

    def test_a_wix_that_answers_too_slowly_is_504(self, broker: TokenBroker) -> None:
        slow = httpx2.MockTransport(_time_out)
        with serving(broker, proxy_transport=slow) as api:
            key = api.key("caller", scopes=("proxy",))
            response = api.client.get(proxy_path(INSTANCE_PATH), headers=bearer(key))
        assert response.status_code == 504
        assert response.json()["error"] == "wix_timeout"


def _refuse_to_connect(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ConnectError("connection refused", request=request)


def _time_out(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ReadTimeout("timed out", request=request)


class Upstream:
    """A MockTransport that records what it was sent and can hold requests."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []
        self.gate: threading.Event | None = None
        self.transport = httpx2.MockTransport(self.handle)

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if self.gate is not None:
            await asyncio.to_thread(self.gate.wait, 30)
        return httpx2.Response(200, json={"got": len(request.content)})


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


class TestLimits:
    def test_a_body_over_the_limit_is_413_and_never_sent(
        self, broker: TokenBroker, upstream: Upstream
    ) -> None:
        with serving(broker, proxy_transport=upstream.transport, proxy_max_body=1024) as api:
            headers = bearer(api.key("caller", scopes=("proxy",)))
            at_limit = api.client.post(proxy_path("x"), headers=headers, content=b"a" * 1024)
            over = api.client.post(proxy_path("x"), headers=headers, content=b"a" * 1025)
            chunked = api.client.post(
                proxy_path("x"), headers=headers, content=iter([b"b" * 600, b"b" * 600])
            )
        assert at_limit.status_code == 200
        assert at_limit.json() == {"got": 1024}
        assert over.status_code == 413
        assert over.json()["error"] == "payload_too_large"
        assert chunked.status_code == 413
        assert len(upstream.requests) == 1

    def test_calls_in_flight_per_key_are_bounded(
        self, broker: TokenBroker, upstream: Upstream
    ) -> None:
        upstream.gate = threading.Event()
        with serving(broker, proxy_transport=upstream.transport, key_concurrency=2) as api:
            busy = bearer(api.key("busy", scopes=("proxy",)))
            idle = bearer(api.key("idle", scopes=("proxy",)))
            answers: list[int] = []

            def call(headers: dict[str, str]) -> threading.Thread:
                def run() -> None:
                    url = api.url + proxy_path("slow")
                    answers.append(httpx2.get(url, headers=headers, timeout=30).status_code)

                thread = threading.Thread(target=run)
                thread.start()
                return thread

            callers = [call(busy), call(busy)]
            try:
                wait_until(lambda: len(upstream.requests) == 2, "two calls held upstream")
                third = api.client.get(proxy_path("slow"), headers=busy)
                assert third.status_code == 429
                assert third.json()["error"] == "too_many_requests"
                assert third.headers["retry-after"] == "1"
                callers.append(call(idle))  # another key has slots of its own
                wait_until(lambda: len(upstream.requests) == 3, "another key's call")
            finally:
                upstream.gate.set()
                for thread in callers:
                    thread.join(30)
            assert answers == [200, 200, 200]
            # the slots came back
            assert api.client.get(proxy_path("slow"), headers=busy).status_code == 200


def test_a_proxy_off_service_has_no_proxy_route(broker: TokenBroker) -> None:
    with serving(broker, proxy=False) as api:
        key = api.key("caller", scopes=("proxy",))
        assert api.client.get(proxy_path(INSTANCE_PATH), headers=bearer(key)).status_code == 404
