"""The Wix provider against httpx2.MockTransport: every class of answer."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx2
import pytest

from tokenbroker import (
    InstanceNotInstalled,
    InvalidCredentials,
    ManualClock,
    ProviderConfig,
    ProviderError,
    RateLimited,
    Secret,
    TokenKey,
    TransientProviderError,
)
from tokenbroker.core.clock import to_datetime
from tokenbroker.wix import RetryBudget, WixProvider, parse_retry_after

SECRET = "s3cr3t-value-never-shown"
KEY = TokenKey("wix", "app-1", "inst-1")
T0 = 1_800_000_000.0
OK = {"access_token": "OAUTH2.abc", "token_type": "Bearer", "expires_in": 14400}

Handler = Callable[[httpx2.Request], httpx2.Response]


class Script:
    """Answers requests from a list, in order; records what it was sent."""

    def __init__(self, *answers: httpx2.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_provider(script: Script, *, max_attempts: int = 3) -> WixProvider:
    config = ProviderConfig(
        app_id="app-1",
        app_secret=Secret(SECRET),
        api_url="https://wix.example",
        clock=ManualClock(start=T0),
        transport=httpx2.MockTransport(script),
    )
    return WixProvider(config, retry=RetryBudget(max_attempts=max_attempts, backoff_base=0.0))


def wix_error(status: int, message: str, code: str = "X", **headers: str) -> httpx2.Response:
    body = {"message": message, "details": {"applicationError": {"code": code}}}
    return httpx2.Response(status, json=body, headers=headers)


class TestRequestShape:
    def test_create_access_token_posts_snake_case_json(self) -> None:
        script = Script(httpx2.Response(200, json=OK))
        make_provider(script).acquire(KEY)
        (request,) = script.requests
        assert request.method == "POST"
        assert str(request.url) == "https://wix.example/oauth2/token"
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == {
            "grant_type": "client_credentials",
            "client_id": "app-1",
            "client_secret": SECRET,
            "instance_id": "inst-1",
        }

    def test_a_good_answer_becomes_a_token_expiring_after_expires_in(self) -> None:
        token = make_provider(Script(httpx2.Response(200, json=OK))).acquire(KEY)
        assert token.access_token == "OAUTH2.abc"
        assert token.token_type == "Bearer"
        assert token.key == KEY
        assert token.obtained_at == to_datetime(T0)
        assert token.expires_at == to_datetime(T0 + 14400)

    def test_a_missing_token_type_defaults_to_bearer(self) -> None:
        body = {"access_token": "t", "expires_in": 60}
        token = make_provider(Script(httpx2.Response(200, json=body))).acquire(KEY)
        assert token.token_type == "Bearer"

    async def test_the_async_twin_sends_the_same_request(self) -> None:
        script = Script(httpx2.Response(200, json=OK))
        provider = make_provider(script)
        token = await provider.aacquire(KEY)
        await provider.aclose()
        assert token.access_token == "OAUTH2.abc"
        assert json.loads(script.requests[0].content)["instance_id"] == "inst-1"


class TestGarbageAnswers:
    @pytest.mark.parametrize(
        ("answer", "why"),
        [
            (httpx2.Response(200, text="<html>oops</html>"), "not JSON"),
            (httpx2.Response(200, json=["a"]), "not an object"),
            (httpx2.Response(200, json={"expires_in": 60}), "no access_token"),
            (httpx2.Response(200, json={"access_token": "", "expires_in": 60}), "no access_token"),
            (httpx2.Response(200, json={"access_token": 5, "expires_in": 60}), "no access_token"),
            (httpx2.Response(200, json={"access_token": "a b", "expires_in": 60}), "whitespace"),
            (httpx2.Response(200, json={"access_token": "t"}), "no numeric expires_in"),
            (httpx2.Response(200, json={"access_token": "t", "expires_in": "60"}), "numeric"),
            (httpx2.Response(200, json={"access_token": "t", "expires_in": True}), "numeric"),
            (httpx2.Response(200, json={"access_token": "t", "expires_in": 0}), "out of range"),
            (httpx2.Response(200, json={"access_token": "t", "expires_in": -5}), "out of range"),
            # too long to be a lifetime: once a ValueError (year out of range) or an
            # OverflowError escaping the error tree, on every store
            (
                httpx2.Response(200, json={"access_token": "t", "expires_in": 10**12}),
                "out of range",
            ),
            (httpx2.Response(200, json={"access_token": "t", "expires_in": 1e308}), "out of range"),
            (httpx2.Response(200, text='{"access_token": "t", "expires_in": NaN}'), "out of range"),
            (
                httpx2.Response(200, text='{"access_token": "t", "expires_in": Infinity}'),
                "out of range",
            ),
            # what a store would refuse never reaches one
            (
                httpx2.Response(200, json={"access_token": "t" * 16385, "expires_in": 60}),
                "16385 characters",
            ),
            (
                httpx2.Response(
                    200, json={"access_token": "t", "expires_in": 60, "token_type": "B" * 40}
                ),
                "token_type",
            ),
            (
                httpx2.Response(
                    200, json={"access_token": "t", "expires_in": 60, "token_type": "Bear er"}
                ),
                "token_type",
            ),
            (
                httpx2.Response(200, json={"access_token": "t", "expires_in": 9, "token_type": 1}),
                "token_type",
            ),
        ],
    )
    def test_each_malformed_answer_is_a_provider_error(
        self, answer: httpx2.Response, why: str
    ) -> None:
        script = Script(answer)
        with pytest.raises(ProviderError, match=why) as info:
            make_provider(script).acquire(KEY)
        assert type(info.value) is ProviderError
        assert len(script.requests) == 1  # garbage is not retried


class TestRefusals:
    @pytest.mark.parametrize("status", [401, 403])
    def test_refused_credentials_are_never_retried(self, status: int) -> None:
        script = Script(wix_error(status, "Invalid client credentials", "INVALID_CLIENT"))
        with pytest.raises(InvalidCredentials, match="Invalid client credentials") as info:
            make_provider(script).acquire(KEY)
        assert info.value.status == status
        assert len(script.requests) == 1

    @pytest.mark.parametrize(
        "answer",
        [
            wix_error(400, "App is not installed on this instance", "APP_NOT_INSTALLED"),
            wix_error(404, "Something", "INSTANCE_NOT_FOUND"),
            wix_error(403, "The app is not installed", "WHATEVER"),
        ],
    )
    def test_wix_saying_not_installed_is_instance_not_installed(
        self, answer: httpx2.Response
    ) -> None:
        with pytest.raises(InstanceNotInstalled):
            make_provider(Script(answer)).acquire(KEY)

    def test_other_client_errors_carry_status_and_wix_message(self) -> None:
        with pytest.raises(ProviderError) as info:
            make_provider(Script(wix_error(422, "bad instance", "BAD"))).acquire(KEY)
        assert info.value.status == 422
        assert info.value.wix_message == "bad instance"
        assert info.value.code == "BAD"
        assert type(info.value) is ProviderError

    def test_a_secret_echoed_by_wix_is_scrubbed_from_the_error(self) -> None:
        answer = wix_error(400, f"client_secret {SECRET} is malformed")
        with pytest.raises(ProviderError) as info:
            make_provider(Script(answer)).acquire(KEY)
        assert SECRET not in str(info.value)
        assert SECRET not in (info.value.wix_message or "")


class TestRetries:
    def test_server_errors_are_retried_then_succeed(self) -> None:
        script = Script(
            wix_error(500, "boom"), wix_error(503, "busy"), httpx2.Response(200, json=OK)
        )
        assert make_provider(script).acquire(KEY).access_token == "OAUTH2.abc"
        assert len(script.requests) == 3

    def test_server_errors_past_the_budget_are_transient_errors(self) -> None:
        script = Script(wix_error(502, "bad gateway"))
        with pytest.raises(TransientProviderError, match="502"):
            make_provider(script).acquire(KEY)
        assert len(script.requests) == 3

    @pytest.mark.parametrize(
        "failure",
        [
            httpx2.ReadTimeout("slow"),
            httpx2.ConnectError("refused"),
            httpx2.RemoteProtocolError("x"),
        ],
    )
    def test_timeouts_and_connection_errors_are_retried_then_transient(
        self, failure: Exception
    ) -> None:
        script = Script(failure)
        with pytest.raises(TransientProviderError, match="no answer"):
            make_provider(script).acquire(KEY)
        assert len(script.requests) == 3

    def test_a_timeout_followed_by_an_answer_succeeds(self) -> None:
        script = Script(httpx2.ReadTimeout("slow"), httpx2.Response(200, json=OK))
        assert make_provider(script).acquire(KEY).access_token == "OAUTH2.abc"

    def test_a_short_retry_after_is_honoured_and_retried(self) -> None:
        script = Script(
            wix_error(429, "slow down", **{"Retry-After": "0"}), httpx2.Response(200, json=OK)
        )
        assert make_provider(script).acquire(KEY).access_token == "OAUTH2.abc"
        assert len(script.requests) == 2

    def test_a_long_retry_after_raises_rate_limited_at_once_with_the_wait(self) -> None:
        script = Script(wix_error(429, "slow down", **{"Retry-After": "120"}))
        with pytest.raises(RateLimited) as info:
            make_provider(script).acquire(KEY)
        assert info.value.retry_after == 120
        assert len(script.requests) == 1

    def test_rate_limited_past_the_budget_raises_rate_limited(self) -> None:
        script = Script(wix_error(429, "slow down", **{"Retry-After": "0"}))
        with pytest.raises(RateLimited):
            make_provider(script).acquire(KEY)
        assert len(script.requests) == 3

    async def test_async_retries_follow_the_same_budget(self) -> None:
        script = Script(wix_error(500, "boom"), httpx2.Response(200, json=OK))
        provider = make_provider(script)
        assert (await provider.aacquire(KEY)).access_token == "OAUTH2.abc"
        await provider.aclose()
        assert len(script.requests) == 2


class TestRetryAfterParsing:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            ("5", 5.0),
            ("0.5", 0.5),
            ("-3", 0.0),
            ("Wed, 15 Jan 2027 08:00:10 GMT", None),
            ("soon", None),
            (None, None),
            ("nan", None),
        ],
    )
    def test_seconds_and_dates(self, value: str | None, seconds: float | None) -> None:
        now = to_datetime(T0).timestamp()
        got = parse_retry_after(value, now)
        if value and value.startswith("Wed"):
            assert got is not None
            assert got > 0
        else:
            assert got == seconds


class TestNoSecretInErrors:
    @pytest.mark.parametrize(
        "answer",
        [
            wix_error(401, "no"),
            wix_error(500, "no"),
            wix_error(429, "no", **{"Retry-After": "999"}),
            httpx2.Response(200, text="garbage"),
            httpx2.ConnectError("refused"),
        ],
    )
    def test_no_error_message_contains_the_secret(
        self, answer: httpx2.Response | Exception
    ) -> None:
        with pytest.raises(ProviderError) as info:
            make_provider(Script(answer)).acquire(KEY)
        assert SECRET not in str(info.value)
        assert SECRET not in repr(info.value)
        assert SECRET not in repr(make_provider(Script(answer)))


class TestScrubbingWixMessages:
    def test_a_short_secret_is_hidden_as_a_whole_value_but_not_inside_words(self) -> None:
        config = ProviderConfig(
            app_id="app-1",
            app_secret=Secret("http"),
            api_url="https://wix.example",
            clock=ManualClock(start=T0),
            transport=httpx2.MockTransport(
                Script(wix_error(400, "secret http refused, see https://dev.wix.com"))
            ),
        )
        provider = WixProvider(config, retry=RetryBudget(max_attempts=1, backoff_base=0.0))
        with pytest.raises(ProviderError) as info:
            provider.acquire(KEY)
        assert str(info.value).endswith("secret *** refused, see https://dev.wix.com")
