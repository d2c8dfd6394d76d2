"""``TokenBrokers``: every app over one store, one near cache and one plugin manager,
each app with its own provider, credentials and refresh budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tokenbroker import (
    AppConfig,
    Config,
    ConfigError,
    ProviderConfig,
    Secret,
    StorageError,
    TokenBroker,
    TokenBrokers,
    hookimpl,
)
from tokenbroker.backends.memory import MemoryStore
from tokenbroker.backends.wrapper import StoreWrapper
from tokenbroker.core.installation import Installation
from tokenbroker.plugins import plugin_manager, reset_plugins
from tokenbroker.plugins.registry import RegisterProvider
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.wix.provider import WixProvider

SHOP_ID, SHOP_SECRET = "shop-app-id", "shop-app-secret"
CRM_ID, CRM_SECRET = "crm-app-id", "crm-app-secret"


@pytest.fixture
def shop_wix() -> Iterator[WixEmulator]:
    with WixEmulator(SHOP_ID, SHOP_SECRET) as emulator:
        emulator.install("inst-1")
        emulator.install("inst-2")
        yield emulator


@pytest.fixture
def crm_wix() -> Iterator[WixEmulator]:
    with WixEmulator(CRM_ID, CRM_SECRET) as emulator:
        emulator.install("inst-1")
        yield emulator


def two_apps(
    shop: WixEmulator, crm: WixEmulator, *, crm_secret: str = CRM_SECRET, **top: Any
) -> Config:
    apps = {
        "shop": AppConfig(
            name="shop", app_id=SHOP_ID, app_secret=Secret(SHOP_SECRET), api_url=shop.url
        ),
        "crm": AppConfig(name="crm", app_id=CRM_ID, app_secret=Secret(crm_secret), api_url=crm.url),
    }
    return Config(**{"store": "memory://", "apps": apps, "source": "test.toml", **top})


class ClosingCount(StoreWrapper):
    """A memory store that counts how often it is closed."""

    def __init__(self) -> None:
        super().__init__(MemoryStore())
        self.closed = 0

    def close(self) -> None:
        self.closed += 1
        super().close()


class TestSharing:
    def test_one_store_one_near_cache_one_plugin_manager(
        self, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        with TokenBrokers(two_apps(shop_wix, crm_wix)) as brokers:
            shop, crm = brokers["shop"], brokers["crm"]
            assert shop.store is crm.store is brokers.store
            assert shop.engine.near is crm.engine.near is brokers.near
            assert brokers.plugins is plugin_manager()
            assert list(brokers) == ["shop", "crm"] == list(brokers.names)

    def test_each_app_gets_its_tokens_from_its_own_wix(
        self, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        with TokenBrokers(two_apps(shop_wix, crm_wix)) as brokers:
            shop = brokers["shop"].token("inst-1")
            crm = brokers["crm"].token("inst-1")
            assert shop.access_token in shop_wix.issued_tokens_for("inst-1")
            assert crm.access_token in crm_wix.issued_tokens_for("inst-1")
            assert (shop.key.app_id, crm.key.app_id) == (SHOP_ID, CRM_ID)
            assert brokers["shop"].token("inst-1") == shop  # served, not fetched again
        assert (shop_wix.token_requests, crm_wix.token_requests) == (1, 1)

    def test_the_near_cache_bound_is_the_whole_process_s(
        self, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        with TokenBrokers(two_apps(shop_wix, crm_wix), near_cache_size=2) as brokers:
            brokers["shop"].token("inst-1")
            brokers["shop"].token("inst-2")
            brokers["crm"].token("inst-1")
            assert brokers.near is not None
            assert len(brokers.near) == 2

    def test_the_store_is_closed_once_by_tokenbrokers_and_a_given_one_not_at_all(
        self, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        given = ClosingCount()
        with TokenBrokers(two_apps(shop_wix, crm_wix), store=given) as brokers:
            brokers["shop"].close()  # a broker never closes the shared store
        assert given.closed == 0

    def test_one_encryption_wrapper_for_every_app(
        self, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        pytest.importorskip("cryptography")
        from tokenbroker.backends.encrypted import new_key

        raw = MemoryStore()
        config = two_apps(shop_wix, crm_wix, encryption_key=Secret(new_key()))
        with TokenBrokers(config, store=raw) as brokers:
            for name in brokers:
                token = brokers[name].token("inst-1")
                assert raw.get_token(token.key).access_token.startswith("fernet:")  # type: ignore[union-attr]
                assert brokers[name].store.get_token(token.key) == token


class TestChoosing:
    def test_unknown_names_only_and_the_mapping_protocol(
        self, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        with TokenBrokers(two_apps(shop_wix, crm_wix)) as brokers:
            with pytest.raises(ConfigError, match=r"^unknown app 'nope' \(apps: shop, crm\)$"):
                brokers.app("nope")
            with pytest.raises(KeyError):
                brokers["nope"]
            assert "nope" not in brokers
            assert brokers.get("nope") is None
            with pytest.raises(ConfigError, match=r"^2 apps are configured; name one"):
                brokers.only()
            assert brokers.by_app_id(CRM_ID) is brokers["crm"]

    def test_from_env_is_one_app_named_default(self, wix_emulator: WixEmulator) -> None:
        env = {
            "TOKENBROKER_APP_ID": "test-app-id",
            "TOKENBROKER_APP_SECRET": "test-app-secret",
            "TOKENBROKER_STORE": "memory://",
            "TOKENBROKER_API_URL": wix_emulator.url,
        }
        with TokenBrokers.from_env(env) as brokers:
            assert brokers.names == ("default",)
            assert brokers.only() is brokers["default"]
            assert brokers.only().token("inst-1").access_token

    def test_from_config_and_load_read_the_file(
        self, tmp_path: Path, shop_wix: WixEmulator, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "tb.toml"
        path.write_text(
            f'store = "memory://"\n[apps.shop]\napp_id = "{SHOP_ID}"\n'
            f'app_secret = "{SHOP_SECRET}"\napi_url = "{shop_wix.url}"\n'
        )
        with TokenBrokers.from_config(str(path)) as brokers:
            assert brokers["shop"].token("inst-1").key.app_id == SHOP_ID
        monkeypatch.setenv("TOKENBROKER_CONFIG", str(path))
        with TokenBrokers.load() as brokers:
            assert brokers.config.source == str(path)

    def test_a_bad_app_names_the_config_and_the_app_and_leaves_the_store_alone(
        self, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        config = two_apps(shop_wix, crm_wix)
        bad = Config(
            store="memory://",
            apps={**config.apps, "crm": AppConfig(name="crm", app_id=CRM_ID, provider="nope")},
            source="test.toml",
        )
        given = ClosingCount()
        with pytest.raises(
            ConfigError, match=r"^test\.toml: apps\.crm: unknown token provider 'nope'"
        ):
            TokenBrokers(bad, store=given)
        assert given.closed == 0

    def test_options_shared_by_every_app_are_refused_as_broker_options(
        self, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        with pytest.raises(ConfigError, match=r"^encryption_key is the config's"):
            TokenBrokers(two_apps(shop_wix, crm_wix), encryption_key="k")
        with pytest.raises(ConfigError, match=r"^api_url, app_id: set per app"):
            TokenBrokers(two_apps(shop_wix, crm_wix), app_id="x", api_url="http://x")


@pytest.fixture
def recorded() -> Iterator[list[ProviderConfig]]:
    """A provider ``recorder`` that notes the ``ProviderConfig`` it is built with; it
    needs no app secret (it takes one from its options, as other providers may)."""
    made: list[ProviderConfig] = []

    def factory(config: ProviderConfig) -> WixProvider:
        made.append(config)
        secret = config.app_secret or Secret(str(config.options["secret"]))
        return WixProvider(
            ProviderConfig(app_id=config.app_id, app_secret=secret, api_url=config.api_url)
        )

    @hookimpl
    def tokenbroker_register_providers(register: RegisterProvider) -> None:
        register("recorder", factory, description="notes its config")

    reset_plugins()
    plugin_manager().register(
        SimpleNamespace(tokenbroker_register_providers=tokenbroker_register_providers),
        name="recorder-plugin",
    )
    yield made
    reset_plugins()


class TestProviderOptions:
    def test_options_and_the_shared_store_reach_the_provider(
        self, recorded: list[ProviderConfig], crm_wix: WixEmulator
    ) -> None:
        app = AppConfig(
            name="crm",
            app_id=CRM_ID,
            provider="recorder",
            provider_options={"secret": CRM_SECRET, "scope": ["a", "b"]},
            api_url=crm_wix.url,
        )
        with TokenBrokers(Config(store="memory://", apps={"crm": app})) as brokers:
            assert brokers["crm"].token("inst-1").access_token
            (config,) = recorded
            assert dict(config.options) == {"secret": CRM_SECRET, "scope": ["a", "b"]}
            assert config.store is brokers.store
            assert not config.app_secret  # none given: an empty Secret
            assert CRM_SECRET not in repr(config)

    def test_tokenbroker_passes_provider_options_through(
        self, recorded: list[ProviderConfig], crm_wix: WixEmulator
    ) -> None:
        with TokenBroker(
            app_id=CRM_ID,
            provider="recorder",
            provider_options={"secret": CRM_SECRET},
            store="memory://",
            api_url=crm_wix.url,
        ) as broker:
            assert broker.token("inst-1").access_token in crm_wix.issued_tokens_for("inst-1")
        assert recorded[0].store is broker.store

    def test_wix_still_needs_the_app_secret(self) -> None:
        with pytest.raises(ConfigError, match=r"^app secret is not set \(the wix provider"):
            TokenBroker(app_id="a", store="memory://")
        with pytest.raises(ConfigError, match=r"^app secret is empty$"):
            TokenBroker(app_id="a", app_secret=" ", store="memory://", provider="recorder")

    def test_provider_options_must_be_a_mapping(self) -> None:
        with pytest.raises(ConfigError, match="provider_options must be a mapping, not list"):
            TokenBroker(
                app_id="a",
                app_secret="s",
                store="memory://",
                provider_options=["x"],  # type: ignore[arg-type]
            )


class ListingFails(StoreWrapper):
    """A memory store whose installation listing fails for one app id."""

    def __init__(self, app_id: str) -> None:
        super().__init__(MemoryStore())
        self.app_id = app_id

    def iter_installations(
        self, app_id: str, *, include_removed: bool = False
    ) -> Iterator[Installation]:
        if app_id == self.app_id:
            raise StorageError(f"listing {app_id} failed")
        return super().iter_installations(app_id, include_removed=include_removed)


class TestRefreshingEveryApp:
    def seed(self, brokers: TokenBrokers) -> None:
        brokers["shop"].add_installations(["inst-1", "inst-2"])
        brokers["crm"].add_installation("inst-1")

    def test_every_app_is_walked_with_progress_per_app(
        self, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        seen: list[tuple[str, str]] = []
        totals: dict[str, int] = {}
        with TokenBrokers(two_apps(shop_wix, crm_wix)) as brokers:
            self.seed(brokers)
            reports = brokers.refresh_due(
                concurrency=2,
                progress=lambda name, result: seen.append((name, result.instance_id)),
                on_start=totals.__setitem__,
            )
        assert list(reports) == ["shop", "crm"]
        assert sorted(reports["shop"].refreshed) == ["inst-1", "inst-2"]
        assert reports["crm"].refreshed == ["inst-1"]
        assert totals == {"shop": 2, "crm": 1}
        assert sorted(seen) == [("crm", "inst-1"), ("shop", "inst-1"), ("shop", "inst-2")]
        assert (shop_wix.token_requests, crm_wix.token_requests) == (2, 1)

    def test_one_app_s_refused_credentials_stop_only_that_app(
        self, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        crm_wix.install("inst-2")
        config = two_apps(shop_wix, crm_wix, crm_secret="wrong-secret")
        with TokenBrokers(config) as brokers:
            self.seed(brokers)
            brokers["crm"].add_installation("inst-2")
            reports = brokers.refresh_due(concurrency=1)
        assert sorted(reports["shop"].refreshed) == ["inst-1", "inst-2"]
        crm = reports["crm"]
        assert (crm.refreshed, len(crm.failed), len(crm.skipped)) == ([], 1, 1)
        assert "refused the app's credentials" in crm.skipped[0][1]

    def test_one_app_s_store_error_is_its_report_and_the_others_still_run(
        self, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        store = ListingFails(SHOP_ID)
        with TokenBrokers(two_apps(shop_wix, crm_wix), store=store) as brokers:
            brokers["crm"].add_installation("inst-1")
            reports = brokers.refresh_due()
            assert reports["shop"].error == f"listing {SHOP_ID} failed"
            assert reports["shop"].summary() == f"not run: listing {SHOP_ID} failed"
            assert reports["crm"].refreshed == ["inst-1"]

    def test_apps_limits_the_walk(self, shop_wix: WixEmulator, crm_wix: WixEmulator) -> None:
        with TokenBrokers(two_apps(shop_wix, crm_wix)) as brokers:
            self.seed(brokers)
            assert list(brokers.refresh_due(apps=("crm",))) == ["crm"]
            with pytest.raises(ConfigError, match="unknown app 'x'"):
                brokers.refresh_due(apps=("x",))
        assert shop_wix.token_requests == 0

    async def test_the_async_twin(self, shop_wix: WixEmulator, crm_wix: WixEmulator) -> None:
        seen: list[str] = []
        async with TokenBrokers(two_apps(shop_wix, crm_wix)) as brokers:
            self.seed(brokers)
            reports = await brokers.arefresh_due(progress=lambda name, _: seen.append(name))
            again = await brokers.arefresh_due()
        assert sorted(reports["shop"].refreshed) == ["inst-1", "inst-2"]
        assert reports["crm"].refreshed == ["inst-1"]
        assert sorted(seen) == ["crm", "shop", "shop"]
        assert again["shop"].fresh == ["inst-1", "inst-2"]
        assert again["crm"].fresh == ["inst-1"]
