"""The ``wix-legacy`` provider's edges: removal, the protocol, its configuration, and
reading Wix's redirect."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from tokenbroker import ConfigError, InstanceNotInstalled, TokenBroker, TokenKey, TokenProvider
from tokenbroker.core.clock import ManualClock
from tokenbroker.core.protocols import ProviderConfig
from tokenbroker.core.secret import Secret
from tokenbroker.plugins.resolve import provider_factory
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.webhooks import sign_webhook
from tokenbroker.wix.legacy import LegacyProvider, forget, legacy_provider, parse_callback

from .test_legacy import (
    APP_ID,
    APP_SECRET,
    INSTANCE,
    PRIVATE,
    PUBLIC,
    assert_newest_kept,
    install,
    issued,
    legacy_broker,
    stored_refresh,
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[WixEmulator]:
    with WixEmulator(APP_ID, APP_SECRET, clock=clock.time) as emu:
        yield emu


@pytest.fixture
def broker(emulator: WixEmulator, sqlite_url: str, clock: ManualClock) -> Iterator[TokenBroker]:
    with legacy_broker(emulator, sqlite_url, clock, public_key=PUBLIC) as b:
        yield b


class TestRemoval:
    def test_a_removal_webhook_deletes_the_refresh_token(
        self, broker: TokenBroker, emulator: WixEmulator, clock: ManualClock
    ) -> None:
        install(broker, emulator)
        clock.advance(60)
        body = sign_webhook(
            PRIVATE, event_type="AppRemoved", instance_id=INSTANCE, iat=clock.time()
        )
        broker.handle_webhook(body)
        assert stored_refresh(broker) is None
        with pytest.raises(InstanceNotInstalled):
            broker.token(INSTANCE)

    def test_a_late_removal_keeps_the_grant_of_a_later_install(
        self, broker: TokenBroker, emulator: WixEmulator, clock: ManualClock
    ) -> None:
        removed_at = clock.time()
        clock.advance(60)
        install(broker, emulator)
        kept = stored_refresh(broker)
        body = sign_webhook(PRIVATE, event_type="AppRemoved", instance_id=INSTANCE, iat=removed_at)
        broker.handle_webhook(body)
        assert stored_refresh(broker) == kept

    def test_forget_deletes_it_by_hand(self, broker: TokenBroker, emulator: WixEmulator) -> None:
        install(broker, emulator)
        provider = broker.provider
        assert isinstance(provider, LegacyProvider)
        assert provider.has_grant(INSTANCE)
        assert forget(broker, INSTANCE) is True
        assert stored_refresh(broker) is None
        assert not provider.has_grant(INSTANCE)
        assert forget(broker, INSTANCE) is False


class TestTheProtocol:
    def test_it_is_a_token_provider_that_refuses_another_apps_key(
        self, broker: TokenBroker, emulator: WixEmulator
    ) -> None:
        provider = broker.provider
        assert isinstance(provider, TokenProvider)
        assert provider.name == "wix-legacy"
        with pytest.raises(ConfigError, match="serves app"):
            provider.acquire(TokenKey("wix-legacy", "another-app", INSTANCE))
        assert emulator.access_requests == 0

    async def test_the_async_twin_returns_a_complete_unexpired_token(
        self, broker: TokenBroker, emulator: WixEmulator, clock: ManualClock
    ) -> None:
        install(broker, emulator)
        token = await broker.provider.aacquire(broker.key(INSTANCE))
        assert token.key == broker.key(INSTANCE)
        assert not token.expired(clock.time())
        assert issued(emulator, token)
        assert_newest_kept(broker, emulator)


class TestConfiguration:
    def test_it_is_registered_as_wix_legacy(self) -> None:
        assert provider_factory("wix-legacy") is legacy_provider

    def test_it_needs_the_app_secret(self, emulator: WixEmulator, clock: ManualClock) -> None:
        with pytest.raises(ConfigError, match="needs the app secret"):
            legacy_broker(emulator, "memory://", clock, app_secret=None)

    def test_it_needs_a_store(self) -> None:
        config = ProviderConfig(app_id=APP_ID, app_secret=Secret(APP_SECRET), api_url="https://x")
        with pytest.raises(ConfigError, match="store"):
            LegacyProvider(config)

    def test_an_unknown_option_is_named(self, emulator: WixEmulator, clock: ManualClock) -> None:
        with pytest.raises(ConfigError, match=r"'token_url'.*known: default_lifetime"):
            legacy_broker(emulator, "memory://", clock, provider_options={"token_url": "x"})

    @pytest.mark.parametrize("value", [0, 29, 3601, math.nan, "300", True, None])
    def test_default_lifetime_is_checked(
        self, emulator: WixEmulator, clock: ManualClock, value: object
    ) -> None:
        with pytest.raises(ConfigError, match="default_lifetime"):
            legacy_broker(
                emulator, "memory://", clock, provider_options={"default_lifetime": value}
            )

    def test_the_lease_outlasts_a_refresh_tried_twice(self, broker: TokenBroker) -> None:
        provider = broker.provider
        assert isinstance(provider, LegacyProvider)
        assert broker.engine.lease_ttl > provider.max_fetch_seconds
        assert provider.max_fetch_seconds == 2 * provider.http.max_call_seconds


class TestParseCallback:
    def test_it_reads_the_documented_parameters(self) -> None:
        callback = parse_callback(
            "https://app.example.com/oauth?code=abc&instanceId=inst-9&state=s1", state="s1"
        )
        assert (callback.code, callback.instance_id, callback.state) == ("abc", "inst-9", "s1")
        assert "abc" not in repr(callback)

    @pytest.mark.parametrize(
        ("url", "match"),
        [
            ("https://app.example.com/oauth?instanceId=i", "no code"),
            ("https://app.example.com/oauth?code=a&code=b", "2 times"),
            ("https://app.example.com/oauth?code=a&state=other", "state"),
        ],
    )
    def test_a_url_without_one_code_or_with_another_state_is_refused(
        self, url: str, match: str
    ) -> None:
        with pytest.raises(ConfigError, match=match):
            parse_callback(url, state="mine")
