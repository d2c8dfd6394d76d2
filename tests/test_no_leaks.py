"""The app secret and access tokens never reach logs, reprs or error text."""

from __future__ import annotations

import httpx2
import pytest

from tokenbroker import ProviderError, TokenBroker
from tokenbroker.testing.emulator import WixEmulator

from .conftest import APP_SECRET, INSTANCE


def every_token(emulator: WixEmulator) -> list[str]:
    return emulator.issued_tokens_for(INSTANCE)


class TestLogs:
    def test_a_full_flow_logs_no_secret_and_no_token(
        self, broker: TokenBroker, wix_emulator: WixEmulator, all_logs: pytest.LogCaptureFixture
    ) -> None:
        token = broker.token(INSTANCE)
        wix_emulator.revoke(token.access_token)
        with httpx2.Client(base_url=wix_emulator.url, auth=broker.auth(INSTANCE)) as http:
            http.get("/apps/v1/instance")
        broker.finish_setup(INSTANCE)
        wix_emulator.fail_next(503, times=3)
        broker.invalidate(broker.token(INSTANCE))
        with pytest.raises(ProviderError):
            broker.token(INSTANCE)
        assert all_logs.records, "the flow should have logged something at DEBUG"
        assert len(every_token(wix_emulator)) >= 2
        for secret in [APP_SECRET, *every_token(wix_emulator)]:
            assert secret not in all_logs.text

    def test_a_failed_early_refresh_warning_names_no_token(
        self, wix_emulator: WixEmulator, all_logs: pytest.LogCaptureFixture
    ) -> None:
        from tokenbroker import ManualClock

        clock = ManualClock()
        with TokenBroker(
            app_id="test-app-id",
            app_secret=APP_SECRET,
            store="memory://",
            api_url=wix_emulator.url,
            clock=clock,
            max_attempts=1,
        ) as broker:
            token = broker.token(INSTANCE)
            clock.advance(4 * 3600 - 20 * 60)  # the advisory window
            wix_emulator.fail_next(500)
            assert broker.token(INSTANCE).access_token == token.access_token
        assert "early refresh" in all_logs.text
        assert token.access_token not in all_logs.text
        assert APP_SECRET not in all_logs.text


class TestReprs:
    def test_broker_provider_and_token_reprs_hide_secrets(self, broker: TokenBroker) -> None:
        token = broker.token(INSTANCE)
        for text in (repr(broker), repr(broker.provider), repr(token), str(token)):
            assert APP_SECRET not in text
            assert token.access_token not in text
