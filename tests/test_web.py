"""The webhook service over real HTTP: verification, bookkeeping, hooks after the answer."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx2
import pytest

from tokenbroker import ConfigError, InstallationStatus, TokenBroker, hookimpl, store_from_url
from tokenbroker.plugins import plugin_manager, reset_plugins
from tokenbroker.service.app import check_webhooks, create_app
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.webhooks import forge_hs256, forge_none, make_key_pair, sign_webhook
from tokenbroker.wix.webhooks.events import AppInstalled, WebhookEvent

from .conftest import APP_ID, APP_SECRET
from .webhook_helpers import running, wait_until

PRIVATE, PUBLIC = make_key_pair()
OTHER_PRIVATE, _ = make_key_pair(fresh=True)


class Recorder:
    """A plugin that records what it is told and can be made slow or broken."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.gate: threading.Event | None = None
        self.fail = False

    def _note(self, kind: str, event: WebhookEvent) -> None:
        if self.gate is not None:
            assert self.gate.wait(30)
        if self.fail:
            raise RuntimeError("recorder broke on purpose")
        self.events.append((kind, event.instance_id))

    def plugin(self) -> object:
        @hookimpl
        def tokenbroker_app_installed(event: AppInstalled, broker: TokenBroker) -> None:
            self._note("installed", event)

        @hookimpl
        def tokenbroker_app_removed(event: WebhookEvent, broker: TokenBroker) -> None:
            self._note("removed", event)

        @hookimpl
        def tokenbroker_webhook_event(event: WebhookEvent, broker: TokenBroker) -> None:
            self.events.append(("any", event.event_type))

        return SimpleNamespace(
            tokenbroker_app_installed=tokenbroker_app_installed,
            tokenbroker_app_removed=tokenbroker_app_removed,
            tokenbroker_webhook_event=tokenbroker_webhook_event,
        )


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    reset_plugins()
    rec = Recorder()
    plugin_manager().register(rec.plugin(), name="recorder")
    yield rec
    reset_plugins()


@pytest.fixture
def hook_broker(wix_emulator: WixEmulator, sqlite_url: str) -> Iterator[TokenBroker]:
    with TokenBroker(
        app_id=APP_ID,
        app_secret=APP_SECRET,
        store=sqlite_url,
        api_url=wix_emulator.url,
        public_key=PUBLIC,
    ) as broker:
        yield broker


@pytest.fixture
def service(hook_broker: TokenBroker) -> Iterator[httpx2.Client]:
    with (
        running(create_app(hook_broker, max_body_bytes=16 * 1024)) as url,
        httpx2.Client(base_url=url, timeout=10) as client,
    ):
        yield client


def installed(instance: str, iat: float | None = None, **kw: Any) -> str:
    data = {"appId": APP_ID, "originInstanceId": "origin-1"}
    return sign_webhook(
        PRIVATE, event_type="AppInstalled", instance_id=instance, data=data, iat=iat, **kw
    )


def removed(instance: str, iat: float | None = None) -> str:
    return sign_webhook(
        PRIVATE, event_type="AppRemoved", instance_id=instance, data={"appId": APP_ID}, iat=iat
    )


def post(client: httpx2.Client, body: str | bytes) -> httpx2.Response:
    return client.post("/webhooks/wix", content=body, headers={"Content-Type": "text/plain"})


class TestVerifiedEvents:
    def test_app_installed_is_recorded_before_the_answer_and_hooks_run_after(
        self, service: httpx2.Client, hook_broker: TokenBroker, recorder: Recorder
    ) -> None:
        response = post(service, installed("inst-1"))
        assert response.status_code == 200
        assert response.json() == {"ok": True, "news": True, "duplicate": False}
        record = hook_broker.get_installation("inst-1")
        assert record is not None
        assert record.status is InstallationStatus.INSTALLED
        assert record.origin_instance_id == "origin-1"
        wait_until(lambda: ("installed", "inst-1") in recorder.events, "the install hook")
        wait_until(lambda: ("any", "AppInstalled") in recorder.events, "the event hook")

    def test_an_unknown_event_type_is_answered_200_and_reaches_the_generic_hook(
        self, service: httpx2.Client, recorder: Recorder
    ) -> None:
        body = sign_webhook(PRIVATE, event_type="SomethingNew", instance_id="inst-1")
        assert post(service, body).status_code == 200
        wait_until(lambda: ("any", "SomethingNew") in recorder.events, "the event hook")

    def test_app_removed_marks_removed_and_purges_tokens(
        self, service: httpx2.Client, hook_broker: TokenBroker, recorder: Recorder
    ) -> None:
        post(service, installed("inst-1", iat=time.time() - 10))
        hook_broker.token("inst-1")
        assert post(service, removed("inst-1")).status_code == 200
        record = hook_broker.get_installation("inst-1")
        assert record is not None
        assert record.status is InstallationStatus.REMOVED
        assert hook_broker.store.get_token(hook_broker.key("inst-1")) is None
        assert hook_broker.engine.near is not None
        assert hook_broker.engine.near.get(hook_broker.key("inst-1")) is None
        wait_until(lambda: ("removed", "inst-1") in recorder.events, "the removal hook")


class TestRepeatsAndOrder:
    def test_a_repeated_delivery_is_idempotent_and_fires_hooks_once(
        self, service: httpx2.Client, recorder: Recorder
    ) -> None:
        body = installed("inst-1")
        first, second = post(service, body), post(service, body)
        assert first.json()["news"] is True
        assert second.status_code == 200
        assert second.json()["news"] is False
        assert second.json()["duplicate"] is True
        wait_until(lambda: ("installed", "inst-1") in recorder.events, "the install hook")
        post(service, removed("inst-2"))  # a later event flushes the hook queue
        wait_until(lambda: ("removed", "inst-2") in recorder.events, "the later hook")
        assert recorder.events.count(("installed", "inst-1")) == 1

    def test_an_older_install_delivered_after_a_newer_removal_does_not_resurrect(
        self, service: httpx2.Client, hook_broker: TokenBroker
    ) -> None:
        now = time.time()
        assert post(service, removed("inst-1", iat=now)).status_code == 200
        late = post(service, installed("inst-1", iat=now - 30))
        assert late.status_code == 200
        assert late.json()["news"] is False
        record = hook_broker.get_installation("inst-1")
        assert record is not None
        assert record.status is InstallationStatus.REMOVED

    def test_a_newer_install_after_a_removal_reinstalls(
        self, service: httpx2.Client, hook_broker: TokenBroker
    ) -> None:
        now = time.time()
        post(service, removed("inst-1", iat=now - 30))
        assert post(service, installed("inst-1", iat=now)).json()["news"] is True
        record = hook_broker.get_installation("inst-1")
        assert record is not None
        assert record.active


class TestForgeries:
    @pytest.mark.parametrize(
        ("body", "status"),
        [
            (sign_webhook(OTHER_PRIVATE, event_type="AppInstalled", instance_id="x"), 401),
            (
                forge_none(
                    {
                        "data": json.dumps({"eventType": "AppInstalled", "instanceId": "x"}),
                        "iat": int(time.time()),
                    }
                ),
                401,
            ),
            (
                forge_hs256(
                    PUBLIC,
                    {
                        "data": json.dumps({"eventType": "AppInstalled", "instanceId": "x"}),
                        "iat": int(time.time()),
                    },
                ),
                401,
            ),
            (
                sign_webhook(
                    PRIVATE,
                    event_type="AppInstalled",
                    instance_id="x",
                    iat=time.time() - 3600,
                    exp=time.time() - 1800,
                ),
                401,
            ),
            ("not.a.jwt", 400),
            ("garbage", 400),
            ("", 400),
        ],
        ids=[
            "other-key",
            "alg-none",
            "hs256-public-key",
            "expired",
            "malformed",
            "garbage",
            "empty",
        ],
    )
    def test_unverifiable_bodies_are_refused_with_a_short_reason_and_record_nothing(
        self, service: httpx2.Client, hook_broker: TokenBroker, body: str, status: int
    ) -> None:
        response = post(service, body)
        assert response.status_code == status
        reason = response.json()["error"]
        assert reason
        assert "Traceback" not in response.text
        assert len(reason) < 80
        assert hook_broker.installations(include_removed=True) == []

    def test_an_oversized_body_is_refused_with_413_before_parsing(
        self, service: httpx2.Client, hook_broker: TokenBroker
    ) -> None:
        response = post(service, b"x" * (17 * 1024))
        assert response.status_code == 413

    def test_an_oversized_chunked_body_is_refused_with_413(self, service: httpx2.Client) -> None:
        def chunks() -> Iterator[bytes]:
            for _ in range(40):
                yield b"y" * 1024

        response = service.post("/webhooks/wix", content=chunks())
        assert response.status_code == 413


class TestRejectionsAreLogged:
    @pytest.mark.parametrize(
        ("body", "status"),
        [
            (sign_webhook(OTHER_PRIVATE, event_type="AppInstalled", instance_id="x"), 401),
            ("garbage", 400),
            (b"x" * (17 * 1024), 413),
        ],
        ids=["forged", "garbage", "oversized"],
    )
    def test_each_rejection_is_logged_at_info_with_status_and_reason(
        self,
        service: httpx2.Client,
        caplog: pytest.LogCaptureFixture,
        body: str | bytes,
        status: int,
    ) -> None:
        with caplog.at_level(logging.INFO, logger="tokenbroker.service"):
            response = post(service, body)
            assert response.status_code == status
            expected = f"webhook rejected: {status} {response.json()['error']}"
            wait_until(lambda: expected in caplog.text, "the rejection to be logged")
        (record,) = [r for r in caplog.records if "webhook rejected" in r.getMessage()]
        assert record.levelno == logging.INFO
        assert record.name == "tokenbroker.service"
        assert "garbage" not in record.getMessage()  # the reason, never the body


class TestSlowAndBrokenHooks:
    def test_a_slow_hook_does_not_delay_the_answer(
        self, service: httpx2.Client, hook_broker: TokenBroker, recorder: Recorder
    ) -> None:
        recorder.gate = threading.Event()  # the hook blocks until the test says so
        response = post(service, installed("inst-1"))
        # answered while the hook is still blocked: the answer did not wait for it
        assert response.status_code == 200
        assert recorder.events == []
        assert hook_broker.get_installation("inst-1") is not None
        recorder.gate.set()
        wait_until(lambda: ("installed", "inst-1") in recorder.events, "the released hook")

    def test_a_failing_hook_is_logged_with_its_plugin_name_and_breaks_nothing(
        self,
        service: httpx2.Client,
        hook_broker: TokenBroker,
        recorder: Recorder,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        recorder.fail = True
        with caplog.at_level(logging.ERROR, logger="tokenbroker.plugins"):
            assert post(service, installed("inst-1")).status_code == 200
            wait_until(lambda: "'recorder'" in caplog.text, "the failure to be logged")
        assert "tokenbroker_app_installed" in caplog.text
        assert hook_broker.get_installation("inst-1") is not None
        wait_until(lambda: ("any", "AppInstalled") in recorder.events, "the other hook")
        assert hook_broker.token("inst-1").access_token


class TestHealth:
    def test_healthz_reports_a_reachable_store(self, service: httpx2.Client) -> None:
        response = service.get("/healthz")
        assert response.status_code == 200
        assert response.json()["status"] == "ok"

    def test_healthz_reports_an_unreachable_store(
        self, wix_emulator: WixEmulator, tmp_path: Path
    ) -> None:
        blocker = tmp_path / "f"
        blocker.write_text("x")
        broken = TokenBroker(
            app_id=APP_ID,
            app_secret=APP_SECRET,
            store=f"sqlite:///{blocker}/x.db",
            api_url=wix_emulator.url,
            public_key=PUBLIC,
        )
        with running(create_app(broken)) as url:
            response = httpx2.get(url + "/healthz")
        assert response.status_code == 503
        assert response.json()["status"] == "degraded"


class TestAutoFinishSetup:
    @pytest.fixture
    def auto_service(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> Iterator[tuple[httpx2.Client, TokenBroker]]:
        reset_plugins()
        broker = TokenBroker(
            app_id=APP_ID,
            app_secret=APP_SECRET,
            store=sqlite_url,
            api_url=wix_emulator.url,
            public_key=PUBLIC,
            auto_finish_setup=True,
        )
        with running(create_app(broker)) as url, httpx2.Client(base_url=url) as client:
            yield client, broker
        broker.close()

    def test_a_new_installation_gets_app_finished_configuration(
        self, auto_service: tuple[httpx2.Client, TokenBroker], wix_emulator: WixEmulator
    ) -> None:
        client, broker = auto_service
        post(client, installed("inst-1"))
        wait_until(
            lambda: wix_emulator.bi_events == [("inst-1", "APP_FINISHED_CONFIGURATION")],
            "the BI event",
        )
        wait_until(
            lambda: broker.get_installation("inst-1").setup_finished_at is not None,  # type: ignore[union-attr]
            "setup to be recorded",
        )

    def test_when_wix_is_unreachable_setup_is_retried_later(
        self, auto_service: tuple[httpx2.Client, TokenBroker], wix_emulator: WixEmulator
    ) -> None:
        client, broker = auto_service
        wix_emulator.fail_next(503, endpoint="apps/v1/bi-event", times=3)
        post(client, installed("inst-1"))
        wait_until(
            lambda: bool(broker.get_installation("inst-1").extra.get("setup_pending")),  # type: ignore[union-attr]
            "the installation to be marked pending",
        )
        assert wix_emulator.bi_events == []
        assert broker.retry_pending_setup() == ["inst-1"]
        assert wix_emulator.bi_events == [("inst-1", "APP_FINISHED_CONFIGURATION")]
        record = broker.get_installation("inst-1")
        assert record is not None
        assert "setup_pending" not in record.extra


def test_base64_wrapped_public_keys_are_accepted_by_the_broker(
    wix_emulator: WixEmulator,
) -> None:
    wrapped = base64.b64encode(PUBLIC.encode()).decode()
    with TokenBroker(
        app_id=APP_ID,
        app_secret=APP_SECRET,
        store="memory://",
        api_url=wix_emulator.url,
        public_key=wrapped,
    ) as broker:
        outcome = broker.handle_webhook(installed("inst-9"))
    assert outcome.news


class TestManyApps:
    """``POST /webhooks/wix/{name}`` per app; ``/webhooks/wix`` only for a single app."""

    SHOP_PRIVATE, SHOP_PUBLIC = make_key_pair("shop-app")
    CRM_PRIVATE, CRM_PUBLIC = make_key_pair("crm-app")

    @pytest.fixture
    def apps(self, wix_emulator: WixEmulator) -> Iterator[dict[str, TokenBroker]]:
        store = store_from_url("memory://")
        brokers = {
            name: TokenBroker(
                app_id=f"{name}-id",
                app_secret=APP_SECRET,
                store=store,
                api_url=wix_emulator.url,
                public_key=public,
            )
            for name, public in (("shop", self.SHOP_PUBLIC), ("crm", self.CRM_PUBLIC))
        }
        yield brokers
        for broker in brokers.values():
            broker.close()
        store.close()

    def installed(self, private: str, app_id: str, instance: str) -> str:
        return sign_webhook(
            private, event_type="AppInstalled", instance_id=instance, data={"appId": app_id}
        )

    def test_each_app_takes_its_own_deliveries(self, apps: dict[str, TokenBroker]) -> None:
        with running(create_app(apps)) as url, httpx2.Client(base_url=url) as client:
            shop = client.post(
                "/webhooks/wix/shop", content=self.installed(self.SHOP_PRIVATE, "shop-id", "s-1")
            )
            crm = client.post(
                "/webhooks/wix/crm", content=self.installed(self.CRM_PRIVATE, "crm-id", "c-1")
            )
            # the shop's key does not verify for the crm app
            crossed = client.post(
                "/webhooks/wix/crm", content=self.installed(self.SHOP_PRIVATE, "crm-id", "c-2")
            )
        assert (shop.status_code, crm.status_code, crossed.status_code) == (200, 200, 401)
        assert [i.instance_id for i in apps["shop"].installations()] == ["s-1"]
        assert [i.instance_id for i in apps["crm"].installations()] == ["c-1"]

    def test_the_bare_route_with_several_apps_names_the_route_to_use(
        self, apps: dict[str, TokenBroker]
    ) -> None:
        body = self.installed(self.SHOP_PRIVATE, "shop-id", "s-1")
        with running(create_app(apps)) as url:
            bare = httpx2.post(url + "/webhooks/wix", content=body)
            unknown = httpx2.post(url + "/webhooks/wix/billing", content=body)
        assert bare.status_code == 404
        assert bare.json() == {
            "error": "2 apps are served: post to /webhooks/wix/{name} (apps: shop, crm)"
        }
        assert unknown.status_code == 404
        assert unknown.json() == {"error": "unknown app"}
        assert apps["shop"].installations() == []

    def test_one_app_takes_both_routes(self, hook_broker: TokenBroker) -> None:
        with running(create_app(hook_broker)) as url:
            bare = httpx2.post(url + "/webhooks/wix", content=installed("inst-1"))
            named = httpx2.post(url + "/webhooks/wix/default", content=installed("inst-2"))
        assert (bare.status_code, named.status_code) == (200, 200)
        assert {i.instance_id for i in hook_broker.installations()} == {"inst-1", "inst-2"}

    def test_an_app_without_a_public_key_is_refused_at_start_unless_another_can_verify(
        self, apps: dict[str, TokenBroker], wix_emulator: WixEmulator
    ) -> None:

        keyless = TokenBroker(
            app_id="keyless-id",
            app_secret=APP_SECRET,
            store=apps["shop"].store,
            api_url=wix_emulator.url,
        )
        with pytest.raises(ConfigError, match="TOKENBROKER_APP_PUBLIC_KEY"):
            check_webhooks({"keyless": keyless}, required=True)
        check_webhooks({**apps, "keyless": keyless}, required=True)  # a warning only
        check_webhooks({"keyless": keyless}, required=False)  # the token API has work
        keyless.close()
