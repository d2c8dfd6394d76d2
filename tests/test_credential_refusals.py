"""A wrong app secret is found out once, not once per installation."""

from __future__ import annotations

import httpx2
import pytest

from tokenbroker import (
    InvalidCredentials,
    ManualClock,
    ProviderConfig,
    Secret,
    TokenBroker,
    TokenKey,
)
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.wix import WixProvider

from .conftest import APP_ID

INSTANCES = [f"inst-{n:02}" for n in range(20)]


@pytest.fixture
def wrong_secret_broker(wix_emulator: WixEmulator) -> TokenBroker:
    for instance in INSTANCES:
        wix_emulator.install(instance)
    broker = TokenBroker(
        app_id=APP_ID, app_secret="not-the-secret", store="memory://", api_url=wix_emulator.url
    )
    broker.installations.add_many(INSTANCES)
    return broker


class TestTheBulkRefresher:
    def test_stops_asking_after_the_first_refusal_and_reports_it_once(
        self, wrong_secret_broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        with wrong_secret_broker as broker:
            report = broker.refresh_due(within=1800, concurrency=1)
        assert wix_emulator.token_requests == 1
        assert len(report.failed) == 1
        assert "401" in report.failed[0][1]
        assert len(report.skipped) == len(INSTANCES) - 1
        assert {reason for _, reason in report.skipped} == {
            "not tried: Wix refused the app's credentials"
        }

    def test_with_concurrency_at_most_the_requests_in_flight_are_spent(
        self, wrong_secret_broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        with wrong_secret_broker as broker:
            report = broker.refresh_due(within=1800, concurrency=4)
        assert wix_emulator.token_requests <= 4
        assert not report.refreshed
        assert len(report.failed) + len(report.skipped) == len(INSTANCES)

    async def test_the_async_refresher_stops_too(
        self, wrong_secret_broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        async with wrong_secret_broker as broker:
            report = await broker.arefresh_due(within=1800, concurrency=1)
        assert wix_emulator.token_requests == 1
        assert len(report.skipped) == len(INSTANCES) - 1


class TestTheProvidersCredentialBreaker:
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock(1_750_000_000.0)

    @pytest.fixture
    def refusing(self, clock: ManualClock) -> tuple[WixProvider, list[httpx2.Request]]:
        sent: list[httpx2.Request] = []

        def answer(request: httpx2.Request) -> httpx2.Response:
            sent.append(request)
            return httpx2.Response(401, json={"message": "invalid client"})

        config = ProviderConfig(
            app_id="app-1",
            app_secret=Secret("wrong"),
            api_url="https://wix.example",
            clock=clock,
            transport=httpx2.MockTransport(answer),
        )
        return WixProvider(config), sent

    def test_five_refusals_in_a_row_stop_the_requests_for_a_cooldown(
        self, refusing: tuple[WixProvider, list[httpx2.Request]], clock: ManualClock
    ) -> None:
        provider, sent = refusing
        key = TokenKey("wix", "app-1", "inst-1")
        for _ in range(5):
            with pytest.raises(InvalidCredentials, match="401"):
                provider.acquire(key)
        assert len(sent) == 5
        with pytest.raises(InvalidCredentials, match="not sent: Wix refused"):
            provider.acquire(TokenKey("wix", "app-1", "inst-2"))  # app-wide, any instance
        assert len(sent) == 5
        clock.advance(60)
        with pytest.raises(InvalidCredentials, match="401"):
            provider.acquire(key)  # one trial after the cooldown
        assert len(sent) == 6
        provider.close()

    def test_refusals_are_not_an_outage(
        self, refusing: tuple[WixProvider, list[httpx2.Request]]
    ) -> None:
        provider, _ = refusing
        for _ in range(6):
            with pytest.raises(InvalidCredentials):
                provider.acquire(TokenKey("wix", "app-1", "inst-1"))
        assert provider.breaker.failures == 0  # the outage breaker saw answers
        provider.close()
