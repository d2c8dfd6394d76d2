"""App Installation Created and Updated keep the registry as AppInstalled and AppRemoved
do, ordered with them by when each happened (``eventTime``, or the JWT's ``iat``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tokenbroker import InstallationStatus, Token, TokenBroker
from tokenbroker.testing.webhooks import (
    app_installation_event,
    make_key_pair,
    sign_domain_event,
    sign_webhook,
)
from tokenbroker.wix.webhooks.events import AppInstallationCreated, AppInstallationUpdated

from .conftest import APP_ID, APP_SECRET
from .webhook_helpers import HookLog, hook_log

PRIVATE, PUBLIC = make_key_pair()
INSTANCE = "inst-ai"


@pytest.fixture
def log() -> Iterator[HookLog]:
    with hook_log() as found:
        yield found


@pytest.fixture
def broker() -> Iterator[TokenBroker]:
    with TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store="memory://", public_key=PUBLIC
    ) as found:
        yield found


def installation(
    slug: str, at: float, *, status: str = "INSTALLED", iat: float | None = None, **kwargs: Any
) -> str:
    """App Installation ``slug`` that happened at ``at`` (signed at ``iat``, default now)."""
    data = app_installation_event(
        slug,  # type: ignore[arg-type]
        app_id=APP_ID,
        instance_id=INSTANCE,
        status=status,
        event_time=at,
    )
    kwargs.setdefault("instance_id", INSTANCE)
    return sign_domain_event(PRIVATE, data, iat=iat, **kwargs)


def app_installed(iat: float, origin: str = "") -> str:
    return sign_webhook(
        PRIVATE,
        event_type="AppInstalled",
        instance_id=INSTANCE,
        data={"appId": APP_ID, "originInstanceId": origin},
        iat=iat,
    )


def status(broker: TokenBroker) -> InstallationStatus | None:
    found = broker.installations.get(INSTANCE)
    return None if found is None else found.status


class TestCreatedAndUpdated:
    def test_created_records_the_installation_and_fires_the_install_hook(
        self, broker: TokenBroker, log: HookLog
    ) -> None:
        at = time.time() - 5
        outcome = broker.handle_webhook(installation("created", at))
        assert outcome.news
        found = broker.installations.get(INSTANCE)
        assert found is not None
        assert found.active
        assert isinstance(outcome.event, AppInstallationCreated)
        assert found.installed_at == outcome.event.event_time  # not the iat
        assert found.installed_at is not None
        assert abs(found.installed_at.timestamp() - at) < 0.001
        assert log.hooks("installed") == [outcome.event.event_type]
        assert isinstance(log.events[0], AppInstallationCreated)

    def test_an_uninstalled_update_is_a_removal_that_purges_the_tokens(
        self, broker: TokenBroker, log: HookLog
    ) -> None:
        now = time.time()
        broker.handle_webhook(installation("created", now - 10))
        key = broker.key(INSTANCE)
        moment = datetime.fromtimestamp(now, tz=UTC)
        token = Token(key, "t0k3n", "Bearer", moment + timedelta(hours=4), moment)
        assert broker.store.put_token(token)
        removal = broker.handle_webhook(installation("updated", now - 5, status="UNINSTALLED"))
        assert removal.news
        assert status(broker) is InstallationStatus.REMOVED
        assert broker.store.get_token(key) is None
        assert [c[0] for c in log.calls] == ["installed", "event", "removed", "event"]
        assert isinstance(log.events[2], AppInstallationUpdated)

    def test_an_installed_update_after_a_removal_is_a_reinstall(
        self, broker: TokenBroker, log: HookLog
    ) -> None:
        now = time.time()
        broker.handle_webhook(installation("created", now - 30))
        broker.handle_webhook(installation("updated", now - 20, status="UNINSTALLED"))
        assert broker.handle_webhook(installation("updated", now - 10)).news
        assert status(broker) is InstallationStatus.INSTALLED
        assert log.hooks("installed") == [
            "wix.app.installations.v1.app_installation_created",
            "wix.app.installations.v1.app_installation_updated",
        ]

    def test_an_installed_update_of_an_active_installation_is_not_news(
        self, broker: TokenBroker, log: HookLog
    ) -> None:
        now = time.time()
        broker.handle_webhook(installation("created", now - 30))
        first = broker.installations.get(INSTANCE)
        assert not broker.handle_webhook(installation("updated", now - 10)).news
        again = broker.installations.get(INSTANCE)
        assert first is not None
        assert again is not None
        assert (again.status, again.installed_at) == (first.status, first.installed_at)
        assert log.hooks("installed") == ["wix.app.installations.v1.app_installation_created"]

    def test_an_update_with_another_status_leaves_the_registry_alone(
        self, broker: TokenBroker, log: HookLog
    ) -> None:
        outcome = broker.handle_webhook(installation("updated", time.time(), status="PENDING"))
        assert outcome.news  # a first delivery: the generic hook hears it
        assert broker.installations.get(INSTANCE) is None
        assert [c[0] for c in log.calls] == ["event"]

    def test_created_without_an_envelope_instance_id_uses_the_entity_s(
        self, broker: TokenBroker
    ) -> None:
        broker.handle_webhook(installation("created", time.time(), instance_id=None))
        assert status(broker) is InstallationStatus.INSTALLED

    def test_the_account_info_is_kept_on_the_record(self, broker: TokenBroker) -> None:
        body = installation(
            "created", time.time(), account_info={"accountId": "acc-1", "siteId": "site-1"}
        )
        broker.handle_webhook(body)
        found = broker.installations.get(INSTANCE)
        assert found is not None
        info = dict(found.extra["account_info"])
        assert info.pop("at")
        assert info == {"account_id": "acc-1", "parent_account_id": None, "site_id": "site-1"}


class TestAgainstAppInstalled:
    """The adversarial orderings: the later event, by when it happened, wins."""

    @pytest.mark.parametrize("first", ["uninstalled", "installed"])
    def test_an_uninstall_after_the_install_removes_whichever_arrives_first(
        self, broker: TokenBroker, first: str
    ) -> None:
        now = time.time()
        install = app_installed(iat=now - 20)
        # Happened after the install, though signed before it (a resend of an old JWT
        # would be signed early too): its eventTime orders it, not its iat.
        uninstall = installation("updated", now - 10, status="UNINSTALLED", iat=now - 30)
        order = [uninstall, install] if first == "uninstalled" else [install, uninstall]
        for body in order:
            broker.handle_webhook(body)
        assert status(broker) is InstallationStatus.REMOVED

    @pytest.mark.parametrize("first", ["uninstalled", "installed"])
    def test_an_install_after_the_uninstall_keeps_it_installed_whichever_arrives_first(
        self, broker: TokenBroker, first: str
    ) -> None:
        now = int(time.time())
        uninstall = installation("updated", now - 20, status="UNINSTALLED")
        install = app_installed(iat=now - 10)
        order = [uninstall, install] if first == "uninstalled" else [install, uninstall]
        for body in order:
            broker.handle_webhook(body)
        found = broker.installations.get(INSTANCE)
        assert found is not None
        assert found.status is InstallationStatus.INSTALLED
        assert found.installed_at == datetime.fromtimestamp(now - 10, tz=UTC)

    def test_a_late_uninstall_older_than_the_install_is_not_news(
        self, broker: TokenBroker, log: HookLog
    ) -> None:
        now = time.time()
        broker.handle_webhook(app_installed(iat=now - 10))
        late = broker.handle_webhook(installation("updated", now - 20, status="UNINSTALLED"))
        assert not late.news
        assert log.hooks("removed") == []

    @pytest.mark.parametrize("first", ["created", "installed"])
    def test_created_and_app_installed_for_one_install_fire_the_hook_once_and_keep_the_origin(
        self, broker: TokenBroker, log: HookLog, first: str
    ) -> None:
        now = time.time()
        created = installation("created", now - 11)  # a moment before AppInstalled's iat
        installed = app_installed(iat=now - 10, origin="inst-origin")
        order = [created, installed] if first == "created" else [installed, created]
        for body in order:
            broker.handle_webhook(body)
        found = broker.installations.get(INSTANCE)
        assert found is not None
        assert found.active
        assert found.origin_instance_id == "inst-origin"  # the Created event knows none
        assert len(log.hooks("installed")) == 1
