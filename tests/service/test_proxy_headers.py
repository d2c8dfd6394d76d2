"""What the proxy forwards and returns: headers (hop-by-hop dropped both ways), bodies
unchanged, and the answer streamed rather than buffered."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest

from tokenbroker import TokenBroker

from .service_api import Api, bearer, proxy_path, raw_request, serving

HOP_BY_HOP = (
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-foo",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-named-hop",
)


class Upstream:
    """A MockTransport standing in for Wix: records requests, answers as told."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []
        self.answer: httpx2.Response | None = None
        self.transport = httpx2.MockTransport(self.handle)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return self.answer or httpx2.Response(200, json={"ok": True})


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def api(broker: TokenBroker, upstream: Upstream) -> Iterator[Api]:
    with serving(broker, proxy_transport=upstream.transport) as running_api:
        yield running_api


class TestForwarded:
    def test_hop_by_hop_headers_and_the_service_key_stay_here(
        self, api: Api, broker: TokenBroker, upstream: Upstream
    ) -> None:
        key = api.key("caller", scopes=("proxy",))
        body = b'{"query": {"filter": "x"}}'
        chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        response = raw_request(
            api.url,
            proxy_path("stores/v1/products/query") + "?a=1&a=2",
            [
                ("Authorization", f"Bearer {key}"),
                ("Connection", "close, X-Named-Hop"),
                ("X-Named-Hop", "dropped"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
                ("Proxy-Foo", "bar"),
                ("TE", "trailers"),
                ("Trailer", "X-Checksum"),
                ("Upgrade", "h2c"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Type", "application/json"),
                ("X-Kept", "yes"),
            ],
            method="POST",
            body=chunked,
        )
        assert response.status == 200, response.body
        (sent,) = upstream.requests
        for name in HOP_BY_HOP:
            assert name not in sent.headers, name
        assert sent.headers["authorization"] == broker.token("inst-1").access_token
        assert key not in str(sent.headers.raw)
        assert sent.headers["host"] == sent.url.netloc.decode()
        assert sent.headers["x-kept"] == "yes"
        assert sent.headers["content-type"] == "application/json"
        assert sent.content == body
        assert sent.url.query == b"a=1&a=2"
        assert sent.method == "POST"

    def test_the_callers_cookies_and_claimed_identity_stay_here(
        self, api: Api, upstream: Upstream
    ) -> None:
        key = api.key("claims", scopes=("proxy",))
        claims = [
            ("Cookie", "session=abc"),
            ("Forwarded", "for=1.2.3.4"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Port", "443"),
            ("X-Real-IP", "1.2.3.4"),
        ]
        response = raw_request(
            api.url,
            proxy_path("apps/v1/instance"),
            [("Authorization", f"Bearer {key}"), *claims, ("X-Kept", "yes")],
        )
        assert response.status == 200, response.body
        (sent,) = upstream.requests
        for name, _ in claims:
            assert name.lower() not in sent.headers, name
        assert sent.headers["x-kept"] == "yes"

    def test_hop_by_hop_headers_of_the_answer_stay_there(
        self, api: Api, upstream: Upstream
    ) -> None:
        upstream.answer = httpx2.Response(
            201,
            headers=[
                ("Connection", "close, X-Answer-Hop"),
                ("X-Answer-Hop", "dropped"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Authenticate", "Basic"),
                ("Trailer", "X-Checksum"),
                ("Upgrade", "h2c"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("X-Wix-Request-Id", "1234.5678"),
            ],
            content=b"made",
        )
        key = api.key("caller", scopes=("proxy",))
        response = api.client.post(proxy_path("items"), headers=bearer(key), content=b"x")
        assert response.status_code == 201
        assert response.content == b"made"
        for name in ("x-answer-hop", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
            assert name not in response.headers, name
        assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
        assert response.headers["x-wix-request-id"] == "1234.5678"
        assert response.headers["x-request-id"]

    def test_an_error_from_wix_goes_back_as_it_is(self, api: Api, upstream: Upstream) -> None:
        upstream.answer = httpx2.Response(404, json={"message": "no such item"})
        key = api.key("caller", scopes=("proxy",))
        response = api.client.get(proxy_path("items/x"), headers=bearer(key))
        assert response.status_code == 404
        assert response.json() == {"message": "no such item"}


class TestStreamed:
    def test_the_answer_arrives_before_wix_has_finished_sending_it(
        self, broker: TokenBroker
    ) -> None:
        gate = threading.Event()

        async def body() -> AsyncIterator[bytes]:
            yield b"first part;"
            # the rest only once the caller has the first part: a buffering proxy
            # would hold it back, and this would give up
            if not await asyncio.to_thread(gate.wait, 20):
                raise RuntimeError("the caller never saw the first part")
            yield b"second part"

        def handle(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(200, content=body())

        with serving(broker, proxy_transport=httpx2.MockTransport(handle)) as api:
            key = api.key("caller", scopes=("proxy",))
            with api.client.stream("GET", proxy_path("export"), headers=bearer(key)) as response:
                chunks = response.iter_raw()
                first = next(chunks)
                gate.set()
                rest = b"".join(chunks)
        assert first == b"first part;"
        assert rest == b"second part"

    def test_a_large_body_streams_through_intact(self, broker: TokenBroker) -> None:
        piece = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB
        count = 128  # 8 MiB

        async def body() -> AsyncIterator[bytes]:
            for _ in range(count):
                yield piece

        def handle(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(200, content=body())

        expected = hashlib.sha256(piece * count).hexdigest()
        with serving(broker, proxy_transport=httpx2.MockTransport(handle)) as api:
            key = api.key("caller", scopes=("proxy",))
            digest, size = hashlib.sha256(), 0
            with api.client.stream("GET", proxy_path("export"), headers=bearer(key)) as response:
                assert response.status_code == 200
                for chunk in response.iter_raw():
                    digest.update(chunk)
                    size += len(chunk)
        assert size == len(piece) * count
        assert digest.hexdigest() == expected
