"""The fleet lease outlasts the provider's worst case for one fetch."""

from __future__ import annotations

import threading

import pytest

from tokenbroker import ConfigError, Token, TokenBroker
from tokenbroker.testing.emulator import WixEmulator

from .conftest import APP_ID, APP_SECRET, INSTANCE


def broker_for(url: str, store: str = "memory://", **options: float) -> TokenBroker:
    return TokenBroker(app_id=APP_ID, app_secret=APP_SECRET, store=store, api_url=url, **options)


class TestTheLeaseTtl:
    def test_by_default_it_outlasts_every_attempt_timing_out_and_every_wait(
        self, wix_emulator: WixEmulator
    ) -> None:
        with broker_for(wix_emulator.url, timeout=20.0, max_attempts=3) as broker:
            worst = 3 * 20.0 + 2 * 10.0  # attempts x timeout + the longest waits between
            assert broker.provider.max_fetch_seconds == worst  # type: ignore[attr-defined]
            assert broker.engine.lease_ttl > worst
            assert broker.engine.wait_timeout > broker.engine.lease_ttl

    def test_an_explicit_value_below_the_worst_case_is_refused(
        self, wix_emulator: WixEmulator
    ) -> None:
        with pytest.raises(ConfigError, match=r"lease_ttl \(30s\) is shorter .* \(50s"):
            broker_for(wix_emulator.url, lease_ttl=30.0)

    @pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
    def test_a_lease_ttl_that_is_not_a_positive_number_is_refused(
        self, wix_emulator: WixEmulator, value: float
    ) -> None:
        with pytest.raises(ConfigError, match="lease_ttl must be a positive"):
            broker_for(wix_emulator.url, lease_ttl=value)

    def test_an_explicit_value_above_the_worst_case_is_kept(
        self, wix_emulator: WixEmulator
    ) -> None:
        with broker_for(wix_emulator.url, lease_ttl=120.0, wait_timeout=130.0) as broker:
            assert (broker.engine.lease_ttl, broker.engine.wait_timeout) == (120.0, 130.0)


class TestWixHangingForMostOfItsTimeout:
    def test_two_brokers_on_one_store_make_exactly_one_request(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        wix_emulator.latency = 0.8  # of a 1 s timeout
        results: list[Token] = []
        errors: list[BaseException] = []
        brokers = [
            broker_for(wix_emulator.url, sqlite_url, timeout=1.0, max_attempts=1) for _ in range(2)
        ]
        start = threading.Barrier(len(brokers))

        def ask(broker: TokenBroker) -> None:
            start.wait()
            try:
                results.append(broker.token(INSTANCE))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=ask, args=(b,)) for b in brokers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        for broker in brokers:
            broker.close()
        assert not errors
        assert wix_emulator.token_requests == 1
        assert len({token.access_token for token in results}) == 1
