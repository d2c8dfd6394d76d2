"""``/oauth/access`` misbehaving: 5xx, hangs, 429s and garbage, each survived with the
refresh token intact; and a store that cannot take a rotated refresh token.

After every fault the invariants hold: nothing Wix did not issue is handed out or
stored, the stored refresh token is still the one Wix accepts (a garbled answer is
never half-kept), and the requests stay within the retry budget of 3 per call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tokenbroker import (
    ProviderError,
    RateLimited,
    StoreUnavailable,
    Token,
    TokenBroker,
    TransientProviderError,
    store_from_url,
)
from tokenbroker.backends.wrapper import StoreWrapper
from tokenbroker.core.clock import ManualClock
from tokenbroker.testing.emulator import ACCESS_ENDPOINT, WixEmulator
from tokenbroker.wix.legacy import LegacyProvider, complete_install

from .test_legacy import (
    APP_ID,
    APP_SECRET,
    DUE,
    INSTANCE,
    assert_newest_kept,
    install,
    issued,
    legacy_broker,
    stored_refresh,
)

BUDGET = 3


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[WixEmulator]:
    with WixEmulator(APP_ID, APP_SECRET, clock=clock.time) as emu:
        yield emu


@pytest.fixture
def broker(emulator: WixEmulator, sqlite_url: str, clock: ManualClock) -> Iterator[TokenBroker]:
    """An installed instance whose token is due: the next call refreshes."""
    with legacy_broker(emulator, sqlite_url, clock, timeout=0.5) as b:
        install(b, emulator)
        clock.advance(DUE)
        yield b


class Requests:
    """``/oauth/access`` requests since this was made."""

    def __init__(self, emulator: WixEmulator) -> None:
        self.emulator = emulator
        self.start = emulator.access_requests

    @property
    def count(self) -> int:
        return self.emulator.access_requests - self.start


def stored_access(broker: TokenBroker) -> Token | None:
    return broker.store.get_token(broker.key(INSTANCE))


def assert_kept(broker: TokenBroker, emulator: WixEmulator) -> None:
    """Nothing foreign kept, and no rotation lost."""
    stored = stored_access(broker)
    assert stored is None or issued(emulator, stored)
    assert_newest_kept(broker, emulator)


def assert_recovers(broker: TokenBroker, emulator: WixEmulator) -> None:
    broker.installations.reset_health(INSTANCE)  # a 4xx backs off; not waited out here
    requests = Requests(emulator)
    token = broker.token(INSTANCE)
    assert issued(emulator, token)
    assert requests.count == 1
    assert_kept(broker, emulator)


class TestServerErrors:
    def test_a_transient_5xx_is_retried_and_the_token_served(
        self, broker: TokenBroker, emulator: WixEmulator
    ) -> None:
        emulator.fail_next(503, times=2, endpoint=ACCESS_ENDPOINT)
        requests = Requests(emulator)
        assert issued(emulator, broker.token(INSTANCE))
        assert requests.count == BUDGET
        assert_kept(broker, emulator)

    def test_a_persistent_5xx_is_a_transient_error_within_the_budget(
        self, broker: TokenBroker, emulator: WixEmulator
    ) -> None:
        emulator.fail_next(503, times=BUDGET, endpoint=ACCESS_ENDPOINT)
        requests = Requests(emulator)
        with pytest.raises(TransientProviderError) as raised:
            broker.token(INSTANCE)
        assert raised.value.status == 503
        assert requests.count == BUDGET
        assert_kept(broker, emulator)
        assert_recovers(broker, emulator)

    def test_a_hung_request_times_out_and_the_retry_is_served(
        self, broker: TokenBroker, emulator: WixEmulator
    ) -> None:
        emulator.hang_next(2.0, endpoint=ACCESS_ENDPOINT)
        requests = Requests(emulator)
        assert issued(emulator, broker.token(INSTANCE))
        assert requests.count == 2
        assert_kept(broker, emulator)

    def test_a_code_exchange_is_retried_through_a_5xx(
        self, emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        with legacy_broker(emulator, sqlite_url, clock) as broker:
            emulator.fail_next(502, body="<html>Bad Gateway</html>", endpoint=ACCESS_ENDPOINT)
            token = install(broker, emulator)
            assert issued(emulator, token)
            assert emulator.access_requests == 2
            assert_kept(broker, emulator)


class TestRateLimits:
    def test_a_short_retry_after_is_waited_out(
        self, broker: TokenBroker, emulator: WixEmulator
    ) -> None:
        emulator.rate_limit_next(retry_after=0, endpoint=ACCESS_ENDPOINT)
        requests = Requests(emulator)
        assert issued(emulator, broker.token(INSTANCE))
        assert requests.count == 2
        assert_kept(broker, emulator)

    def test_a_long_retry_after_is_rate_limited_after_one_request(
        self, broker: TokenBroker, emulator: WixEmulator
    ) -> None:
        emulator.rate_limit_next(retry_after=3600, endpoint=ACCESS_ENDPOINT)
        requests = Requests(emulator)
        with pytest.raises(RateLimited) as raised:
            broker.token(INSTANCE)
        assert raised.value.retry_after == 3600
        assert requests.count == 1
        assert_kept(broker, emulator)
        assert_recovers(broker, emulator)


GARBAGE: dict[str, dict[str, Any]] = {
    "html": {"garbage": True},
    "json-array": {"body": "[1, 2, 3]"},
    "empty-body": {"body": ""},
    "no-access-token": {"body": {"refresh_token": "r-new"}},
    "access-token-with-spaces": {"body": {"access_token": "two words", "refresh_token": "r"}},
    "refresh-token-not-a-string": {"body": {"access_token": "LEGACY.x", "refresh_token": 7}},
    "refresh-token-with-spaces": {"body": {"access_token": "LEGACY.x", "refresh_token": "a b"}},
    "refresh-token-empty": {"body": {"access_token": "LEGACY.x", "refresh_token": ""}},
    "negative-lifetime": {
        "body": {"access_token": "LEGACY.x", "refresh_token": "r", "expires_in": -1}
    },
    "lifetime-as-text": {
        "body": {"access_token": "LEGACY.x", "refresh_token": "r", "expires_in": "300"}
    },
}


def send_garbage(emulator: WixEmulator, how: dict[str, Any]) -> None:
    if how.get("garbage"):
        emulator.garbage_next(endpoint=ACCESS_ENDPOINT)
    else:
        emulator.fail_next(200, body=how["body"], endpoint=ACCESS_ENDPOINT)


class TestGarbage:
    @pytest.mark.parametrize("kind", sorted(GARBAGE))
    def test_garbage_on_a_refresh_is_a_provider_error_that_keeps_the_refresh_token(
        self, broker: TokenBroker, emulator: WixEmulator, kind: str
    ) -> None:
        before = stored_refresh(broker)
        send_garbage(emulator, GARBAGE[kind])
        requests = Requests(emulator)
        with pytest.raises(ProviderError, match="Refresh an Access Token: Wix answered 200"):
            broker.token(INSTANCE)
        assert requests.count == 1  # a 200 that cannot be parsed is not retried
        assert stored_refresh(broker) == before
        assert_kept(broker, emulator)
        assert_recovers(broker, emulator)

    @pytest.mark.parametrize("kind", ["html", "no-access-token", "refresh-token-empty"])
    def test_garbage_on_a_code_exchange_stores_nothing(
        self, emulator: WixEmulator, sqlite_url: str, clock: ManualClock, kind: str
    ) -> None:
        with legacy_broker(emulator, sqlite_url, clock) as broker:
            send_garbage(emulator, GARBAGE[kind])
            with pytest.raises(ProviderError, match="Request an Access Token"):
                install(broker, emulator)
            assert stored_refresh(broker) is None
            assert stored_access(broker) is None
            assert broker.installations.get(INSTANCE) is None

    def test_an_exchange_answer_without_a_refresh_token_is_refused(
        self, emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        with legacy_broker(emulator, sqlite_url, clock) as broker:
            emulator.fail_next(200, body={"access_token": "LEGACY.x"}, endpoint=ACCESS_ENDPOINT)
            with pytest.raises(ProviderError, match="refresh_token"):
                install(broker, emulator)
            assert stored_refresh(broker) is None


class FailingRefreshWrites(StoreWrapper):
    """The store, but writes of refresh tokens fail as in an outage while ``down``."""

    down = False

    def put_token(self, token: Token, *, fence: int = 0) -> bool:
        if self.down and token.key.provider == "wix-legacy~refresh":
            raise StoreUnavailable("sqlite:///faults.db is unavailable (test)")
        return self.inner.put_token(token, fence=fence)


class TestTheStore:
    def test_a_rotated_refresh_token_the_store_refused_is_kept_and_written_next_time(
        self,
        emulator: WixEmulator,
        sqlite_url: str,
        clock: ManualClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        store = FailingRefreshWrites(store_from_url(sqlite_url))
        with legacy_broker(emulator, store, clock) as broker:
            provider = broker.provider
            assert isinstance(provider, LegacyProvider)
            install(broker, emulator)
            stale = stored_refresh(broker)
            store.down = True
            clock.advance(DUE)
            assert issued(emulator, broker.token(INSTANCE))  # the token is served anyway
            assert provider.unsaved == 1
            assert stored_refresh(broker) == stale  # the store could not take the new one
            assert "could not be stored" in caplog.text
            store.down = False
            clock.advance(DUE)
            assert issued(emulator, broker.token(INSTANCE))
            assert provider.unsaved == 0
            assert_kept(broker, emulator)

    def test_the_exchange_says_so_when_the_store_cannot_take_the_refresh_token(
        self, emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        store = FailingRefreshWrites(store_from_url(sqlite_url))
        store.down = True
        with legacy_broker(emulator, store, clock) as broker:
            code = emulator.authorization_code(INSTANCE)
            with pytest.raises(StoreUnavailable, match="this process keeps it"):
                complete_install(broker, INSTANCE, code)
            store.down = False
            broker.installations.add(INSTANCE)
            assert issued(emulator, broker.token(INSTANCE))  # the grant was not lost
            assert_kept(broker, emulator)
