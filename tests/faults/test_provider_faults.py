"""The Wix API misbehaving: 5xx, hangs, garbage and 429s, each survived.

Every test ends by checking the suite's invariants (see ``conftest``): no expired or
foreign token handed out or kept, the installation registry whole, and the requests
made within the retry budget of 3 per token fetch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tokenbroker import ProviderError, RateLimited, TokenBroker, TransientProviderError
from tokenbroker.testing.emulator import WixEmulator

from .conftest import (
    APP_ID,
    APP_SECRET,
    BUDGET,
    HookRecorder,
    Invariants,
    Requests,
    in_threads,
    stored_token,
)

INSTANCE = "inst-1"
OTHER = "inst-2"
TIMEOUT = 0.5  # the broker's HTTP timeout; hangs below last longer
HANG = 2.0


def make_broker(emulator: WixEmulator, store: str, timeout: float = 10.0) -> TokenBroker:
    return TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store=store, api_url=emulator.url, timeout=timeout
    )


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'faults.db'}"


def guarded(emulator: WixEmulator, store_url: str, timeout: float) -> Iterator[Invariants]:
    emulator.install(OTHER)
    with make_broker(emulator, store_url, timeout) as broker:
        broker.add_installations([INSTANCE, OTHER])
        guard = Invariants(broker, emulator)
        guard.record_registry()
        yield guard


@pytest.fixture
def guard(wix_emulator: WixEmulator, store_url: str) -> Iterator[Invariants]:
    """A broker on a fresh SQLite store with two installations recorded."""
    yield from guarded(wix_emulator, store_url, timeout=10.0)


@pytest.fixture
def hasty_guard(wix_emulator: WixEmulator, store_url: str) -> Iterator[Invariants]:
    """The same, with an HTTP timeout the emulator's hangs outlast."""
    yield from guarded(wix_emulator, store_url, timeout=TIMEOUT)


def assert_recovers(guard: Invariants, instance_id: str = INSTANCE) -> None:
    """Once the fault is gone, the next call gets a token with one request, and stores it.

    A fault that counts against the installation (a 4xx, a 429) makes it back off first
    (see the installation health page); these brokers run on the real clock, so the
    back-off is reset here rather than waited out.
    """
    guard.broker.installations.reset_health(instance_id)
    requests = Requests(guard.emulator)
    token = guard.token(instance_id)
    assert requests.count == 1
    assert stored_token(guard.broker, instance_id) == token


class TestServerErrors:
    def test_transient_5xx_is_retried_and_the_token_served(
        self, guard: Invariants, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.fail_next(503, times=2)
        requests = Requests(wix_emulator)
        token = guard.token(INSTANCE)
        assert requests.count == BUDGET
        assert stored_token(guard.broker, INSTANCE) == token
        guard.assert_kept()

    def test_a_proxy_error_page_with_a_5xx_is_retried_like_any_5xx(
        self, guard: Invariants, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.fail_next(502, body="<html><body>502 Bad Gateway</body></html>")
        requests = Requests(wix_emulator)
        guard.token(INSTANCE)
        assert requests.count == 2
        guard.assert_kept()

    def test_persistent_5xx_raises_transient_error_after_at_most_3_requests(
        self, guard: Invariants, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.fail_next(503, times=BUDGET)
        requests = Requests(wix_emulator)
        with pytest.raises(TransientProviderError) as raised:
            guard.token(INSTANCE)
        assert raised.value.status == 503
        assert requests.count == BUDGET
        assert stored_token(guard.broker, INSTANCE) is None
        assert_recovers(guard)
        guard.assert_kept()

    def test_every_failing_call_of_an_outage_stays_within_its_budget(
        self, guard: Invariants, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.fail_next(500, times=50)
        for _ in range(3):
            requests = Requests(wix_emulator)
            with pytest.raises(TransientProviderError):
                guard.token(INSTANCE)
            assert requests.count <= BUDGET
        assert stored_token(guard.broker, INSTANCE) is None
        guard.assert_kept()

    async def test_many_tasks_on_one_key_during_an_outage_cost_one_budget(
        self, wix_emulator: WixEmulator, store_url: str, hooks: HookRecorder
    ) -> None:
        wix_emulator.fail_next(503, times=50)
        async with make_broker(wix_emulator, store_url) as broker:
            guard = Invariants(broker, wix_emulator)
            results = await asyncio.gather(
                *(guard.atoken(INSTANCE) for _ in range(20)), return_exceptions=True
            )
            assert all(isinstance(r, TransientProviderError) for r in results), results
            # the tasks all joined one flight before its first request was answered
            assert wix_emulator.token_requests <= BUDGET
            assert len(hooks.failed) == 1
            assert await broker.store.aget_token(broker.key(INSTANCE)) is None

    def test_many_threads_on_one_key_during_an_outage_stay_within_flights_times_budget(
        self, guard: Invariants, wix_emulator: WixEmulator, hooks: HookRecorder
    ) -> None:
        wix_emulator.latency = 0.05  # keeps each flight open while the others join it
        wix_emulator.fail_next(503, times=200)
        requests = Requests(wix_emulator)
        outcomes = in_threads(16, lambda: guard.token(INSTANCE))
        assert outcomes.results == []
        assert all(isinstance(e, TransientProviderError) for e in outcomes.errors)
        # token_failed fires once per failed flight, not once per waiting caller
        flights = len(hooks.failed)
        assert 1 <= flights <= 16
        assert requests.count <= BUDGET * flights
        guard.assert_kept()


class TestTimeouts:
    def test_a_hung_request_times_out_and_the_retry_is_served(
        self, hasty_guard: Invariants, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.hang_next(HANG)
        requests = Requests(wix_emulator)
        token = hasty_guard.token(INSTANCE)
        assert requests.count == 2
        assert stored_token(hasty_guard.broker, INSTANCE) == token
        hasty_guard.assert_kept()

    def test_an_api_that_never_answers_raises_transient_error_after_at_most_3_requests(
        self, hasty_guard: Invariants, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.hang_next(HANG, times=BUDGET)
        requests = Requests(wix_emulator)
        with pytest.raises(TransientProviderError, match="no answer"):
            hasty_guard.token(INSTANCE)
        assert requests.count == BUDGET
        assert stored_token(hasty_guard.broker, INSTANCE) is None
        assert_recovers(hasty_guard)
        hasty_guard.assert_kept()


GARBAGE: dict[str, dict[str, Any]] = {
    "html": {"garbage": True},
    "json-array": {"status": 200, "body": "[1, 2, 3]"},
    "no-access-token": {"status": 200, "body": {"token_type": "Bearer", "expires_in": 14400}},
    "token-with-spaces": {
        "status": 200,
        "body": {"access_token": "two words", "token_type": "Bearer", "expires_in": 14400},
    },
    "negative-lifetime": {
        "status": 200,
        "body": {"access_token": "OAUTH2.x", "token_type": "Bearer", "expires_in": -1},
    },
    "lifetime-as-text": {
        "status": 200,
        "body": {"access_token": "OAUTH2.x", "token_type": "Bearer", "expires_in": "14400"},
    },
    "empty-body": {"status": 200, "body": ""},
}


def send_garbage(emulator: WixEmulator, how: dict[str, Any]) -> None:
    if how.get("garbage"):
        emulator.garbage_next()
    else:
        emulator.fail_next(how["status"], body=how["body"])


class TestGarbage:
    @pytest.mark.parametrize("kind", sorted(GARBAGE))
    def test_garbage_raises_provider_error_stores_nothing_and_the_next_call_recovers(
        self, guard: Invariants, wix_emulator: WixEmulator, kind: str
    ) -> None:
        send_garbage(wix_emulator, GARBAGE[kind])
        requests = Requests(wix_emulator)
        with pytest.raises(ProviderError):
            guard.token(INSTANCE)
        assert requests.count == 1  # a 200 that cannot be parsed is not retried
        assert stored_token(guard.broker, INSTANCE) is None
        guard.assert_kept()
        assert_recovers(guard)
        guard.assert_kept()

    def test_garbage_in_answer_to_a_refresh_leaves_the_good_token_in_place(
        self, guard: Invariants, wix_emulator: WixEmulator
    ) -> None:
        good = guard.token(INSTANCE)
        wix_emulator.garbage_next()
        key = guard.broker.key(INSTANCE)
        with pytest.raises(ProviderError):
            guard.broker.engine.refresh(key, want_until=good.expires_at.timestamp() + 1)
        assert stored_token(guard.broker, INSTANCE) == good
        assert guard.token(INSTANCE) == good
        guard.assert_kept()


class TestRateLimits:
    def test_a_short_retry_after_is_waited_out_and_the_retry_served(
        self, guard: Invariants, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.rate_limit_next(retry_after=0.1)
        requests = Requests(wix_emulator)
        token = guard.token(INSTANCE)
        assert requests.count == 2
        assert stored_token(guard.broker, INSTANCE) == token
        guard.assert_kept()

    def test_a_429_without_retry_after_is_retried_after_the_backoff(
        self, guard: Invariants, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.rate_limit_next(retry_after=None)
        requests = Requests(wix_emulator)
        guard.token(INSTANCE)
        assert requests.count == 2
        guard.assert_kept()

    def test_a_long_retry_after_raises_rate_limited_with_the_wait_after_one_request(
        self, guard: Invariants, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.rate_limit_next(retry_after=3600)
        requests = Requests(wix_emulator)
        with pytest.raises(RateLimited) as raised:
            guard.token(INSTANCE)
        assert raised.value.retry_after == 3600
        assert requests.count == 1
        assert stored_token(guard.broker, INSTANCE) is None
        assert_recovers(guard)
        guard.assert_kept()

    def test_429_on_every_attempt_raises_rate_limited_after_at_most_3_requests(
        self, guard: Invariants, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.rate_limit_next(retry_after=0.05, times=BUDGET)
        requests = Requests(wix_emulator)
        with pytest.raises(RateLimited):
            guard.token(INSTANCE)
        assert requests.count == BUDGET
        assert stored_token(guard.broker, INSTANCE) is None
        assert_recovers(guard)
        guard.assert_kept()
