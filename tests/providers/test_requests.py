"""What the oauth2 provider sends: a form-encoded client-credentials request."""

from __future__ import annotations

import base64
import urllib.parse

import httpx2
import pytest

from tokenbroker import ConfigError, TokenKey
from tokenbroker.providers.oauth2 import basic_credentials

from .conftest import CLIENT_ID, KEY, OK, SECRET, TOKEN_URL, Script, make_provider


def form_of(request: httpx2.Request) -> list[tuple[str, str]]:
    return urllib.parse.parse_qsl(request.content.decode("ascii"), strict_parsing=True)


class TestTheRequest:
    def test_a_form_post_asking_for_json(self) -> None:
        script = Script(httpx2.Response(200, json=OK))
        make_provider(script).acquire(KEY)
        [request] = script.requests
        assert request.method == "POST"
        assert str(request.url) == TOKEN_URL
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert request.headers["Accept"] == "application/json"
        assert request.headers["User-Agent"].startswith("tokenbroker/")
        assert form_of(request) == [("grant_type", "client_credentials")]

    def test_basic_auth_form_urlencodes_id_and_secret_before_base64(self) -> None:
        # RFC 6749 2.3.1: "client_id" and "client_secret" are encoded with the
        # application/x-www-form-urlencoded algorithm, then used as Basic's user and password.
        script = Script(httpx2.Response(200, json=OK))
        make_provider(script, client_id="id:with space").acquire(KEY)
        scheme, _, encoded = script.requests[0].headers["Authorization"].partition(" ")
        assert scheme == "Basic"
        assert base64.b64decode(encoded).decode() == (
            "id%3Awith+space:s3cr3t%3Avalue%2Bwith%2Fodd%26chars"
        )
        assert SECRET not in script.requests[0].content.decode()
        assert "client_id" not in dict(form_of(script.requests[0]))

    def test_basic_credentials_round_trip_through_form_decoding(self) -> None:
        value = basic_credentials("a:b", "p@ss word+%")
        user, _, password = base64.b64decode(value.removeprefix("Basic ")).decode().partition(":")
        assert urllib.parse.unquote_plus(user) == "a:b"
        assert urllib.parse.unquote_plus(password) == "p@ss word+%"

    def test_client_secret_post_puts_the_credentials_in_the_body_and_no_header(self) -> None:
        script = Script(httpx2.Response(200, json=OK))
        make_provider(script, auth_method="client_secret_post").acquire(KEY)
        [request] = script.requests
        assert "Authorization" not in request.headers
        assert dict(form_of(request)) == {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
        }

    def test_scope_audience_tenant_and_extra_in_that_order(self) -> None:
        script = Script(httpx2.Response(200, json=OK))
        provider = make_provider(
            script,
            scope=["read", "write"],
            audience="https://api.example.com/",
            tenant_param="tenant_id",
            extra={"resource": "urn:x", "version": 2},
        )
        provider.acquire(KEY)
        assert form_of(script.requests[0]) == [
            ("grant_type", "client_credentials"),
            ("scope", "read write"),
            ("audience", "https://api.example.com/"),
            ("tenant_id", KEY.instance_id),
            ("resource", "urn:x"),
            ("version", "2"),
        ]

    def test_without_tenant_param_the_instance_id_is_not_sent(self) -> None:
        script = Script(httpx2.Response(200, json=OK))
        make_provider(script).acquire(TokenKey("oauth2", KEY.app_id, "secret-instance-name"))
        sent = script.requests[0]
        assert b"secret-instance-name" not in sent.content
        assert "secret-instance-name" not in str(sent.url)

    def test_a_key_of_another_app_is_refused_before_anything_is_sent(self) -> None:
        script = Script(httpx2.Response(200, json=OK))
        with pytest.raises(ConfigError, match="serves app 'oauth-app', not 'other'"):
            make_provider(script).acquire(TokenKey("oauth2", "other", "t"))
        assert script.requests == []

    def test_a_redirect_is_not_followed(self) -> None:
        # following it would carry the client secret to wherever the Location points
        script = Script(httpx2.Response(302, headers={"Location": "https://evil.example/t"}))
        with pytest.raises(Exception, match="answered 302"):
            make_provider(script).acquire(KEY)
        assert len(script.requests) == 1

    async def test_the_async_twin_sends_the_same_request(self) -> None:
        script = Script(httpx2.Response(200, json=OK))
        provider = make_provider(script, tenant_param="tenant")
        token = await provider.aacquire(KEY)
        await provider.aclose()
        assert token.access_token == OK["access_token"]
        assert form_of(script.requests[0])[-1] == ("tenant", KEY.instance_id)
