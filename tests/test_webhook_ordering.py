"""Webhook ordering: ties, re-installs and stale events."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tokenbroker import Event, InstallationStatus, TokenBroker, hookimpl
from tokenbroker.plugins import plugin_manager, reset_plugins
from tokenbroker.testing.webhooks import make_key_pair, sign_webhook
from tokenbroker.wix import WebhookRejected

from .conftest import APP_ID, APP_SECRET, INSTANCE

PRIVATE, PUBLIC = make_key_pair()


class Heard:
    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def tokenbroker_app_installed(self, event: Event) -> None:
        self.calls.append(f"installed@{event.issued_at.timestamp():.0f}")

    @hookimpl
    def tokenbroker_app_removed(self, event: Event) -> None:
        self.calls.append(f"removed@{event.issued_at.timestamp():.0f}")


@pytest.fixture
def heard() -> Iterator[Heard]:
    reset_plugins()
    plugin = Heard()
    plugin_manager().register(plugin, name="heard")
    yield plugin
    reset_plugins()


@pytest.fixture
def broker() -> Iterator[TokenBroker]:
    with TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store="memory://", public_key=PUBLIC
    ) as broker:
        yield broker


def body(kind: str, iat: float, **claims: object) -> str:
    return sign_webhook(
        PRIVATE,
        event_type=kind,
        instance_id=INSTANCE,
        data={"appId": APP_ID, "originInstanceId": ""},
        iat=iat,
        **claims,  # type: ignore[arg-type]
    )


class TestAnInstallAndARemovalWithTheSameIat:
    @pytest.mark.parametrize("first", ["AppInstalled", "AppRemoved"])
    def test_the_removal_wins_whichever_arrives_first_and_redeliveries_never_flip_it(
        self, broker: TokenBroker, first: str
    ) -> None:
        iat = time.time() - 10
        install, removal = body("AppInstalled", iat), body("AppRemoved", iat)
        order = [install, removal] if first == "AppInstalled" else [removal, install]
        for delivery in [*order, *order, install, install, removal]:
            broker.handle_webhook(delivery)
            found = broker.installations.get(INSTANCE)
            assert found is not None
            if delivery is removal or found.status is InstallationStatus.REMOVED:
                assert found.status is InstallationStatus.REMOVED
        final = broker.installations.get(INSTANCE)
        assert final is not None
        assert final.status is InstallationStatus.REMOVED


class TestAnAppInstalledForAnActiveInstallation:
    def test_is_not_news_keeps_installed_at_and_fires_no_hook(
        self, broker: TokenBroker, heard: Heard
    ) -> None:
        first_iat = time.time() - 100
        assert broker.handle_webhook(body("AppInstalled", first_iat)).news
        first = broker.installations.get(INSTANCE)
        again = broker.handle_webhook(body("AppInstalled", first_iat + 50))  # re-signed, later
        assert not again.news
        kept = broker.installations.get(INSTANCE)
        assert first is not None
        assert kept is not None
        assert kept.installed_at == first.installed_at
        assert heard.calls == [f"installed@{first_iat:.0f}"]

    def test_after_a_removal_it_is_news_again(self, broker: TokenBroker, heard: Heard) -> None:
        now = time.time()
        broker.handle_webhook(body("AppInstalled", now - 30))
        broker.handle_webhook(body("AppRemoved", now - 20))
        assert broker.handle_webhook(body("AppInstalled", now - 10)).news
        found = broker.installations.get(INSTANCE)
        assert found is not None
        assert found.active
        assert found.installed_at is not None
        assert found.installed_at.timestamp() == pytest.approx(int(now - 10), abs=1)
        assert len(heard.calls) == 3


class TestAnEventWithoutExp:
    def test_older_than_wix_s_retry_horizon_is_refused_as_stale(self, broker: TokenBroker) -> None:
        ten_years = 10 * 365 * 86400
        with pytest.raises(WebhookRejected) as info:
            broker.handle_webhook(body("AppInstalled", time.time() - ten_years, exp=None))
        assert (info.value.status, info.value.reason) == (401, "stale")
        assert broker.installations.get(INSTANCE) is None

    def test_within_the_horizon_is_accepted(self, broker: TokenBroker) -> None:
        forty_seven_hours = 47 * 3600
        outcome = broker.handle_webhook(
            body("AppInstalled", time.time() - forty_seven_hours, exp=None)
        )
        assert outcome.news
