"""RFC 6749 5.2 error answers, each mapped to its error class, and nothing leaked."""

from __future__ import annotations

import httpx2
import pytest

from tokenbroker import (
    InvalidCredentials,
    ProviderError,
    RateLimited,
    TransientProviderError,
)

from .conftest import KEY, OK, SECRET, Script, make_provider, oauth_error


def raised_by(*answers: httpx2.Response, max_attempts: int = 1, **options: object) -> ProviderError:
    provider = make_provider(Script(*answers), max_attempts=max_attempts, **options)
    with pytest.raises(ProviderError) as raised:
        provider.acquire(KEY)
    return raised.value


class TestErrorCodes:
    @pytest.mark.parametrize("status", [400, 401])
    @pytest.mark.parametrize("code", ["invalid_client", "unauthorized_client"])
    def test_credential_codes_are_invalid_credentials(self, code: str, status: int) -> None:
        error = raised_by(oauth_error(status, code, "Client authentication failed"))
        assert type(error) is InvalidCredentials
        assert (error.status, error.code) == (status, code)
        assert error.wix_message == "Client authentication failed"
        assert f"answered {status} {code}: Client authentication failed" in str(error)

    @pytest.mark.parametrize(
        "code", ["invalid_scope", "invalid_request", "unsupported_grant_type", "invalid_grant"]
    )
    def test_configuration_codes_are_provider_errors_pointing_at_the_options(
        self, code: str
    ) -> None:
        error = raised_by(oauth_error(400, code, "nope"))
        assert type(error) is ProviderError
        assert error.code == code
        assert "check the oauth2 provider options" in str(error)

    def test_a_configuration_error_is_not_retried(self) -> None:
        script = Script(oauth_error(400, "invalid_scope"), httpx2.Response(200, json=OK))
        with pytest.raises(ProviderError):
            make_provider(script).acquire(KEY)
        assert len(script.requests) == 1

    @pytest.mark.parametrize("status", [401, 403])
    def test_401_and_403_without_a_code_are_invalid_credentials(self, status: int) -> None:
        error = raised_by(httpx2.Response(status, text="go away"))
        assert type(error) is InvalidCredentials
        assert error.code is None

    def test_an_unknown_code_on_a_4xx_is_a_provider_error(self) -> None:
        error = raised_by(oauth_error(400, "invalid_target", "no such resource"))
        assert type(error) is ProviderError
        assert "check the oauth2" not in str(error)

    @pytest.mark.parametrize("code", ["server_error", "temporarily_unavailable"])
    def test_server_codes_on_a_4xx_are_transient(self, code: str) -> None:
        assert type(raised_by(oauth_error(400, code))) is TransientProviderError


class TestStatuses:
    def test_429_is_rate_limited_with_its_retry_after(self) -> None:
        error = raised_by(oauth_error(429, "slow_down", **{"Retry-After": "120"}))
        assert isinstance(error, RateLimited)
        assert error.retry_after == 120

    def test_429_without_retry_after_has_no_wait(self) -> None:
        error = raised_by(httpx2.Response(429))
        assert isinstance(error, RateLimited)
        assert error.retry_after is None

    @pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
    def test_5xx_and_408_are_transient_even_with_a_credential_code(self, status: int) -> None:
        error = raised_by(oauth_error(status, "invalid_client"))
        assert type(error) is TransientProviderError
        assert error.status == status

    def test_a_connection_error_is_transient_with_no_status(self) -> None:
        error = raised_by(httpx2.ConnectError("refused"))
        assert type(error) is TransientProviderError
        assert error.status is None
        assert "no answer after 1 attempt(s): ConnectError" in str(error)


class TestWhatIsQuoted:
    def test_the_request_id_header_is_carried_and_ends_the_message(self) -> None:
        error = raised_by(oauth_error(401, "invalid_client", **{"x-request-id": "req-42"}))
        assert error.request_id == "req-42"
        assert str(error).endswith("(request id req-42)")

    def test_the_request_id_header_is_configurable(self) -> None:
        answer = oauth_error(401, "invalid_client", **{"x-amzn-requestid": "amz-1"})
        error = raised_by(answer, request_id_header="X-Amzn-RequestId")
        assert error.request_id == "amz-1"

    def test_a_request_id_holding_the_secret_is_dropped(self) -> None:
        error = raised_by(oauth_error(401, "invalid_client", **{"x-request-id": SECRET}))
        assert error.request_id is None
        assert SECRET not in str(error)

    def test_a_description_echoing_the_secret_is_scrubbed(self) -> None:
        error = raised_by(oauth_error(401, "invalid_client", f"bad secret {SECRET}"))
        assert SECRET not in str(error)
        assert SECRET not in (error.wix_message or "")
        assert "***" in str(error)

    def test_a_description_echoing_the_basic_header_is_scrubbed(self) -> None:
        provider = make_provider(Script(httpx2.Response(200, json=OK)))
        provider.acquire(KEY)
        header = provider.token_request(KEY).headers["Authorization"]
        error = raised_by(oauth_error(400, "invalid_request", f"got {header}"))
        assert header.removeprefix("Basic ") not in str(error)

    def test_an_html_page_is_named_not_quoted(self) -> None:
        page = httpx2.Response(
            502, text="<html>proxy page</html>", headers={"Content-Type": "text/html"}
        )
        error = raised_by(page)
        assert "answered 502 with an HTML page" in str(error)
        assert "proxy page" not in str(error)

    def test_plain_text_is_quoted_short_on_one_line(self) -> None:
        error = raised_by(httpx2.Response(400, text="line one\nline two " + "x" * 1000))
        message = str(error)
        assert "answered 400: line one line two" in message
        assert "\n" not in message
        assert len(message) < 500

    def test_json_that_is_not_an_error_object_is_named(self) -> None:
        error = raised_by(httpx2.Response(400, json={"message": "no"}))
        assert "JSON that is not an RFC 6749 error object" in str(error)

    def test_an_empty_body_is_named(self) -> None:
        assert "with an empty body" in str(raised_by(httpx2.Response(400)))

    def test_an_error_code_with_characters_rfc_6749_forbids_is_dropped(self) -> None:
        error = raised_by(httpx2.Response(400, json={"error": 'bad"code'}))
        assert error.code is None
