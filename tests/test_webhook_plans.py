"""Paid-plan events keep the installation's plan on its record, ``extra["plan"]``: the
newest event's, whatever order they arrive in."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner

from tokenbroker import InstallationStatus, TokenBroker
from tokenbroker.cli import main
from tokenbroker.testing.webhooks import make_key_pair
from tokenbroker.testing.webhooks import sign_webhook as _sign_webhook

from .conftest import APP_ID, APP_SECRET
from .webhook_helpers import HookLog, hook_log

PRIVATE, PUBLIC = make_key_pair()
INSTANCE = "inst-plan"
NOW = int(time.time())  # once, at import: so these bodies are signed without an exp


def sign_webhook(private_pem: str, **claims: Any) -> str:
    """A body without ``exp``: NOW is fixed at import, and a slow run must not see the
    bodies of its later tests expire (ordering is by ``iat``, which is what they test)."""
    return _sign_webhook(private_pem, exp=None, **claims)


@pytest.fixture
def log() -> Iterator[HookLog]:
    with hook_log() as found:
        yield found


def new_broker(store: str = "memory://") -> TokenBroker:
    return TokenBroker(app_id=APP_ID, app_secret=APP_SECRET, store=store, public_key=PUBLIC)


@pytest.fixture
def broker() -> Iterator[TokenBroker]:
    with new_broker() as found:
        yield found


def plan_event(kind: str, iat: int, **data: Any) -> str:
    account = data.pop("account_info", None)
    return sign_webhook(
        PRIVATE,
        event_type=kind,
        instance_id=INSTANCE,
        data={"appId": APP_ID, **data},
        iat=iat,
        account_info=account,
    )


def at(iat: int) -> str:
    return datetime.fromtimestamp(iat, tz=UTC).isoformat()


def plan(broker: TokenBroker) -> Any:
    found = broker.installations.get(INSTANCE)
    assert found is not None
    return found.extra.get("plan")


PURCHASED: tuple[str, int, dict[str, Any]] = (
    "PaidPlanPurchased",
    NOW - 30,
    {"vendorProductId": "basic", "cycle": "MONTHLY", "expiresOn": "2027-01-01T00:00:00.000Z"},
)
CHANGED: tuple[str, int, dict[str, Any]] = (
    "PaidPlanChanged",
    NOW - 20,
    {"vendorProductId": "premium", "cycle": "YEARLY", "previousVendorProductId": "basic"},
)
CANCELLED: tuple[str, int, dict[str, Any]] = (
    "PaidPlanAutoRenewalCancelled",
    NOW - 10,
    {"vendorProductId": "premium", "cycle": "YEARLY", "cancelReason": "USER_CANCEL"},
)
REACTIVATED: tuple[str, int, dict[str, Any]] = (
    "PlanReactivated",
    NOW - 5,
    {"vendorProductId": "premium", "cycle": "YEARLY", "expiresOn": "2027-12-01T00:00:00.000Z"},
)


class TestThePlan:
    def test_a_purchase_records_the_plan(self, broker: TokenBroker, log: HookLog) -> None:
        kind, iat, data = PURCHASED
        assert broker.handle_webhook(plan_event(kind, iat, **data)).news
        assert plan(broker) == {
            "vendor_product_id": "basic",
            "cycle": "MONTHLY",
            "expires_on": "2027-01-01T00:00:00.000Z",
            "event": "PaidPlanPurchased",
            "at": at(iat),
        }
        assert log.hooks("event") == ["PaidPlanPurchased"]

    @pytest.mark.parametrize(
        "kind", ["PlanConvertedToPaid", "PlanReactivated", "PlanTransferred", "PaidPlanChanged"]
    )
    def test_every_plan_event_records_it(self, broker: TokenBroker, kind: str) -> None:
        broker.handle_webhook(plan_event(kind, NOW, vendorProductId="pro", cycle="MONTHLY"))
        assert plan(broker)["event"] == kind
        assert plan(broker)["vendor_product_id"] == "pro"

    def test_a_late_older_event_never_overwrites_a_newer_plan(
        self, broker: TokenBroker, log: HookLog
    ) -> None:
        for kind, iat, data in (CHANGED, PURCHASED):  # the purchase arrives last
            broker.handle_webhook(plan_event(kind, iat, **data))
        assert plan(broker)["event"] == "PaidPlanChanged"
        assert plan(broker)["vendor_product_id"] == "premium"
        assert plan(broker)["expires_on"] is None  # a change carries no expiresOn
        assert log.hooks("event") == ["PaidPlanChanged", "PaidPlanPurchased"]  # both heard

    def test_every_arrival_order_ends_with_the_newest_plan(self) -> None:
        events = [PURCHASED, CHANGED, CANCELLED, REACTIVATED]
        bodies = [plan_event(kind, iat, **data) for kind, iat, data in events]
        seen = set()
        for order in itertools.permutations(range(len(bodies))):
            with new_broker() as broker:
                for i in order:
                    broker.handle_webhook(bodies[i])
                seen.add(json.dumps(plan(broker), sort_keys=True))
        assert len(seen) == 1
        assert json.loads(seen.pop()) == {
            "vendor_product_id": "premium",
            "cycle": "YEARLY",
            "expires_on": "2027-12-01T00:00:00.000Z",
            "event": "PlanReactivated",
            "at": at(NOW - 5),
        }

    def test_two_events_of_one_moment_end_the_same_in_either_order(self) -> None:
        a = plan_event("PaidPlanChanged", NOW, vendorProductId="a")
        b = plan_event("PlanTransferred", NOW, vendorProductId="b")
        plans = []
        for order in ((a, b), (b, a)):
            with new_broker() as broker:
                for body in order:
                    broker.handle_webhook(body)
                plans.append(plan(broker))
        assert plans[0] == plans[1]


class TestTheRecord:
    def test_a_plan_before_any_install_makes_an_installed_record_the_install_is_news_to(
        self, broker: TokenBroker, log: HookLog
    ) -> None:
        kind, iat, data = PURCHASED
        broker.handle_webhook(plan_event(kind, iat, **data))
        made = broker.installations.get(INSTANCE)
        assert made is not None
        assert (made.status, made.updated_at) == (InstallationStatus.INSTALLED, None)
        install = sign_webhook(
            PRIVATE,
            event_type="AppInstalled",
            instance_id=INSTANCE,
            data={"appId": APP_ID},
            iat=NOW - 60,
        )
        assert broker.handle_webhook(install).news
        assert log.hooks("installed") == ["AppInstalled"]
        assert plan(broker)["event"] == "PaidPlanPurchased"  # kept by the install

    def test_a_removal_keeps_the_plan_and_a_plan_keeps_the_removal(
        self, broker: TokenBroker
    ) -> None:
        install = sign_webhook(
            PRIVATE, event_type="AppInstalled", instance_id=INSTANCE, iat=NOW - 60
        )
        removal = sign_webhook(PRIVATE, event_type="AppRemoved", instance_id=INSTANCE, iat=NOW)
        kind, iat, data = CANCELLED
        broker.handle_webhook(install)
        broker.handle_webhook(plan_event(kind, iat, **data))
        broker.handle_webhook(removal)
        assert plan(broker)["event"] == "PaidPlanAutoRenewalCancelled"
        kind, iat, data = REACTIVATED
        broker.handle_webhook(plan_event(kind, iat, **data))
        found = broker.installations.get(INSTANCE)
        assert found is not None
        assert found.status is InstallationStatus.REMOVED
        assert found.extra["plan"]["event"] == "PlanReactivated"

    def test_a_transfer_keeps_the_new_account_on_the_record(self, broker: TokenBroker) -> None:
        old = plan_event("PaidPlanPurchased", NOW - 20, account_info={"accountId": "acc-old"})
        moved = plan_event("PlanTransferred", NOW - 10, account_info={"accountId": "acc-new"})
        for body in (moved, old):
            broker.handle_webhook(body)
        found = broker.installations.get(INSTANCE)
        assert found is not None
        assert found.extra["account_info"]["account_id"] == "acc-new"

    def test_installations_list_json_shows_the_plan(self, sqlite_url: str) -> None:
        kind, iat, data = PURCHASED
        with new_broker(sqlite_url) as broker:
            broker.handle_webhook(plan_event(kind, iat, **data))
        result = CliRunner().invoke(
            main,
            ["installations", "list", "--json"],
            env={"TOKENBROKER_APP_ID": APP_ID, "TOKENBROKER_STORE": sqlite_url},
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        (listed,) = json.loads(result.stdout)
        assert listed["instance_id"] == INSTANCE
        assert listed["extra"]["plan"]["vendor_product_id"] == "basic"
        assert listed["extra"]["plan"]["event"] == "PaidPlanPurchased"
