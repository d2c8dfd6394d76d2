"""Every row of the error classification table, against httpx2.MockTransport.

Wix's standard shape, RFC 6749's OAuth shape, plain text, HTML, empty bodies and
JSON that is no error object, on each status class; the request id each error
carries (attribute, message, log line); and that no secret or token is quoted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any

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
from tokenbroker.wix import RetryBudget, WixProvider
from tokenbroker.wix.errors import classify

SECRET = "s3cr3t-value-never-shown"
TOKEN = "OAUTH2.instance-token-never-shown"
KEY = TokenKey("wix", "app-1", "inst-1")
NOT_INSTALLED = "App is not installed on this instance"
OK = {"access_token": "OAUTH2.abc", "token_type": "Bearer", "expires_in": 14400}


def wix(
    status: int,
    message: str | None = None,
    code: str | None = None,
    description: str | None = None,
    **headers: str,
) -> httpx2.Response:
    """Wix's standard shape, as "About Errors" documents it."""
    body: dict[str, Any] = {}
    if message is not None:
        body["message"] = message
    if code is not None or description is not None:
        error: dict[str, Any] = {"code": code, "description": description, "data": {}}
        body["details"] = {"applicationError": {k: v for k, v in error.items() if v is not None}}
    return httpx2.Response(status, json=body, headers=headers)


def ietf(
    status: int, error: str, description: str | None = None, **headers: str
) -> httpx2.Response:
    """RFC 6749 section 5.2's shape."""
    body = {"error": error} | ({"error_description": description} if description else {})
    return httpx2.Response(status, json=body, headers=headers)


def text(
    status: int, body: str, content_type: str = "text/plain", **headers: str
) -> httpx2.Response:
    return httpx2.Response(status, text=body, headers={"Content-Type": content_type, **headers})


def answering(
    *answers: httpx2.Response | Exception,
    max_attempts: int = 1,
    not_installed: tuple[str, ...] = (),
    sent: list[httpx2.Request] | None = None,
) -> WixProvider:
    """A provider whose requests get ``answers`` in turn (the last one repeated)."""
    queue = list(answers)

    def handler(request: httpx2.Request) -> httpx2.Response:
        if sent is not None:
            sent.append(request)
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    config = ProviderConfig(
        app_id="app-1",
        app_secret=Secret(SECRET),
        api_url="https://wix.example",
        clock=ManualClock(start=1_800_000_000.0),
        transport=httpx2.MockTransport(handler),
        not_installed=not_installed,
    )
    return WixProvider(config, retry=RetryBudget(max_attempts=max_attempts, backoff_base=0.0))


def refused(answer: httpx2.Response, **options: Any) -> ProviderError:
    """The error Create Access Token raises for ``answer``."""
    provider = answering(answer, **options)
    with pytest.raises(ProviderError) as info:
        provider.acquire(KEY)
    provider.close()
    return info.value


# (answer, the error it must be, why: the rule's source tag)
TABLE = [
    # Wix's standard shape
    (wix(400, NOT_INSTALLED, "APP_NOT_INSTALLED"), InstanceNotInstalled, "code, assumed"),
    (wix(404, "Something", "INSTANCE_NOT_FOUND"), InstanceNotInstalled, "code, assumed"),
    (wix(409, "Gone", "APP_REMOVED"), InstanceNotInstalled, "code on any 4xx, assumed"),
    (wix(403, "The app is not installed", "WHATEVER"), InstanceNotInstalled, "text, assumed"),
    (wix(401, "Unauthorized", "UNAUTHENTICATED", NOT_INSTALLED), InstanceNotInstalled, "text"),
    (wix(404, "Not Found", "NOT_FOUND", "Instance not found"), InstanceNotInstalled, "text"),
    (wix(401, "Invalid client credentials", "INVALID_CLIENT"), InvalidCredentials, "documented"),
    (wix(403, "Permission denied", "PERMISSION_DENIED"), InvalidCredentials, "documented"),
    (wix(401, "invalid client"), InvalidCredentials, "message only, documented 401"),
    (wix(400, "bad client", "INVALID_CLIENT"), InvalidCredentials, "the code, assumed"),
    (wix(422, "bad instance", "BAD"), ProviderError, "other 4xx, documented"),
    (wix(404, "Not Found", "NOT_FOUND"), ProviderError, "no sign of not installed"),
    (wix(422, NOT_INSTALLED), ProviderError, "text counts on 400/401/403/404 only"),
    (wix(429, "Too Many Requests", "APP_NOT_INSTALLED"), RateLimited, "429 asks for a retry"),
    (wix(408, "Request Timeout", "APP_NOT_INSTALLED"), TransientProviderError, "408 too"),
    (wix(503, "Service Unavailable", "APP_NOT_INSTALLED"), TransientProviderError, "5xx"),
    (wix(500, NOT_INSTALLED), TransientProviderError, "5xx, documented"),
    (wix(429, "Too Many Requests", "RESOURCE_EXHAUSTED"), RateLimited, "documented"),
    # RFC 6749 section 5.2's shape
    (ietf(400, "invalid_grant", NOT_INSTALLED), InstanceNotInstalled, "text, assumed"),
    (ietf(401, "invalid_grant", NOT_INSTALLED), InstanceNotInstalled, "text, assumed"),
    (ietf(403, "invalid_grant", NOT_INSTALLED), InstanceNotInstalled, "text, assumed"),
    (ietf(404, "invalid_grant", NOT_INSTALLED), InstanceNotInstalled, "text, assumed"),
    (ietf(401, "invalid_client", "Client authentication failed"), InvalidCredentials, "RFC"),
    (ietf(400, "invalid_client"), InvalidCredentials, "RFC: 400 or 401"),
    (ietf(401, "invalid_client", NOT_INSTALLED), InvalidCredentials, "invalid_client wins"),
    (ietf(400, "invalid_grant"), ProviderError, "no sign of not installed"),
    (ietf(401, "invalid_grant"), InvalidCredentials, "a bare 401"),
    (ietf(400, "invalid_request", "instance_id is missing"), ProviderError, "RFC"),
    (ietf(400, "unsupported_grant_type"), ProviderError, "RFC"),
    (ietf(429, "slow_down"), RateLimited, "documented 429"),
    (ietf(503, "invalid_client"), TransientProviderError, "no code is trusted on a 5xx"),
    (ietf(429, "invalid_client"), RateLimited, "nor on a 429"),
    (ietf(502, "server_error"), TransientProviderError, "documented 5xx"),
    # plain text
    (text(404, "App not installed"), InstanceNotInstalled, "text, assumed"),
    (text(400, "The app is NOT\n  INSTALLED here"), InstanceNotInstalled, "any case, spacing"),
    (text(401, "Unauthorized"), InvalidCredentials, "documented 401"),
    (text(418, "I'm a teapot"), ProviderError, "other 4xx"),
    (text(502, "Bad Gateway"), TransientProviderError, "5xx"),
    (httpx2.Response(400, json=NOT_INSTALLED), InstanceNotInstalled, "a bare JSON string"),
    # empty bodies, HTML pages and JSON that is no error object
    (httpx2.Response(401), InvalidCredentials, "documented 401"),
    (httpx2.Response(403, text="  "), InvalidCredentials, "documented 403"),
    (httpx2.Response(404), ProviderError, "nothing says not installed"),
    (httpx2.Response(503), TransientProviderError, "5xx"),
    (text(403, "<html>App not installed</html>", "text/html"), InvalidCredentials, "not Wix's"),
    (text(404, "<!doctype html><p>not installed"), ProviderError, "HTML by its look"),
    (text(502, "<html><body>Bad Gateway</body></html>", "text/html"), TransientProviderError, ""),
    (httpx2.Response(400, json=["APP_NOT_INSTALLED"]), ProviderError, "a JSON list"),
    (httpx2.Response(401, json={"errors": [NOT_INSTALLED]}), InvalidCredentials, "unknown"),
    (httpx2.Response(400, content=b"\xc3\x28 not installed"), InstanceNotInstalled, "bytes"),
]


class TestTheTable:
    @pytest.mark.parametrize(
        ("answer", "expected", "why"),
        TABLE,
        ids=[f"{i:02}-{r[0].status_code}-{r[1].__name__}" for i, r in enumerate(TABLE)],
    )
    def test_each_answer_is_its_error(
        self, answer: httpx2.Response, expected: type[ProviderError], why: str
    ) -> None:
        error = refused(answer)
        assert type(error) is expected, why
        assert error.status == answer.status_code
        assert str(error).startswith(f"Create Access Token: Wix answered {answer.status_code}")

    def test_the_classes_are_what_a_caller_catches(self) -> None:
        # InstanceNotInstalled is not an InvalidCredentials: the bulk refresher stops
        # at the first InvalidCredentials, and must not stop for one removed site.
        assert not issubclass(InstanceNotInstalled, InvalidCredentials)
        assert not issubclass(InvalidCredentials, InstanceNotInstalled)


class TestWhatTheErrorCarries:
    def test_wix_shape_code_message_and_description(self) -> None:
        error = refused(wix(400, NOT_INSTALLED, "APP_NOT_INSTALLED", "no such instance"))
        assert error.code == "APP_NOT_INSTALLED"
        assert error.wix_message == NOT_INSTALLED
        assert str(error) == (
            "Create Access Token: Wix answered 400 APP_NOT_INSTALLED: "
            f"{NOT_INSTALLED} (no such instance)"
        )

    def test_ietf_shape_error_and_description(self) -> None:
        error = refused(ietf(400, "invalid_grant", NOT_INSTALLED))
        assert (error.code, error.wix_message) == ("invalid_grant", NOT_INSTALLED)
        assert str(error) == f"Create Access Token: Wix answered 400 invalid_grant: {NOT_INSTALLED}"

    def test_validation_errors_name_their_fields(self) -> None:
        body = {
            "message": "Bad Request",
            "details": {
                "validationError": {
                    "fieldViolations": [
                        {"field": "instance_id", "description": "must be a GUID"},
                        {"field": "grant_type", "description": "unknown", "violatedRule": "X"},
                    ]
                }
            },
        }
        error = refused(httpx2.Response(400, json=body))
        assert type(error) is ProviderError
        assert str(error).endswith("Bad Request; instance_id: must be a GUID; grant_type: unknown")

    def test_a_not_installed_phrase_in_a_field_violation_counts(self) -> None:
        body = {
            "message": "Bad Request",
            "details": {
                "validationError": {
                    "fieldViolations": [{"field": "instance_id", "description": NOT_INSTALLED}]
                }
            },
        }
        assert type(refused(httpx2.Response(400, json=body))) is InstanceNotInstalled

    def test_plain_text_is_quoted_on_one_line_and_cut_short(self) -> None:
        error = refused(text(400, "line one\r\n\tline two " + "x" * 1000))
        assert error.wix_message is not None
        assert error.wix_message.startswith("line one line two x")
        assert len(error.wix_message) <= 300
        assert "\n" not in str(error)

    @pytest.mark.parametrize(
        ("answer", "said"),
        [
            (text(502, "<html><p>secret page</p></html>", "text/html"), "with an HTML page"),
            (httpx2.Response(503), "with an empty body"),
            (httpx2.Response(400, json=[1, 2]), "with JSON that is not an error object"),
        ],
    )
    def test_bodies_that_are_not_wix_words_are_named_not_quoted(
        self, answer: httpx2.Response, said: str
    ) -> None:
        error = refused(answer)
        assert str(error) == f"Create Access Token: Wix answered {answer.status_code} {said}"
        assert error.wix_message is None


class TestRequestIds:
    @pytest.mark.parametrize(
        ("answer", "expected"),
        [
            (wix(400, NOT_INSTALLED, "APP_NOT_INSTALLED"), InstanceNotInstalled),
            (ietf(401, "invalid_client"), InvalidCredentials),
            (wix(429, "slow down", **{"Retry-After": "120"}), RateLimited),
            (wix(503, "busy"), TransientProviderError),
            (text(422, "nope"), ProviderError),
            (httpx2.Response(200, json={"expires_in": 60}), ProviderError),  # garbage 200
        ],
    )
    def test_every_error_with_an_answer_carries_its_request_id(
        self, answer: httpx2.Response, expected: type[ProviderError]
    ) -> None:
        answer.headers["x-wix-request-id"] = "req-7f3a"
        error = refused(answer)
        assert type(error) is expected
        assert error.request_id == "req-7f3a"
        assert str(error).endswith(" (request id req-7f3a)")

    def test_the_header_name_is_case_insensitive(self) -> None:
        error = refused(wix(403, "denied", **{"X-Wix-Request-Id": "abc-123"}))
        assert error.request_id == "abc-123"

    def test_without_the_header_there_is_none(self) -> None:
        error = refused(wix(403, "denied"))
        assert error.request_id is None
        assert "request id" not in str(error)

    @pytest.mark.parametrize("value", ["has space", "x" * 129, "", "tab\there"])
    def test_a_request_id_that_is_not_a_short_token_is_dropped(self, value: str) -> None:
        answer = wix(403, "denied")
        answer.headers["x-wix-request-id"] = value
        assert refused(answer).request_id is None

    def test_a_request_id_holding_the_secret_is_dropped(self) -> None:
        error = refused(wix(403, "denied", **{"x-wix-request-id": f"id-{SECRET}"}))
        assert error.request_id is None
        assert SECRET not in str(error)

    def test_a_retried_failure_raises_with_the_last_answers_id(self) -> None:
        provider = answering(
            wix(503, "busy", **{"x-wix-request-id": "first"}),
            wix(503, "busy", **{"x-wix-request-id": "second"}),
            max_attempts=2,
        )
        with pytest.raises(TransientProviderError) as info:
            provider.acquire(KEY)
        assert info.value.request_id == "second"

    def test_no_answer_means_no_request_id(self) -> None:
        provider = answering(httpx2.ConnectError("refused"))
        with pytest.raises(TransientProviderError) as info:
            provider.acquire(KEY)
        assert info.value.request_id is None
        assert info.value.status is None

    def test_the_circuit_error_quotes_the_id_once(self) -> None:
        provider = answering(wix(503, "busy", **{"x-wix-request-id": "r-5"}), max_attempts=5)
        with pytest.raises(TransientProviderError, match="circuit open") as info:
            provider.acquire(KEY)
        assert info.value.request_id == "r-5"
        assert str(info.value).count("r-5") == 1
        with pytest.raises(TransientProviderError, match="circuit open") as refused_at_once:
            provider.acquire(KEY)  # nothing sent: no answer, no id
        assert refused_at_once.value.request_id is None

    def test_a_refusal_by_the_credential_breaker_has_no_id(self) -> None:
        provider = answering(ietf(401, "invalid_client", **{"x-wix-request-id": "r-1"}))
        for _ in range(5):
            with pytest.raises(InvalidCredentials):
                provider.acquire(KEY)
        with pytest.raises(InvalidCredentials, match="not sent") as info:
            provider.acquire(KEY)
        assert info.value.request_id is None

    def test_a_get_app_instance_answer_that_is_no_object_carries_its_id(self) -> None:
        provider = answering(httpx2.Response(200, json=[1], headers={"x-wix-request-id": "g-1"}))
        with pytest.raises(ProviderError, match="JSON list, not an object") as info:
            provider.get_app_instance(RawToken())
        assert info.value.request_id == "g-1"
        assert info.value.status == 200


class TestTheLogLines:
    def test_a_retried_failure_is_logged_with_its_request_id(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, "tokenbroker.wix")
        provider = answering(
            wix(503, "busy", **{"x-wix-request-id": "retry-1"}),
            httpx2.Response(200, json=OK),
            max_attempts=2,
        )
        provider.acquire(KEY)
        (line,) = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
        assert "Wix answered 503" in line
        assert "(request id retry-1)" in line

    def test_the_circuit_opening_is_logged_with_the_last_request_id(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, "tokenbroker.wix")
        provider = answering(wix(500, "boom", **{"x-wix-request-id": "open-5"}), max_attempts=5)
        with pytest.raises(TransientProviderError):
            provider.acquire(KEY)
        (line,) = [r.getMessage() for r in caplog.records if "circuit opened" in r.getMessage()]
        assert "(request id open-5)" in line

    def test_the_credential_breaker_opening_is_logged_with_the_last_request_id(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, "tokenbroker.wix")
        provider = answering(ietf(401, "invalid_client", **{"x-wix-request-id": "cred-5"}))
        for _ in range(5):
            with pytest.raises(InvalidCredentials):
                provider.acquire(KEY)
        (line,) = [r.getMessage() for r in caplog.records if "times in a row" in r.getMessage()]
        assert "(request id cred-5)" in line


class RawToken(httpx2.Auth):
    """Sends a fixed instance token, raw, as Wix documents."""

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["Authorization"] = TOKEN
        yield request


class TestNothingSecretIsQuoted:
    @pytest.mark.parametrize(
        "answer",
        [
            wix(400, f"client_secret {SECRET} is malformed", "BAD"),
            wix(400, "bad", "BAD", f"because {SECRET}"),
            ietf(401, "invalid_client", f"secret={SECRET}"),
            ietf(400, SECRET),
            text(400, f"no: {SECRET}"),
            text(400, " " * 400 + SECRET),  # whitespace folded only after the scrub
            httpx2.Response(
                400,
                json={
                    "message": "m",
                    "details": {
                        "validationError": {
                            "fieldViolations": [{"field": SECRET, "description": SECRET}]
                        }
                    },
                },
            ),
        ],
    )
    def test_the_app_secret_echoed_anywhere_is_scrubbed(self, answer: httpx2.Response) -> None:
        answer.headers["x-wix-request-id"] = "r-9"
        error = refused(answer)
        assert SECRET not in str(error)
        assert SECRET not in repr(error.args)
        assert SECRET not in (error.wix_message or "")
        assert SECRET not in (error.code or "")
        assert error.request_id == "r-9"

    @pytest.mark.parametrize(
        "answer",
        [
            wix(401, f"token {TOKEN} expired"),
            ietf(401, "invalid_token", f"Bearer {TOKEN}"),
            text(403, f"refused {TOKEN}"),
        ],
    )
    def test_the_instance_token_echoed_by_an_app_api_is_scrubbed(
        self, answer: httpx2.Response
    ) -> None:
        provider = answering(answer)
        with pytest.raises(ProviderError) as info:
            provider.get_app_instance(RawToken())
        assert TOKEN not in str(info.value)
        assert TOKEN not in (info.value.wix_message or "")

    def test_classify_alone_scrubs_with_what_it_is_given(self) -> None:
        scrub: Callable[[str], str] = lambda s: s.replace("hidden", "***")  # noqa: E731
        error = classify(wix(400, "a hidden word"), "Call", scrub)
        assert str(error) == "Call: Wix answered 400: a *** word"
