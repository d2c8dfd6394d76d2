"""No proxy path, encoded or not, leaves the API URL: the corpus, sent byte for byte."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx2
import pytest

from tokenbroker import TokenBroker
from tokenbroker.service.paths import UnsafePath, build_url, check
from tokenbroker.testing.emulator import WixEmulator

from ..conftest import APP_ID, APP_SECRET
from .service_api import Api, proxy_path, raw_request, serving

API_URL = "http://wix.test:8443/base"

ESCAPES = {
    "dot-dot": "../token",
    "dot-dot-deep": "apps/../../token",
    "dot": "./apps/v1/instance",
    "dot-inside": "apps/./v1",
    "encoded-dot-dot": "%2e%2e/token",
    "encoded-dot-dot-upper": "%2E%2E/token",
    "half-encoded": ".%2e/token",
    "encoded-dot": "%2e/apps",
    "double-encoded-dot-dot": "%252e%252e/token",
    "encoded-slash": "apps%2fv1",
    "encoded-slash-upper": "apps%2Fv1",
    "double-encoded-slash": "apps%252fv1",
    "encoded-backslash": "apps%5cv1",
    "backslash": "apps\\..\\token",
    "double-slash-host": "/evil.example/x",
    "empty-segment": "apps//v1",
    "absolute-url": "http://evil.example/x",
    "scheme-relative": "https:evil.example",
    "host-port": "evil.example:443/x",
    "at": "user@evil.example/x",
    "encoded-at": "x%40evil.example",
    "nul": "apps/%00/x",
    "crlf": "apps%0d%0aHost:%20evil.example/x",
    "delete": "apps/%7f",
    "non-ascii": "caf%C3%A9",
    "fullwidth-dots": "%EF%BC%8E%EF%BC%8E/token",
    "nothing": "",
    # read as '..' by servers that drop ';' parameters (Tomcat, Jetty) or trim trailing
    # dots and spaces (IIS)
    "dot-dot-params": "a/..;/b",
    "dot-dot-params-at-start": "..;/etc",
    "encoded-dot-dot-params": "a/%2e%2e;x/b",
    "encoded-semicolon": "a/%2e%2e%3b/b",
    "dot-dot-space": "a/..%20/b",
    "three-dots": "a/.../b",
    "percent-u": "a/%u002e%u002e/b",
}

ALLOWED = {
    "plain": "apps/v1/instance",
    "trailing-slash": "apps/v1/instance/",
    "encoded-space": "a%20b",
    "colon-later": "stores/v1/products:query",
    "dots-in-names": "files/a.b/c..d/...e",
    "encoded-dot-in-name": "file%2Ejson",
    "tilde": "%7Euser",
    "path-params": "a;b=1/c",
}


class Upstream:
    def __init__(self) -> None:
        self.urls: list[httpx2.URL] = []
        self.transport = httpx2.MockTransport(self.handle)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.urls.append(request.url)
        return httpx2.Response(200, json={"ok": True})


@pytest.fixture(scope="module")
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture(scope="module")
def api(upstream: Upstream) -> Iterator[Api]:
    with (
        WixEmulator(APP_ID, APP_SECRET) as emulator,
        TokenBroker(
            app_id=APP_ID, app_secret=APP_SECRET, store="memory://", api_url=emulator.url
        ) as broker,
        serving(broker, proxy_transport=upstream.transport) as running_api,
    ):
        emulator.install("inst-1")
        yield running_api


@pytest.fixture(scope="module")
def key(api: Api) -> str:
    return api.key("paths", scopes=("proxy",))


@pytest.mark.parametrize("path", ESCAPES.values(), ids=ESCAPES.keys())
def test_an_escaping_path_is_400_and_nothing_is_sent(
    api: Api, key: str, upstream: Upstream, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.urls.clear()
    with caplog.at_level(logging.INFO, logger="tokenbroker.service"):
        response = raw_request(api.url, proxy_path(path), {"Authorization": f"Bearer {key}"})
    # a line break cannot even match the route: no such route, refused all the same
    expected = (404, "not_found") if "%0a" in path else (400, "bad_path")
    assert (response.status, response.json()["error"]) == expected, response.body
    assert upstream.urls == []
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert f"{expected[0]} {expected[1]}" in line
    assert "evil" not in line  # the reason, never the caller's path


@pytest.mark.parametrize("path", ALLOWED.values(), ids=ALLOWED.keys())
def test_a_safe_path_is_forwarded_as_it_came(
    api: Api, key: str, upstream: Upstream, path: str
) -> None:
    upstream.urls.clear()
    target = proxy_path(path) + "?q=a%20b&q=c+d&empty="
    response = raw_request(api.url, target, {"Authorization": f"Bearer {key}"})
    assert response.status == 200, response.body
    (url,) = upstream.urls
    base = httpx2.URL(api.broker.provider.api_url)  # type: ignore[attr-defined]
    assert (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)
    assert url.raw_path == f"/{path}?q=a%20b&q=c+d&empty=".encode()


def test_an_encoded_slash_in_the_instance_id_is_refused(api: Api, key: str) -> None:
    response = raw_request(
        api.url,
        "/v1/apps/default/instances/inst-1%2Fwix%2F..%2F..%2Ftoken/wix/x",
        {"Authorization": f"Bearer {key}"},
    )
    assert response.status in (400, 404)
    assert response.json()["error"] in ("bad_path", "not_found")


class TestTheChecksThemselves:
    @pytest.mark.parametrize("path", ESCAPES.values(), ids=ESCAPES.keys())
    def test_check_refuses_every_escape(self, path: str) -> None:
        with pytest.raises(UnsafePath):
            check(path)

    @pytest.mark.parametrize("path", ALLOWED.values(), ids=ALLOWED.keys())
    def test_build_url_keeps_the_base_and_the_path(self, path: str) -> None:
        url = build_url(API_URL, path, b"x=1")
        assert (url.scheme, url.host, url.port) == ("http", "wix.test", 8443)
        assert url.raw_path == f"/base/{path}?x=1".encode()
