"""The event envelope: standardized (domain) events, App Installation events,
``accountInfo`` and the paid-plan fields, as the verifier types them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tokenbroker.core.clock import ManualClock
from tokenbroker.testing.webhooks import (
    APP_INSTALLATION_CREATED,
    APP_INSTALLATION_UPDATED,
    app_installation_event,
    domain_event,
    make_key_pair,
    sign_claims,
    sign_domain_event,
    sign_webhook,
    webhook_claims,
)
from tokenbroker.wix.webhooks.events import (
    AccountInfo,
    AppInstallationCreated,
    AppInstallationUpdated,
    DomainEvent,
    DomainEventKind,
    PaidPlanChanged,
    PaidPlanPurchased,
    PlanEvent,
)
from tokenbroker.wix.webhooks.verify import WebhookRejected, WebhookVerifier

NOW = 1_780_000_000.0
APP_ID = "5d1f2c7e-8a34-4b6e-9f0a-3c2b1d4e6f78"
INSTANCE = "7a9e3b1c-2d4f-4e6a-8b0c-1d2e3f4a5b6c"
PRIVATE, PUBLIC = make_key_pair()
CONTACT = "wix.contacts.v4.contact"


@pytest.fixture
def verifier() -> WebhookVerifier:
    return WebhookVerifier(PUBLIC, app_id=APP_ID, clock=ManualClock(start=NOW))


def signed(event: dict[str, Any], **kwargs: Any) -> str:
    kwargs.setdefault("instance_id", INSTANCE)
    kwargs.setdefault("iat", NOW)
    return sign_domain_event(PRIVATE, event, **kwargs)


def with_account_info(info: Any) -> dict[str, Any]:
    """AppRemoved's claims with ``accountInfo`` set to ``info`` exactly."""
    claims = webhook_claims(event_type="AppRemoved", instance_id=INSTANCE, iat=NOW)
    envelope = json.loads(claims["data"])
    envelope["accountInfo"] = info
    return {**claims, "data": json.dumps(envelope)}


def rejected(verifier: WebhookVerifier, token: str, reason: str) -> None:
    with pytest.raises(WebhookRejected) as info:
        verifier.verify(token)
    assert (info.value.status, info.value.reason) == (400, reason)


class TestADomainEvent:
    def test_created_carries_its_envelope_fields_and_the_entity(
        self, verifier: WebhookVerifier
    ) -> None:
        contact = {"id": "c-1", "info": {"name": "Ada"}}
        data = domain_event(
            CONTACT,
            "created",
            entity=contact,
            event_id="5f6e7d8c-event",
            entity_id="c-1",
            event_time="2026-12-02T07:00:00.250Z",
            extra={"entityEventSequence": "7"},
        )
        event = verifier.verify(signed(data))
        assert type(event) is DomainEvent
        assert event.event_type == "wix.contacts.v4.contact_created"
        assert (event.id, event.slug, event.entity_fqdn, event.entity_id) == (
            "5f6e7d8c-event",
            "created",
            CONTACT,
            "c-1",
        )
        assert event.event_time == datetime(2026, 12, 2, 7, 0, 0, 250_000, tzinfo=UTC)
        assert event.occurred_at == event.event_time
        assert event.kind is DomainEventKind.CREATED
        assert event.entity == contact
        assert (event.body, event.modified_fields) == (None, {})
        assert event.entity_event_sequence == "7"
        assert (event.instance_id, event.app_id) == (INSTANCE, None)
        assert event.data == data

    def test_updated_carries_the_current_entity_and_the_modified_fields(
        self, verifier: WebhookVerifier
    ) -> None:
        data = domain_event(
            CONTACT, "updated", entity={"id": "c-1"}, modified_fields={"info.name": "Bo"}
        )
        event = verifier.verify(signed(data))
        assert isinstance(event, DomainEvent)
        assert event.kind is DomainEventKind.UPDATED
        assert (event.entity, event.modified_fields) == ({"id": "c-1"}, {"info.name": "Bo"})

    @pytest.mark.parametrize("entity", [{"id": "c-1"}, None])
    def test_deleted_carries_the_deleted_entity_when_there_is_one(
        self, verifier: WebhookVerifier, entity: dict[str, Any] | None
    ) -> None:
        event = verifier.verify(signed(domain_event(CONTACT, "deleted", entity=entity)))
        assert isinstance(event, DomainEvent)
        assert (event.kind, event.entity) == (DomainEventKind.DELETED, entity)

    def test_an_action_carries_its_body(self, verifier: WebhookVerifier) -> None:
        data = domain_event("wix.bookings.v2.booking", "confirmed", body={"booking": {"x": 1}})
        event = verifier.verify(signed(data))
        assert isinstance(event, DomainEvent)
        assert (event.kind, event.body, event.entity) == (
            DomainEventKind.ACTION,
            {"booking": {"x": 1}},
            None,
        )

    @pytest.mark.parametrize(
        ("key", "inner", "field"),
        [
            ("createdEvent", "entityAsJson", "entity"),
            ("updatedEvent", "currentEntityAsJson", "entity"),
            ("deletedEvent", "deletedEntityAsJson", "entity"),
            ("actionEvent", "bodyAsJson", "body"),
        ],
    )
    def test_the_rest_spelling_with_json_strings_is_read_too(
        self, verifier: WebhookVerifier, key: str, inner: str, field: str
    ) -> None:
        data = {"id": "e-1", "entityFqdn": CONTACT, "slug": "x", key: {inner: '{"a": 1}'}}
        event = verifier.verify(signed(data, event_type="some_event"))
        assert isinstance(event, DomainEvent)
        assert getattr(event, field) == {"a": 1}

    def test_without_an_event_time_it_occurred_when_it_was_issued(
        self, verifier: WebhookVerifier
    ) -> None:
        data = domain_event(CONTACT, "created", extra={"eventTime": None})
        event = verifier.verify(signed(data))
        assert isinstance(event, DomainEvent)
        assert event.event_time is None
        assert event.occurred_at == event.issued_at == datetime.fromtimestamp(NOW, tz=UTC)

    def test_without_an_id_its_id_is_none(self, verifier: WebhookVerifier) -> None:
        event = verifier.verify(signed(domain_event(CONTACT, "created", event_id=None)))
        assert isinstance(event, DomainEvent)
        assert event.id is None

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            ({"id": 42}, "bad event id"),
            ({"id": "e\n1"}, "bad event id"),
            ({"id": "e" * 300}, "bad event id"),
            ({"eventTime": "yesterday"}, "bad eventTime"),
            ({"eventTime": 1780000000}, "bad eventTime"),
            ({"eventTime": "2026-12-02T07:00:00"}, "bad eventTime"),  # no zone
            ({"slug": 7}, "malformed domain event"),
            ({"entityId": ["c-1"]}, "malformed domain event"),
            ({"createdEvent": "not an object"}, "malformed domain event"),
            ({"createdEvent": {"entity": [1, 2]}}, "malformed domain event"),
            ({"createdEvent": {"entityAsJson": "{oops"}}, "malformed domain event"),
        ],
    )
    def test_a_malformed_field_is_a_400(
        self, verifier: WebhookVerifier, change: dict[str, Any], reason: str
    ) -> None:
        data = {**domain_event(CONTACT, "created"), **change}
        rejected(verifier, signed(data, event_type="wix.contacts.v4.contact_created"), reason)

    def test_a_malformed_modified_fields_is_a_400(self, verifier: WebhookVerifier) -> None:
        data = domain_event(CONTACT, "updated")
        data["updatedEvent"]["modifiedFields"] = ["info.name"]
        rejected(verifier, signed(data), "malformed domain event")

    def test_an_unknown_entity_needs_the_envelope_instance_id(
        self, verifier: WebhookVerifier
    ) -> None:
        data = domain_event(CONTACT, "created", entity={"instanceId": INSTANCE})
        rejected(verifier, signed(data, instance_id=None), "bad instanceId")


class TestAppInstallationEvents:
    def test_created_is_typed_and_names_its_instance_and_app(
        self, verifier: WebhookVerifier
    ) -> None:
        data = app_installation_event("created", app_id=APP_ID, instance_id=INSTANCE)
        token = signed(data)
        event = verifier.verify(token)
        assert type(event) is AppInstallationCreated
        assert event.event_type == APP_INSTALLATION_CREATED
        assert (event.instance_id, event.app_id, event.status) == (INSTANCE, APP_ID, "INSTALLED")
        assert event.entity_fqdn == "wix.app.installations.v1.app_installation"

    @pytest.mark.parametrize("status", ["INSTALLED", "UNINSTALLED"])
    def test_updated_is_typed_with_its_status(self, verifier: WebhookVerifier, status: str) -> None:
        data = app_installation_event("updated", app_id=APP_ID, instance_id=INSTANCE, status=status)
        event = verifier.verify(signed(data))
        assert type(event) is AppInstallationUpdated
        assert event.event_type == APP_INSTALLATION_UPDATED
        assert event.status == status

    def test_the_entity_s_instance_id_is_used_when_the_envelope_has_none(
        self, verifier: WebhookVerifier
    ) -> None:
        data = app_installation_event("created", app_id=APP_ID, instance_id=INSTANCE)
        assert verifier.verify(signed(data, instance_id=None)).instance_id == INSTANCE

    def test_the_entity_s_instance_id_wins_over_the_envelope_s(
        self, verifier: WebhookVerifier
    ) -> None:
        data = app_installation_event("created", app_id=APP_ID, instance_id=INSTANCE)
        assert verifier.verify(signed(data, instance_id="other")).instance_id == INSTANCE

    def test_one_for_another_app_is_refused(self, verifier: WebhookVerifier) -> None:
        data = app_installation_event("created", app_id="someone-else", instance_id=INSTANCE)
        rejected(verifier, signed(data), "event for another app")

    def test_a_bad_entity_instance_id_is_refused(self, verifier: WebhookVerifier) -> None:
        data = app_installation_event("created", app_id=APP_ID, instance_id="inst\n1")
        rejected(verifier, signed(data), "bad instanceId")


class TestAccountInfo:
    def test_is_kept_on_the_event(self, verifier: WebhookVerifier) -> None:
        token = sign_webhook(
            PRIVATE,
            event_type="AppInstalled",
            instance_id=INSTANCE,
            data={"appId": APP_ID},
            iat=NOW,
            account_info={"accountId": "acc-1", "parentAccountId": "acc-0", "siteId": "site-1"},
        )
        assert verifier.verify(token).account_info == AccountInfo("acc-1", "acc-0", "site-1")

    def test_on_a_domain_event_too_and_empty_ids_are_absent(
        self, verifier: WebhookVerifier
    ) -> None:
        token = signed(
            domain_event(CONTACT, "created"),
            account_info={"accountId": "acc-1", "parentAccountId": None, "siteId": ""},
        )
        assert verifier.verify(token).account_info == AccountInfo("acc-1", None, None)

    @pytest.mark.parametrize("info", [None, {}, {"siteId": None}])
    def test_absent_or_empty_is_none(
        self, verifier: WebhookVerifier, info: dict[str, Any] | None
    ) -> None:
        token = sign_webhook(
            PRIVATE, event_type="AppRemoved", instance_id=INSTANCE, iat=NOW, account_info=info
        )
        assert verifier.verify(token).account_info is None

    def test_a_json_string_of_one_is_accepted_defensively(self, verifier: WebhookVerifier) -> None:
        token = sign_claims(PRIVATE, with_account_info(json.dumps({"accountId": "acc-2"})))
        assert verifier.verify(token).account_info == AccountInfo("acc-2")

    @pytest.mark.parametrize(
        ("info", "reason"),
        [
            ([1], "malformed accountInfo"),
            ("{oops", "malformed accountInfo"),
            ({"accountId": 7}, "bad accountInfo"),
            ({"siteId": "site\r\n1"}, "bad accountInfo"),
        ],
    )
    def test_a_malformed_one_is_a_400(
        self, verifier: WebhookVerifier, info: Any, reason: str
    ) -> None:
        rejected(verifier, sign_claims(PRIVATE, with_account_info(info)), reason)


class TestPlanEvents:
    def test_a_purchase_reads_its_plan_fields(self, verifier: WebhookVerifier) -> None:
        token = sign_webhook(
            PRIVATE,
            event_type="PaidPlanPurchased",
            instance_id=INSTANCE,
            iat=NOW,
            data={
                "appId": APP_ID,
                "vendorProductId": "premium",
                "cycle": "YEARLY",
                "expiresOn": "2027-12-02T07:00:00.000Z",
                "operationTimeStamp": "2026-12-02T07:00:00.000Z",
            },
        )
        event = verifier.verify(token)
        assert isinstance(event, PaidPlanPurchased)
        assert isinstance(event, PlanEvent)
        assert (event.vendor_product_id, event.cycle, event.expires_on) == (
            "premium",
            "YEARLY",
            "2027-12-02T07:00:00.000Z",
        )
        assert event.operation_time == "2026-12-02T07:00:00.000Z"

    def test_absent_or_non_string_fields_read_as_none(self, verifier: WebhookVerifier) -> None:
        token = sign_webhook(
            PRIVATE,
            event_type="PaidPlanChanged",
            instance_id=INSTANCE,
            iat=NOW,
            data={"appId": APP_ID, "vendorProductId": 5, "cycle": ""},
        )
        event = verifier.verify(token)
        assert isinstance(event, PaidPlanChanged)
        assert (event.vendor_product_id, event.cycle, event.expires_on) == (None, None, None)
