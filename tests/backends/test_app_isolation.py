"""Apps sharing one store cannot see each other's tokens, installations, refreshes or
webhook records: on every backend (memory, SQLite, PostgreSQL, MariaDB, Redis).

Both apps use the same instance ids on purpose: a key that forgot its app id would
collide at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tokenbroker import AppConfig, Config, InstallationStatus, Secret, TokenBrokers
from tokenbroker.cli import main
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.webhooks import (
    app_installation_event,
    make_key_pair,
    sign_domain_event,
    sign_webhook,
)
from tokenbroker.wix.errors import WebhookRejected

SHOP_ID, SHOP_SECRET = "iso-shop-app", "iso-shop-secret"
CRM_ID, CRM_SECRET = "iso-crm-app", "iso-crm-secret"
SHOP_PRIVATE, SHOP_PUBLIC = make_key_pair("isolation-shop")
CRM_PRIVATE, CRM_PUBLIC = make_key_pair("isolation-crm")


@pytest.fixture(params=["memory", "sqlite", "postgres", "mysql", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, unique_prefix: str) -> str:
    """A cold store of each backend, under a prefix of its own."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'apps.db'}"
    if request.param == "redis":
        base: str = request.getfixturevalue("redis_url")
        return f"{base}{'&' if '?' in base else '?'}key_prefix={unique_prefix}"
    base = request.getfixturevalue(f"{request.param}_url")
    return f"{base}{'&' if '?' in base else '?'}table_prefix={unique_prefix}"


@pytest.fixture
def shop_wix() -> Iterator[WixEmulator]:
    with WixEmulator(SHOP_ID, SHOP_SECRET) as emulator:
        for instance in ("inst-1", "inst-2"):
            emulator.install(instance)
        yield emulator


@pytest.fixture
def crm_wix() -> Iterator[WixEmulator]:
    with WixEmulator(CRM_ID, CRM_SECRET) as emulator:
        emulator.install("inst-1")
        yield emulator


def config(store_url: str, shop: WixEmulator, crm: WixEmulator) -> Config:
    apps = {
        "shop": AppConfig(
            name="shop",
            app_id=SHOP_ID,
            app_secret=Secret(SHOP_SECRET),
            api_url=shop.url,
            public_key=SHOP_PUBLIC,
        ),
        "crm": AppConfig(
            name="crm",
            app_id=CRM_ID,
            app_secret=Secret(CRM_SECRET),
            api_url=crm.url,
            public_key=CRM_PUBLIC,
        ),
    }
    return Config(store=store_url, apps=apps, source="isolation.toml")


@pytest.fixture
def brokers(store_url: str, shop_wix: WixEmulator, crm_wix: WixEmulator) -> Iterator[TokenBrokers]:
    with TokenBrokers(config(store_url, shop_wix, crm_wix)) as found:
        yield found


def ids(brokers: TokenBrokers, name: str, **kwargs: bool) -> list[str]:
    return [i.instance_id for i in brokers[name].installations.list(**kwargs)]


class TestTokens:
    def test_one_instance_id_is_two_tokens_and_dropping_one_keeps_the_other(
        self, brokers: TokenBrokers, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        shop = brokers["shop"].token("inst-1")
        crm = brokers["crm"].token("inst-1")
        assert shop.access_token in shop_wix.issued_tokens_for("inst-1")
        assert crm.access_token in crm_wix.issued_tokens_for("inst-1")
        brokers["shop"].invalidate(shop)
        brokers["shop"].engine.near.clear()  # type: ignore[union-attr]  # ask the store
        assert brokers["crm"].store.get_token(crm.key) == crm
        assert brokers["shop"].store.get_token(shop.key) is None
        assert brokers["crm"].token("inst-1") == crm
        assert crm_wix.token_requests == 1


class TestInstallations:
    def test_each_app_lists_and_removes_only_its_own(
        self, brokers: TokenBrokers, crm_wix: WixEmulator
    ) -> None:
        brokers["shop"].add_installations(["inst-1", "inst-2"])
        brokers["crm"].add_installation("inst-1")
        brokers["crm"].token("inst-1")
        assert ids(brokers, "shop") == ["inst-1", "inst-2"]
        assert ids(brokers, "crm") == ["inst-1"]
        assert brokers["crm"].get_installation("inst-2") is None

        brokers["shop"].remove_installation("inst-1")
        assert ids(brokers, "shop") == ["inst-2"]
        crm = brokers["crm"].get_installation("inst-1")
        assert crm is not None
        assert crm.status is InstallationStatus.INSTALLED
        brokers["crm"].engine.near.clear()  # type: ignore[union-attr]
        brokers["crm"].token("inst-1")  # its token survived the other app's removal
        assert crm_wix.token_requests == 1

    def test_the_bulk_refresher_walks_each_app_s_own(
        self, brokers: TokenBrokers, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        brokers["shop"].add_installations(["inst-1", "inst-2"])
        brokers["crm"].add_installation("inst-1")
        only_shop = brokers.refresh_due(apps=("shop",))
        assert sorted(only_shop["shop"].refreshed) == ["inst-1", "inst-2"]
        assert crm_wix.token_requests == 0
        every = brokers.refresh_due()
        assert every["crm"].refreshed == ["inst-1"]
        assert sorted(every["shop"].fresh) == ["inst-1", "inst-2"]
        assert (shop_wix.token_requests, crm_wix.token_requests) == (2, 1)


def installed(private: str, app_id: str, instance: str) -> str:
    return sign_webhook(
        private,
        event_type="AppInstalled",
        instance_id=instance,
        data={"appId": app_id, "originInstanceId": ""},
    )


class TestWebhookRecords:
    def test_a_delivery_is_recorded_for_its_app_only_and_refused_by_the_other(
        self, brokers: TokenBrokers
    ) -> None:
        body = installed(SHOP_PRIVATE, SHOP_ID, "inst-w")
        assert brokers["shop"].handle_webhook(body).news
        assert ids(brokers, "shop") == ["inst-w"]
        assert ids(brokers, "crm") == []
        with pytest.raises(WebhookRejected):
            brokers["crm"].handle_webhook(body)  # not signed with crm's key
        assert ids(brokers, "crm") == []

    def test_one_event_id_is_news_to_each_app_once(self, brokers: TokenBrokers) -> None:
        def created(private: str, app_id: str) -> str:
            data = app_installation_event(
                "created", app_id=app_id, instance_id="inst-e", event_id="one-event-id"
            )
            return sign_domain_event(private, data, instance_id="inst-e")

        first = brokers["shop"].handle_webhook(created(SHOP_PRIVATE, SHOP_ID))
        again = brokers["shop"].handle_webhook(created(SHOP_PRIVATE, SHOP_ID))
        crm = brokers["crm"].handle_webhook(created(CRM_PRIVATE, CRM_ID))
        assert (first.news, first.duplicate) == (True, False)
        assert again.duplicate  # the same event id, resent: deduplicated per app
        assert (crm.news, crm.duplicate) == (True, False)  # the other app's is its own news
        assert ids(brokers, "shop") == ["inst-e"] == ids(brokers, "crm")


class TestTheCli:
    # memory:// lives in one process, so the CLI (another process's view) cannot share it.
    @pytest.mark.parametrize("store_url", ["sqlite", "postgres", "mysql", "redis"], indirect=True)
    def test_installations_list_shows_only_the_app_named(
        self,
        store_url: str,
        brokers: TokenBrokers,
        tmp_path: Path,
        shop_wix: WixEmulator,
        crm_wix: WixEmulator,
    ) -> None:
        brokers["shop"].add_installations(["inst-1", "inst-2"])
        brokers["crm"].add_installation("inst-1")
        path = tmp_path / "tb.toml"
        path.write_text(
            f'store = "{store_url}"\n'
            f'[apps.shop]\napp_id = "{SHOP_ID}"\napp_secret = "{SHOP_SECRET}"\n'
            f'[apps.crm]\napp_id = "{CRM_ID}"\napp_secret = "{CRM_SECRET}"\n'
            f'api_url = "{crm_wix.url}"\n'
        )
        runner = CliRunner()

        def listed(app: str) -> list[str]:
            args = ["--config", str(path), "installations", "list", "--app", app, "--json"]
            result = runner.invoke(main, args, env={"TOKENBROKER_CONFIG": None})
            assert result.exit_code == 0, result.output
            return [row["instance_id"] for row in json.loads(result.stdout)]

        assert listed("shop") == ["inst-1", "inst-2"]
        assert listed("crm") == ["inst-1"]
        refresh = ["--config", str(path), "refresh", "--app", "crm", "--no-progress"]
        result = runner.invoke(main, refresh, env={"TOKENBROKER_CONFIG": None})
        assert result.exit_code == 0, result.output
        assert "1 refreshed" in result.stdout
        assert (shop_wix.token_requests, crm_wix.token_requests) == (0, 1)
