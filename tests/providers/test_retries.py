"""The retry budget, the circuit breaker and the credential breaker, as Wix's have them."""

from __future__ import annotations

import logging

import httpx2
import pytest

from tokenbroker import (
    CircuitState,
    InvalidCredentials,
    ManualClock,
    ProviderError,
    RateLimited,
    TransientProviderError,
)
from tokenbroker.broker.assemble import lease_times
from tokenbroker.core.retry import parse_retry_after
from tokenbroker.providers import OAuth2Provider

from .conftest import KEY, OK, SECRET, T0, TOKEN_URL, Script, config, make_provider, oauth_error

GOOD = httpx2.Response(200, json=OK)


class TestRetryBudget:
    def test_a_5xx_then_an_answer_is_served_within_the_budget(self) -> None:
        script = Script(
            oauth_error(503, "temporarily_unavailable"), oauth_error(500, "server_error"), GOOD
        )
        token = make_provider(script).acquire(KEY)
        assert token.access_token == OK["access_token"]
        assert len(script.requests) == 3

    def test_persistent_5xx_stops_at_max_attempts(self) -> None:
        script = Script(oauth_error(503, "server_error"))
        with pytest.raises(TransientProviderError) as raised:
            make_provider(script, max_attempts=3).acquire(KEY)
        assert len(script.requests) == 3
        assert raised.value.status == 503

    def test_timeouts_are_retried(self) -> None:
        script = Script(httpx2.ReadTimeout("slow"), GOOD)
        make_provider(script).acquire(KEY)
        assert len(script.requests) == 2

    def test_the_options_set_the_budget_and_the_lease_outlasts_its_worst_case(self) -> None:
        script = Script(oauth_error(503, "server_error"))
        options = {"token_url": TOKEN_URL, "client_secret": SECRET, "max_attempts": 2, "timeout": 1}
        provider = OAuth2Provider(config(options, transport=httpx2.MockTransport(script)))
        with pytest.raises(TransientProviderError):
            provider.acquire(KEY)
        assert len(script.requests) == 2
        # 2 attempts of at most 1 s, and one wait of at most 10 s (a Retry-After) between
        assert provider.max_fetch_seconds == 12
        lease, _ = lease_times(provider, None, None)
        assert lease > provider.max_fetch_seconds


class TestRateLimits:
    def test_a_short_retry_after_is_waited_out(self) -> None:
        script = Script(oauth_error(429, "slow_down", **{"Retry-After": "0"}), GOOD)
        make_provider(script).acquire(KEY)
        assert len(script.requests) == 2

    def test_a_long_retry_after_is_raised_at_once_with_the_wait(self) -> None:
        script = Script(oauth_error(429, "slow_down", **{"Retry-After": "3600"}), GOOD)
        with pytest.raises(RateLimited) as raised:
            make_provider(script).acquire(KEY)
        assert raised.value.retry_after == 3600
        assert len(script.requests) == 1

    def test_429_on_every_attempt_raises_after_the_budget(self) -> None:
        script = Script(httpx2.Response(429, headers={"Retry-After": "0"}))
        with pytest.raises(RateLimited):
            make_provider(script, max_attempts=3).acquire(KEY)
        assert len(script.requests) == 3

    def test_retry_after_as_an_http_date(self) -> None:
        assert parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", 1767225600.0) == 60
        assert parse_retry_after("soon", 0.0) is None
        assert parse_retry_after("inf", 0.0) is None


class TestCircuitBreaker:
    def test_five_transient_failures_open_it_and_nothing_is_sent_while_open(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        clock = ManualClock(start=T0)
        script = Script(oauth_error(503, "server_error"))
        provider = make_provider(script, max_attempts=1, clock=clock)
        with caplog.at_level(logging.WARNING, "tokenbroker.oauth2"):
            for _ in range(5):
                with pytest.raises(TransientProviderError):
                    provider.acquire(KEY)
        assert provider.breaker.state is CircuitState.OPEN
        assert "circuit opened after 5 consecutive failures" in caplog.text
        with pytest.raises(TransientProviderError, match="circuit open after 5 consecutive"):
            provider.acquire(KEY)
        assert len(script.requests) == 5
        # after the cooldown one trial goes through; its answer closes the circuit
        clock.advance(15)
        script.answers = [GOOD]
        assert provider.acquire(KEY).access_token == OK["access_token"]
        assert provider.breaker.state is CircuitState.CLOSED

    def test_a_4xx_shows_the_endpoint_is_up_and_resets_the_count(self) -> None:
        script = Script(
            *[oauth_error(503, "server_error")] * 4,
            oauth_error(400, "invalid_scope"),
            oauth_error(503, "server_error"),
        )
        provider = make_provider(script, max_attempts=1)
        for _ in range(6):
            with pytest.raises(ProviderError):  # 503s and one 400
                provider.acquire(KEY)
        assert provider.breaker.state is CircuitState.CLOSED
        assert provider.breaker.failures == 1


class TestCredentialRefusals:
    def test_five_refusals_in_a_row_stop_sending_for_a_minute(self) -> None:
        clock = ManualClock(start=T0)
        script = Script(oauth_error(401, "invalid_client"))
        provider = make_provider(script, clock=clock)
        for _ in range(5):
            with pytest.raises(InvalidCredentials):
                provider.acquire(KEY)
        assert len(script.requests) == 5  # a refusal is never retried
        with pytest.raises(
            InvalidCredentials, match="not sent: the client's credentials were refused 5 times"
        ):
            provider.acquire(KEY)
        assert len(script.requests) == 5
        clock.advance(60)
        script.answers = [GOOD]
        assert provider.acquire(KEY).access_token == OK["access_token"]
        assert len(script.requests) == 6

    def test_a_transient_failure_gives_no_verdict_on_the_credentials(self) -> None:
        script = Script(
            *[oauth_error(401, "invalid_client")] * 4,
            oauth_error(503, "server_error"),
            oauth_error(401, "invalid_client"),
        )
        provider = make_provider(script, max_attempts=1)
        for _ in range(6):
            with pytest.raises(ProviderError):  # refusals and one 503
                provider.acquire(KEY)
        assert provider.credentials.state is CircuitState.OPEN
        assert provider.credentials.failures == 5
