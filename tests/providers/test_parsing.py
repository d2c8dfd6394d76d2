"""Token answers parsed as strictly as Wix's; a missing expires_in is the default lifetime."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from tokenbroker import ManualClock, ProviderError
from tokenbroker.core.clock import to_datetime
from tokenbroker.providers.oauth2 import MAX_TOKEN_LENGTH

from .conftest import KEY, OK, T0, Script, make_provider


def parsed(body: Any, **options: Any) -> Any:
    answer = (
        httpx2.Response(200, json=body)
        if not isinstance(body, bytes)
        else httpx2.Response(200, content=body)
    )
    return make_provider(Script(answer), clock=ManualClock(start=T0), **options).acquire(KEY)


def refused(body: Any, why: str) -> ProviderError:
    script = Script(
        httpx2.Response(200, json=body)
        if not isinstance(body, bytes)
        else httpx2.Response(200, content=body)
    )
    provider = make_provider(script)
    with pytest.raises(ProviderError, match=why) as raised:
        provider.acquire(KEY)
    assert len(script.requests) == 1  # a 200 that cannot be parsed is not retried
    assert raised.value.status == 200
    return raised.value


class TestAGoodAnswer:
    def test_it_becomes_a_token_counted_from_before_the_request(self) -> None:
        token = parsed(OK)
        assert token.key == KEY
        assert token.access_token == OK["access_token"]
        assert token.obtained_at == to_datetime(T0)
        assert token.expires_at == to_datetime(T0 + 600)

    @pytest.mark.parametrize("given", ["bearer", "BEARER", "Bearer"])
    def test_bearer_in_any_case_is_sent_as_bearer(self, given: str) -> None:
        assert parsed({**OK, "token_type": given}).token_type == "Bearer"

    def test_another_token_type_is_kept_as_it_came(self) -> None:
        assert parsed({**OK, "token_type": "DPoP"}).token_type == "DPoP"

    def test_a_missing_token_type_is_bearer(self) -> None:
        body = {k: v for k, v in OK.items() if k != "token_type"}
        assert parsed(body).token_type == "Bearer"

    @pytest.mark.parametrize("value", ["3600", "3599.5", 3600, 3599.5])
    def test_expires_in_as_a_number_or_a_numeric_string(self, value: object) -> None:
        token = parsed({**OK, "expires_in": value})
        assert token.lifetime == float(value)  # type: ignore[arg-type]

    def test_extra_fields_are_ignored(self) -> None:
        token = parsed({**OK, "scope": "read", "refresh_token": "never-used", "ext": {"a": 1}})
        assert token.access_token == OK["access_token"]


class TestMissingExpiresIn:
    """Shopify/shopify-app-js#3400: a refresh answer without expires_in was stored as
    never expiring, and that shop's refresh stopped for good. Here it is neither
    "never" nor "already expired": it is ``default_lifetime``."""

    def test_missing_means_the_default_lifetime(self) -> None:
        token = parsed({"access_token": "tok", "token_type": "Bearer"})
        assert token.lifetime == 3600
        assert token.expires_at == to_datetime(T0 + 3600)

    def test_null_means_missing(self) -> None:
        assert parsed({**OK, "expires_in": None}).lifetime == 3600

    def test_the_default_is_configurable(self) -> None:
        token = parsed({"access_token": "tok"}, default_lifetime=90)
        assert token.lifetime == 90
        assert not token.expired(T0 + 89)
        assert token.expired(T0 + 90)


class TestRefusals:
    @pytest.mark.parametrize(
        ("body", "why"),
        [
            (b"<html>oops</html>", "not JSON"),
            (b"", "not JSON"),
            ([OK], "JSON list, not an object"),
            ("tok", "JSON str, not an object"),
            ({"token_type": "Bearer", "expires_in": 60}, "no access_token string"),
            ({**OK, "access_token": ""}, "no access_token string"),
            ({**OK, "access_token": 12345}, "no access_token string"),
            ({**OK, "access_token": "two words"}, "whitespace or control characters"),
            ({**OK, "access_token": "tok\n"}, "whitespace or control characters"),
            ({**OK, "access_token": "tök"}, "not printable ASCII"),
            (
                {**OK, "access_token": "x" * (MAX_TOKEN_LENGTH + 1)},
                "characters \\(at most 16384\\)",
            ),
            ({**OK, "token_type": "Bearer token"}, "token_type"),
            ({**OK, "token_type": ""}, "token_type"),
            ({**OK, "token_type": 1}, "token_type"),
            ({**OK, "token_type": "x" * 33}, "token_type"),
            ({**OK, "expires_in": True}, "expires_in of type bool"),
            ({**OK, "expires_in": -1}, "out of range"),
            ({**OK, "expires_in": 0}, "out of range"),
            ({**OK, "expires_in": 10**400}, "out of range"),
            ({**OK, "expires_in": 367 * 86400}, "out of range"),
            ({**OK, "expires_in": "-1"}, "not a number of seconds"),
            ({**OK, "expires_in": "1e3"}, "not a number of seconds"),
            ({**OK, "expires_in": "NaN"}, "not a number of seconds"),
            ({**OK, "expires_in": " 60"}, "not a number of seconds"),
            ({**OK, "expires_in": "0"}, "out of range"),
            ({**OK, "expires_in": [60]}, "expires_in of type list"),
        ],
    )
    def test_a_malformed_answer_is_a_provider_error(self, body: Any, why: str) -> None:
        refused(body, why)

    def test_non_finite_numbers_are_refused(self) -> None:
        for raw in (
            b'{"access_token": "t", "expires_in": NaN}',
            b'{"access_token": "t", "expires_in": Infinity}',
        ):
            refused(raw, "out of range")

    def test_the_token_is_never_quoted(self) -> None:
        error = refused({**OK, "access_token": "secret-token with-space"}, "whitespace")
        assert "secret-token" not in str(error)
