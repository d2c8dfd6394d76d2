"""The clock jumping under a broker (``ManualClock``): forward past expiry, into
the advisory and mandatory windows while Wix fails, and backwards.

Whatever the clock does, the broker never hands out a token that is expired by
its own clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tokenbroker import ManualClock, Token, TokenBroker, TransientProviderError
from tokenbroker.core.clock import to_timestamp
from tokenbroker.testing.emulator import WixEmulator

from .conftest import APP_ID, APP_SECRET, BUDGET, Invariants, Requests, stored_token

INSTANCE = "inst-1"


def make_broker(emulator: WixEmulator, store: str, clock: ManualClock) -> TokenBroker:
    return TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store=store, api_url=emulator.url, clock=clock
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'clock.db'}"


@pytest.fixture
def guard(wix_emulator: WixEmulator, store_url: str, clock: ManualClock) -> Iterator[Invariants]:
    with make_broker(wix_emulator, store_url, clock) as broker:
        broker.add_installation(INSTANCE)
        guard = Invariants(broker, wix_emulator)
        guard.record_registry()
        yield guard


def ts(moment: datetime | None) -> float:
    assert moment is not None, "the policy stamps every token it hands out"
    return to_timestamp(moment)


def advisory(token: Token) -> float:
    """A moment inside the token's advisory window."""
    return (ts(token.refresh_at) + ts(token.must_refresh_at)) / 2


def mandatory(token: Token) -> float:
    """A moment inside the token's mandatory window."""
    return (ts(token.must_refresh_at) + ts(token.expires_at)) / 2


class TestForward:
    def test_a_jump_past_expiry_fetches_a_new_token_never_the_expired_one(
        self, guard: Invariants, clock: ManualClock, wix_emulator: WixEmulator
    ) -> None:
        old = guard.token(INSTANCE)
        clock.set(ts(old.expires_at) + 1)
        requests = Requests(wix_emulator)
        new = guard.token(INSTANCE)
        assert new.access_token != old.access_token
        assert requests.count == 1
        assert stored_token(guard.broker, INSTANCE) == new
        guard.assert_kept()

    def test_a_jump_past_expiry_with_wix_down_raises_rather_than_serve_the_expired_token(
        self, guard: Invariants, clock: ManualClock, wix_emulator: WixEmulator
    ) -> None:
        old = guard.token(INSTANCE)
        clock.set(ts(old.expires_at) + 1)
        wix_emulator.fail_next(503, times=BUDGET)
        requests = Requests(wix_emulator)
        with pytest.raises(TransientProviderError):
            guard.token(INSTANCE)
        assert requests.count <= BUDGET
        guard.assert_kept()

    def test_stepping_through_three_lifetimes_never_hands_out_an_expired_token(
        self, guard: Invariants, clock: ManualClock, wix_emulator: WixEmulator
    ) -> None:
        lifetime, step = 300, 7
        wix_emulator.token_lifetime = lifetime
        seen = set()
        for _ in range(3 * lifetime // step):
            seen.add(guard.token(INSTANCE).access_token)  # expiry checked on every call
            clock.advance(step)
        assert 3 <= len(seen) == wix_emulator.token_requests
        guard.assert_kept()


class TestAdvisoryWindow:
    def test_wix_failing_in_the_advisory_window_serves_the_old_token_and_logs_a_warning(
        self,
        guard: Invariants,
        clock: ManualClock,
        wix_emulator: WixEmulator,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        old = guard.token(INSTANCE)
        clock.set(advisory(old))
        wix_emulator.fail_next(503, times=BUDGET)
        requests = Requests(wix_emulator)
        with caplog.at_level(logging.WARNING, logger="tokenbroker"):
            served = guard.token(INSTANCE)
        assert served == old
        assert requests.count <= BUDGET
        assert any(
            r.levelno == logging.WARNING and "serving the current token" in r.getMessage()
            for r in caplog.records
        ), caplog.text
        assert stored_token(guard.broker, INSTANCE) == old
        # once Wix answers again, the early refresh goes through
        new = guard.token(INSTANCE)
        assert new.access_token != old.access_token
        guard.assert_kept()

    async def test_an_async_caller_gets_the_old_token_and_the_failed_background_refresh_is_logged(
        self,
        wix_emulator: WixEmulator,
        store_url: str,
        clock: ManualClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        async with make_broker(wix_emulator, store_url, clock) as broker:
            guard = Invariants(broker, wix_emulator)
            old = await guard.atoken(INSTANCE)
            clock.set(advisory(old))
            wix_emulator.fail_next(503, times=BUDGET)
            requests = Requests(wix_emulator)
            with caplog.at_level(logging.WARNING, logger="tokenbroker"):
                assert await guard.atoken(INSTANCE) == old
                await wait_for_log(caplog, "serving the current token")
            assert requests.count <= BUDGET
            assert await broker.store.aget_token(old.key) == old


async def wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while text not in caplog.text:
        assert loop.time() < deadline, f"no log line with {text!r} within {timeout}s"
        await asyncio.sleep(0.01)


class TestMandatoryWindow:
    def test_wix_failing_in_the_mandatory_window_raises(
        self, guard: Invariants, clock: ManualClock, wix_emulator: WixEmulator
    ) -> None:
        old = guard.token(INSTANCE)
        clock.set(mandatory(old))
        wix_emulator.fail_next(503, times=BUDGET)
        requests = Requests(wix_emulator)
        with pytest.raises(TransientProviderError):
            guard.token(INSTANCE)
        assert requests.count <= BUDGET
        # the next call, Wix answering again, gets a new token
        new = guard.token(INSTANCE)
        assert new.access_token != old.access_token
        assert stored_token(guard.broker, INSTANCE) == new
        guard.assert_kept()


class TestBackward:
    def test_a_clock_set_before_obtained_at_still_serves_the_token(
        self, guard: Invariants, clock: ManualClock, wix_emulator: WixEmulator
    ) -> None:
        token = guard.token(INSTANCE)
        clock.set(ts(token.obtained_at) - 3600)
        requests = Requests(wix_emulator)
        assert guard.token(INSTANCE) == token
        # a process without the near cache reads it from the store just the same
        with make_broker(wix_emulator, guard.broker.store.url, clock) as other:
            assert Invariants(other, wix_emulator).token(INSTANCE) == token
        assert requests.count == 0
        guard.assert_kept()

    def test_jumping_back_from_the_mandatory_window_serves_the_token_again(
        self, guard: Invariants, clock: ManualClock, wix_emulator: WixEmulator
    ) -> None:
        token = guard.token(INSTANCE)
        clock.set(mandatory(token))
        wix_emulator.fail_next(503, times=BUDGET)
        with pytest.raises(TransientProviderError):
            guard.token(INSTANCE)
        clock.set(ts(token.obtained_at) - 60)
        assert guard.token(INSTANCE) == token
        guard.assert_kept()

    def test_jumping_back_after_a_refresh_keeps_serving_the_newest_token(
        self, guard: Invariants, clock: ManualClock, wix_emulator: WixEmulator
    ) -> None:
        first = guard.token(INSTANCE)
        clock.set(ts(first.expires_at) + 1)  # a fresh token, obtained "later"
        later = guard.token(INSTANCE)
        clock.set(ts(first.obtained_at) + 1)  # back again: `later` is still valid
        assert guard.token(INSTANCE) == later
        guard.assert_kept()
