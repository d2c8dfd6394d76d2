"""The circuit breaker: its state machine, and the Wix provider refusing to storm a dead API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

import httpx2
import pytest

from tokenbroker import (
    ConfigError,
    InvalidCredentials,
    ManualClock,
    ProviderConfig,
    ProviderError,
    RateLimited,
    Secret,
    TokenKey,
    TransientProviderError,
)
from tokenbroker.core.breaker import CircuitBreaker, CircuitState, Permit
from tokenbroker.wix import RetryBudget, WixProvider

T0 = 1_800_000_000.0
KEY = TokenKey("wix", "app-1", "inst-1")
OK = {"access_token": "OAUTH2.abc", "token_type": "Bearer", "expires_in": 14400}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=T0)


def breaker_on(clock: ManualClock, **settings: float) -> CircuitBreaker:
    return CircuitBreaker(clock=clock, **settings)  # type: ignore[arg-type]


def admitted(breaker: CircuitBreaker) -> Permit:
    permit = breaker.allow()
    assert permit is not None, "the breaker refused a request it should admit"
    return permit


def state(breaker: CircuitBreaker) -> CircuitState:
    """The breaker's state, read afresh (a call keeps mypy from narrowing it)."""
    return breaker.state


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record_failure(admitted(breaker))


class TestClosed:
    def test_a_new_breaker_is_closed_and_admits_requests(self, clock: ManualClock) -> None:
        breaker = breaker_on(clock)
        assert state(breaker) is CircuitState.CLOSED
        assert breaker.retry_in() == 0.0
        permit = admitted(breaker)
        assert not permit.trial

    def test_it_opens_after_the_threshold_of_consecutive_failures(self, clock: ManualClock) -> None:
        breaker = breaker_on(clock, failure_threshold=3)
        fail(breaker, 2)
        assert state(breaker) is CircuitState.CLOSED
        assert breaker.record_failure(admitted(breaker)) is True
        assert state(breaker) is CircuitState.OPEN
        assert breaker.failures == 3

    def test_the_default_threshold_is_five(self, clock: ManualClock) -> None:
        breaker = breaker_on(clock)
        fail(breaker, 4)
        assert state(breaker) is CircuitState.CLOSED
        fail(breaker, 1)
        assert state(breaker) is CircuitState.OPEN

    def test_a_success_resets_the_count(self, clock: ManualClock) -> None:
        breaker = breaker_on(clock, failure_threshold=3)
        fail(breaker, 2)
        assert breaker.record_success(admitted(breaker)) is False  # it was not open
        fail(breaker, 2)
        assert state(breaker) is CircuitState.CLOSED
        assert breaker.failures == 2


class TestOpen:
    def test_an_open_breaker_refuses_until_the_cooldown_is_over(self, clock: ManualClock) -> None:
        breaker = breaker_on(clock, failure_threshold=1, cooldown=15)
        fail(breaker, 1)
        assert breaker.allow() is None
        assert breaker.retry_in() == 15.0
        clock.advance(14.5)
        assert breaker.allow() is None
        assert state(breaker) is CircuitState.OPEN
        assert breaker.retry_in() == 0.5
        clock.advance(0.5)
        assert state(breaker) is CircuitState.HALF_OPEN
        assert breaker.retry_in() == 0.0

    def test_outcomes_of_requests_sent_before_it_opened_are_ignored(
        self, clock: ManualClock
    ) -> None:
        breaker = breaker_on(clock, failure_threshold=1, cooldown=15)
        slow_success, slow_failure = admitted(breaker), admitted(breaker)
        fail(breaker, 1)
        assert breaker.record_success(slow_success) is False
        assert state(breaker) is CircuitState.OPEN
        assert breaker.record_failure(slow_failure) is False
        assert breaker.failures == 1
        assert breaker.current_cooldown == 15.0

    def test_a_clock_stepping_back_delays_by_at_most_one_cooldown(self, clock: ManualClock) -> None:
        breaker = breaker_on(clock, failure_threshold=1, cooldown=15)
        fail(breaker, 1)
        clock.advance(-3600)
        assert breaker.retry_in() == 15.0
        clock.advance(15)
        assert breaker.allow() is not None


class TestHalfOpen:
    @pytest.fixture
    def cooled(self, clock: ManualClock) -> CircuitBreaker:
        """A breaker that opened and whose cooldown just ended."""
        breaker = breaker_on(clock, failure_threshold=2, cooldown=15, max_cooldown=50)
        fail(breaker, 2)
        clock.advance(15)
        return breaker

    def test_it_admits_one_trial_and_refuses_the_next_caller(self, cooled: CircuitBreaker) -> None:
        trial = admitted(cooled)
        assert trial.trial
        assert cooled.allow() is None
        assert state(cooled) is CircuitState.HALF_OPEN
        assert cooled.holds(trial)

    def test_of_many_threads_asking_at_once_exactly_one_gets_the_trial(
        self, cooled: CircuitBreaker
    ) -> None:
        start = threading.Barrier(16)
        permits: list[Permit | None] = []

        def ask() -> None:
            start.wait()
            permits.append(cooled.allow())

        threads = [threading.Thread(target=ask) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(permit is not None for permit in permits) == 1

    def test_a_successful_trial_closes_it_and_resets_the_cooldown(
        self, cooled: CircuitBreaker, clock: ManualClock
    ) -> None:
        cooled.record_failure(admitted(cooled))  # re-open: the cooldown doubles
        clock.advance(30)
        assert cooled.record_success(admitted(cooled)) is True
        assert state(cooled) is CircuitState.CLOSED
        assert cooled.failures == 0
        assert cooled.current_cooldown == 15.0
        assert not admitted(cooled).trial

    def test_a_failed_trial_reopens_with_the_cooldown_doubled_up_to_the_max(
        self, cooled: CircuitBreaker, clock: ManualClock
    ) -> None:
        waits = []
        for _ in range(3):
            assert cooled.record_failure(admitted(cooled)) is True
            assert state(cooled) is CircuitState.OPEN
            waits.append(cooled.retry_in())
            clock.advance(waits[-1] - 1)
            assert cooled.allow() is None
            clock.advance(1)
        assert waits == [30.0, 50.0, 50.0]
        assert cooled.failures == 5

    def test_a_released_trial_lets_the_next_caller_try(self, cooled: CircuitBreaker) -> None:
        trial = admitted(cooled)
        cooled.release(trial)
        assert not cooled.holds(trial)
        again = admitted(cooled)
        assert again.trial
        assert cooled.record_success(trial) is False  # the released one no longer decides
        assert cooled.record_success(again) is True

    def test_a_trial_that_never_reports_is_given_up_after_the_trial_timeout(
        self, clock: ManualClock
    ) -> None:
        breaker = breaker_on(clock, failure_threshold=1, cooldown=15, trial_timeout=60)
        fail(breaker, 1)
        clock.advance(15)
        lost = admitted(breaker)
        clock.advance(59)
        assert breaker.allow() is None
        assert breaker.retry_in() == 1.0
        clock.advance(1)
        assert admitted(breaker).trial
        assert breaker.record_failure(lost) is False


class TestSettings:
    @pytest.mark.parametrize(
        "settings",
        [
            {"failure_threshold": 0},
            {"cooldown": 0},
            {"cooldown": 20, "max_cooldown": 10},
            {"trial_timeout": 0},
        ],
    )
    def test_nonsense_settings_are_config_errors(self, settings: dict[str, float]) -> None:
        with pytest.raises(ConfigError):
            CircuitBreaker(**settings)  # type: ignore[arg-type]

    def test_the_repr_shows_state_and_settings(self, clock: ManualClock) -> None:
        text = repr(breaker_on(clock))
        assert "state='closed'" in text
        assert "failure_threshold=5" in text


# -- the provider ---------------------------------------------------------------------


class FakeWix:
    """Answers every request with ``answer`` (or hands it to ``hook``); records the paths."""

    def __init__(self) -> None:
        self.answer: httpx2.Response | Exception = httpx2.Response(503, json={"message": "down"})
        self.hook: Callable[[httpx2.Request], Any] | None = None
        self.requests: list[str] = []

    def __call__(self, request: httpx2.Request) -> Any:
        self.requests.append(request.url.path)
        if self.hook is not None:
            return self.hook(request)
        answer = self.answer
        if isinstance(answer, Exception):
            raise answer
        if answer.status_code == 200 and request.url.path != "/oauth2/token":
            return httpx2.Response(200, json={"instance": {}, "site": {}})
        return answer

    @property
    def sent(self) -> int:
        return len(self.requests)


class TokenAuth(httpx2.Auth):
    """Fetches a token from the provider while the request is being sent, like BrokerAuth."""

    def __init__(self, provider: WixProvider) -> None:
        self.provider = provider

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response]:
        request.headers["Authorization"] = self.provider.acquire(KEY).access_token
        yield request


@pytest.fixture
def wix() -> FakeWix:
    return FakeWix()


@pytest.fixture
def provider(wix: FakeWix, clock: ManualClock) -> Iterator[WixProvider]:
    """A provider with the default breaker, its clock the ManualClock, backoff zero."""
    config = ProviderConfig(
        app_id="app-1",
        app_secret=Secret("s3cr3t"),
        api_url="https://wix.example",
        clock=clock,
        transport=httpx2.MockTransport(wix),
    )
    p = WixProvider(config, retry=RetryBudget(backoff_base=0.0))
    yield p
    p.close()


def open_circuit(provider: WixProvider, wix: FakeWix) -> None:
    """Two acquires of 503s: 3 requests, then 2 more and the circuit opens."""
    for _ in range(2):
        with pytest.raises(TransientProviderError):
            provider.acquire(KEY)
    assert wix.sent == 5
    assert state(provider.breaker) is CircuitState.OPEN


class TestProviderOpensTheCircuit:
    def test_after_five_503s_acquires_raise_circuit_open_and_send_nothing(
        self, provider: WixProvider, wix: FakeWix
    ) -> None:
        open_circuit(provider, wix)
        for _ in range(3):
            with pytest.raises(TransientProviderError, match="circuit open") as info:
                provider.acquire(KEY)
            assert info.value.status is None
            assert "after 5 consecutive failures; retrying in 15s" in str(info.value)
        assert wix.sent == 5

    def test_retries_stop_as_soon_as_the_circuit_opens(
        self, provider: WixProvider, wix: FakeWix
    ) -> None:
        with pytest.raises(TransientProviderError, match="503"):
            provider.acquire(KEY)
        with pytest.raises(TransientProviderError, match="circuit open") as info:
            provider.acquire(KEY)
        assert wix.sent == 5  # not 6: the third attempt was not made
        assert "last failure: Wix answered 503" in str(info.value)

    @pytest.mark.parametrize(
        "failure",
        [
            httpx2.ConnectError("refused"),
            httpx2.ReadTimeout("slow"),
            httpx2.Response(408, json={"message": "timeout"}),
            httpx2.Response(500, json={"message": "boom"}),
        ],
    )
    def test_timeouts_connection_errors_408_and_5xx_count_as_failures(
        self, provider: WixProvider, wix: FakeWix, failure: httpx2.Response | Exception
    ) -> None:
        wix.answer = failure
        open_circuit(provider, wix)

    def test_the_bi_event_and_instance_endpoints_share_the_breaker(
        self, provider: WixProvider, wix: FakeWix
    ) -> None:
        auth = httpx2.Auth()
        with pytest.raises(TransientProviderError):
            provider.send_finished_configuration(auth)
        with pytest.raises(TransientProviderError, match="circuit open"):
            provider.get_app_instance(auth)
        assert wix.sent == 5
        for call in (
            lambda: provider.acquire(KEY),
            lambda: provider.send_finished_configuration(auth),
            lambda: provider.get_app_instance(auth),
        ):
            with pytest.raises(TransientProviderError, match="circuit open"):
                call()
        assert wix.sent == 5

    def test_a_breaker_passed_in_is_the_one_used(self, wix: FakeWix, clock: ManualClock) -> None:
        config = ProviderConfig(
            app_id="app-1",
            app_secret=Secret("s3cr3t"),
            api_url="https://wix.example",
            clock=clock,
            transport=httpx2.MockTransport(wix),
        )
        breaker = CircuitBreaker(failure_threshold=1, clock=clock)
        provider = WixProvider(config, retry=RetryBudget(backoff_base=0.0), breaker=breaker)
        assert provider.breaker is breaker
        with pytest.raises(TransientProviderError, match="circuit open after 1 consecutive"):
            provider.acquire(KEY)
        assert wix.sent == 1
        provider.close()


class TestAnswersKeepItClosed:
    def test_429s_do_not_open_the_circuit(self, provider: WixProvider, wix: FakeWix) -> None:
        wix.answer = httpx2.Response(429, json={"message": "slow"}, headers={"Retry-After": "0"})
        for _ in range(4):
            with pytest.raises(RateLimited):
                provider.acquire(KEY)
        assert wix.sent == 12
        assert state(provider.breaker) is CircuitState.CLOSED

    def test_401s_do_not_open_the_circuit(self, provider: WixProvider, wix: FakeWix) -> None:
        wix.answer = httpx2.Response(401, json={"message": "bad secret"})
        for _ in range(6):
            with pytest.raises(InvalidCredentials):
                provider.acquire(KEY)
        # the sixth is held back by the credential breaker (tests/test_credential_refusals.py)
        assert wix.sent == 5
        assert state(provider.breaker) is CircuitState.CLOSED

    @pytest.mark.parametrize("status", [401, 429, 404])
    def test_an_answer_between_failures_resets_the_count(
        self, provider: WixProvider, wix: FakeWix, status: int
    ) -> None:
        with pytest.raises(TransientProviderError, match="503"):
            provider.acquire(KEY)
        wix.answer = httpx2.Response(status, json={"message": "no"}, headers={"Retry-After": "60"})
        with pytest.raises(ProviderError):
            provider.acquire(KEY)
        wix.answer = httpx2.Response(503, json={"message": "down"})
        with pytest.raises(TransientProviderError, match="503"):
            provider.acquire(KEY)
        assert state(provider.breaker) is CircuitState.CLOSED
        assert provider.breaker.failures == 3
        assert wix.sent == 7


class TestProviderRecovers:
    def test_after_the_cooldown_one_trial_goes_through_and_a_200_closes_it(
        self, provider: WixProvider, wix: FakeWix, clock: ManualClock
    ) -> None:
        open_circuit(provider, wix)
        clock.advance(15)
        wix.answer = httpx2.Response(200, json=OK)
        assert provider.acquire(KEY).access_token == "OAUTH2.abc"
        assert wix.sent == 6
        assert state(provider.breaker) is CircuitState.CLOSED
        provider.acquire(KEY)
        assert wix.sent == 7

    def test_a_failed_trial_is_one_request_and_doubles_the_wait(
        self, provider: WixProvider, wix: FakeWix, clock: ManualClock
    ) -> None:
        open_circuit(provider, wix)
        clock.advance(15)
        with pytest.raises(TransientProviderError, match="retrying in 30s"):
            provider.acquire(KEY)
        assert wix.sent == 6
        clock.advance(29)
        with pytest.raises(TransientProviderError, match="retrying in 1s"):
            provider.acquire(KEY)
        assert wix.sent == 6

    def test_while_the_trial_is_in_flight_other_callers_are_refused(
        self, provider: WixProvider, wix: FakeWix, clock: ManualClock
    ) -> None:
        open_circuit(provider, wix)
        clock.advance(15)
        arrived, release = threading.Event(), threading.Event()

        def slow_answer(request: httpx2.Request) -> httpx2.Response:
            arrived.set()
            assert release.wait(timeout=10)
            return httpx2.Response(200, json=OK)

        wix.hook = slow_answer
        trial = threading.Thread(target=provider.acquire, args=(KEY,))
        trial.start()
        try:
            assert arrived.wait(timeout=10)
            with pytest.raises(TransientProviderError, match="trial request is under way"):
                provider.acquire(KEY)
            assert wix.sent == 6
        finally:
            release.set()
            trial.join()
        assert state(provider.breaker) is CircuitState.CLOSED

    def test_a_token_fetched_by_the_auth_of_a_trial_request_is_part_of_the_trial(
        self, provider: WixProvider, wix: FakeWix, clock: ManualClock
    ) -> None:
        open_circuit(provider, wix)
        clock.advance(15)
        wix.answer = httpx2.Response(200, json=OK)
        provider.send_finished_configuration(TokenAuth(provider))
        assert wix.requests[5:] == ["/oauth2/token", "/apps/v1/bi-event"]
        assert state(provider.breaker) is CircuitState.CLOSED


class TestAsyncTwin:
    async def test_async_acquires_open_refuse_and_recover_the_same_way(
        self, provider: WixProvider, wix: FakeWix, clock: ManualClock
    ) -> None:
        for _ in range(2):
            with pytest.raises(TransientProviderError):
                await provider.aacquire(KEY)
        assert wix.sent == 5
        with pytest.raises(TransientProviderError, match="circuit open") as info:
            await provider.aacquire(KEY)
        assert info.value.status is None
        with pytest.raises(TransientProviderError, match="circuit open"):
            await provider.aget_app_instance(httpx2.Auth())
        assert wix.sent == 5
        clock.advance(15)
        wix.answer = httpx2.Response(200, json=OK)
        assert (await provider.aacquire(KEY)).access_token == "OAUTH2.abc"
        assert wix.sent == 6
        assert state(provider.breaker) is CircuitState.CLOSED
        await provider.aclose()

    async def test_a_cancelled_trial_frees_the_slot_for_the_next_caller(
        self, provider: WixProvider, wix: FakeWix, clock: ManualClock
    ) -> None:
        open_circuit(provider, wix)
        clock.advance(15)
        arrived = asyncio.Event()

        async def never_answers(request: httpx2.Request) -> httpx2.Response:
            arrived.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        wix.hook = never_answers
        trial = asyncio.create_task(provider.aacquire(KEY))
        await arrived.wait()
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        assert state(provider.breaker) is CircuitState.HALF_OPEN
        assert wix.sent == 6
        wix.hook = None
        wix.answer = httpx2.Response(200, json=OK)
        assert (await provider.aacquire(KEY)).access_token == "OAUTH2.abc"
        assert wix.sent == 7
        assert state(provider.breaker) is CircuitState.CLOSED
        await provider.aclose()
