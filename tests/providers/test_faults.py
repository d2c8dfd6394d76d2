"""The token endpoint misbehaving (5xx, hangs, garbage, 429s), each survived by a
TokenBroker using the oauth2 provider; the same faults ``tests/faults`` puts to Wix.

Every test checks the invariants: no expired token handed out, nothing the server
did not issue stored, and the requests within the retry budget of 3 per fetch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from tokenbroker import (
    ProviderError,
    RateLimited,
    Token,
    TokenBroker,
    TransientProviderError,
)
from tokenbroker.core.clock import to_timestamp
from tokenbroker.testing.oauth2_server import OAuth2Server

from .conftest import APP_ID, server_options

INSTANCE = "tenant-1"
BUDGET = 3


class Guard:
    """Hands out tokens through ``broker`` and checks the promises around each fault."""

    def __init__(self, broker: TokenBroker, server: OAuth2Server) -> None:
        self.broker = broker
        self.server = server

    def token(self, instance_id: str = INSTANCE) -> Token:
        token = self.broker.token(instance_id)
        assert to_timestamp(token.expires_at) > self.broker.clock.time(), "expired token"
        assert token.access_token in self.server.issued_tokens_for(), "a foreign token"
        return token

    def stored(self, instance_id: str = INSTANCE) -> Token | None:
        return self.broker.store.get_token(self.broker.key(instance_id))

    def assert_kept(self) -> None:
        stored = self.stored()
        assert stored is None or stored.access_token in self.server.issued_tokens_for()

    def assert_recovers(self) -> None:
        """Once the fault is gone the next call gets a token with one request, and
        stores it (a fault that counts against the installation is forgiven first,
        rather than its back-off waited out)."""
        self.broker.installations.reset_health(INSTANCE)
        before = self.server.token_requests
        token = self.token()
        assert self.server.token_requests - before == 1
        assert self.stored() == token


@contextlib.contextmanager
def guarded(server: OAuth2Server, store: str, **options: Any) -> Iterator[Guard]:
    with TokenBroker(
        app_id=APP_ID,
        store=store,
        provider="oauth2",
        provider_options=server_options(server, **options),
    ) as broker:
        yield Guard(broker, server)


@pytest.fixture
def guard(oauth2_server: OAuth2Server, sqlite_url: str) -> Iterator[Guard]:
    with guarded(oauth2_server, sqlite_url) as guard:
        yield guard


@pytest.fixture
def hasty_guard(oauth2_server: OAuth2Server, sqlite_url: str) -> Iterator[Guard]:
    """The same, with a 0.3 s timeout the server's hangs outlast."""
    with guarded(oauth2_server, sqlite_url, timeout=0.3) as guard:
        yield guard


class TestServerErrors:
    def test_transient_5xx_is_retried_and_the_token_served(self, guard: Guard) -> None:
        guard.server.fail_next(503, times=2)
        token = guard.token()
        assert guard.server.token_requests == BUDGET
        assert guard.stored() == token

    def test_a_proxy_error_page_is_retried_like_any_5xx(self, guard: Guard) -> None:
        guard.server.garbage_next(status=502, body=b"<html>502 Bad Gateway</html>")
        guard.token()
        assert guard.server.token_requests == 2

    def test_persistent_5xx_raises_transient_error_after_the_budget(self, guard: Guard) -> None:
        guard.server.fail_next(500, times=BUDGET)
        with pytest.raises(TransientProviderError) as raised:
            guard.token()
        assert raised.value.status == 500
        assert raised.value.code == "server_error"
        assert guard.server.token_requests == BUDGET
        assert guard.stored() is None
        guard.assert_recovers()


class TestTimeouts:
    def test_a_hung_request_times_out_and_the_retry_is_served(self, hasty_guard: Guard) -> None:
        hasty_guard.server.hang_next(2.0)
        token = hasty_guard.token()
        assert hasty_guard.server.token_requests == 2
        assert hasty_guard.stored() == token


GARBAGE: dict[str, dict[str, Any]] = {
    "html": {"garbage": True},
    "json-array": {"body": "[1, 2, 3]"},
    "no-access-token": {"body": {"token_type": "Bearer", "expires_in": 60}},
    "token-with-spaces": {"body": {"access_token": "two words", "expires_in": 60}},
    "negative-lifetime": {"body": {"access_token": "tok", "expires_in": -1}},
    "lifetime-as-words": {"body": {"access_token": "tok", "expires_in": "an hour"}},
    "lifetime-as-bool": {"body": {"access_token": "tok", "expires_in": True}},
    "empty-body": {"body": ""},
}


class TestGarbage:
    @pytest.mark.parametrize("kind", sorted(GARBAGE))
    def test_garbage_is_a_provider_error_stores_nothing_and_the_next_call_recovers(
        self, guard: Guard, kind: str
    ) -> None:
        how = GARBAGE[kind]
        if how.get("garbage"):
            guard.server.garbage_next()
        else:
            guard.server.fail_next(200, body=how["body"])
        with pytest.raises(ProviderError):
            guard.token()
        assert guard.server.token_requests == 1  # a 200 that cannot be parsed is not retried
        assert guard.stored() is None
        guard.assert_recovers()
        guard.assert_kept()

    def test_garbage_in_answer_to_a_refresh_leaves_the_good_token_in_place(
        self, guard: Guard
    ) -> None:
        good = guard.token()
        guard.server.garbage_next()
        key = guard.broker.key(INSTANCE)
        with pytest.raises(ProviderError):
            guard.broker.engine.refresh(key, want_until=good.expires_at.timestamp() + 1)
        assert guard.stored() == good
        assert guard.token() == good


class TestMissingExpiresIn:
    def test_an_answer_without_expires_in_is_stored_with_the_default_lifetime(
        self, oauth2_server: OAuth2Server, sqlite_url: str
    ) -> None:
        oauth2_server.omit_expires_in = True
        with guarded(oauth2_server, sqlite_url, default_lifetime=600) as guard:
            token = guard.token()
            assert token.lifetime == 600
            stored = guard.stored()
            assert stored is not None
            assert stored.expires_at == token.expires_at
            assert stored.refresh_at is not None
            assert to_timestamp(stored.refresh_at) < to_timestamp(stored.expires_at)


class TestRateLimits:
    def test_a_short_retry_after_is_waited_out_and_the_retry_served(self, guard: Guard) -> None:
        guard.server.rate_limit_next(retry_after=0)
        token = guard.token()
        assert guard.server.token_requests == 2
        assert guard.stored() == token

    def test_a_429_without_retry_after_is_retried_after_the_backoff(self, guard: Guard) -> None:
        guard.server.rate_limit_next(retry_after=None)
        guard.token()
        assert guard.server.token_requests == 2

    def test_a_long_retry_after_raises_rate_limited_with_the_wait(self, guard: Guard) -> None:
        guard.server.rate_limit_next(retry_after=3600)
        with pytest.raises(RateLimited) as raised:
            guard.token()
        assert raised.value.retry_after == 3600
        assert guard.server.token_requests == 1
        assert guard.stored() is None
        guard.assert_recovers()

    def test_429_on_every_attempt_raises_rate_limited_after_the_budget(self, guard: Guard) -> None:
        guard.server.rate_limit_next(retry_after=0, times=BUDGET)
        with pytest.raises(RateLimited):
            guard.token()
        assert guard.server.token_requests == BUDGET
        guard.assert_recovers()
