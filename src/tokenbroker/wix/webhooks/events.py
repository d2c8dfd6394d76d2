"""Typed Wix webhook events, as the hooks receive them.

A Wix webhook body is a JWT (RS256). Its ``data`` claim is a JSON *string*
``{"eventType", "instanceId", "data": <JSON string>, "identity": <JSON string>,
"accountInfo": {...}}`` (seen in Wix's SDK: ``@wix/sdk`` ``event-handlers-modules.js``
``parseJWT``, and the ``MessageEnvelope`` type of ``@wix/auto_sdk_app-management_app-instances``).
``tokenbroker.wix.webhooks.verify.WebhookVerifier.verify`` checks the signature and
turns it into one of these classes:

* the app-instance events (``AppInstalled``, ``AppRemoved``, the paid-plan events),
  whose nested ``data`` is the event's own fields;
* standardized ("domain") events, whose nested ``data`` is an envelope
  ``{id, slug, entityFqdn, entityId, eventTime, createdEvent | updatedEvent |
  deletedEvent | actionEvent, ...}``: a ``DomainEvent``, or a subclass such as
  ``AppInstallationCreated`` for the entities tokenbroker knows.

An event type tokenbroker does not know becomes a plain ``WebhookEvent`` (or a
plain ``DomainEvent``), so new Wix events reach plugins without a release.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Final

import attrs

APP_INSTALLATION_FQDN: Final = "wix.app.installations.v1.app_installation"
"""The entity of the App Installations API's events (documented: "App Installation
Created" / "App Installation Updated", dev.wix.com/docs/api-reference/app-management/
app-installations)."""


@attrs.frozen
class AccountInfo:
    """The ``accountInfo`` of the data claim: the Wix account the event concerns.

    Seen in Wix's SDK (``MessageEnvelope.accountInfo`` in
    ``@wix/auto_sdk_app-management_app-instances``; ``parseJWT`` passes it on):
    ``accountId``; ``parentAccountId`` only when the account is a child account;
    ``siteId`` only when the event is tied to a site.
    """

    account_id: str | None = None
    parent_account_id: str | None = None
    site_id: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {
            "account_id": self.account_id,
            "parent_account_id": self.parent_account_id,
            "site_id": self.site_id,
        }


@attrs.frozen
class WebhookEvent:
    """Any verified Wix webhook event.

    ``issued_at`` is the JWT's ``iat``; ``occurred_at`` is when the event happened
    (a domain event's ``eventTime``, else the ``iat``): the order of events for one
    instance is decided by it, not by arrival. ``data`` and ``identity`` are the
    parsed nested JSON objects (empty when absent); ``account_info`` is the data
    claim's ``accountInfo`` (``None`` when absent).
    """

    event_type: str
    instance_id: str
    app_id: str | None
    issued_at: datetime
    data: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    identity: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    account_info: AccountInfo | None = None

    EVENT_TYPE: ClassVar[str | None] = None

    @property
    def occurred_at(self) -> datetime:
        """When the event happened, as far as the event says: here, its ``iat``."""
        return self.issued_at


@attrs.frozen
class AppInstalled(WebhookEvent):
    """The app was installed on a site; ``origin_instance_id`` is set when the site
    was copied from another one that had the app."""

    origin_instance_id: str | None = None

    EVENT_TYPE: ClassVar[str | None] = "AppInstalled"


@attrs.frozen
class AppRemoved(WebhookEvent):
    EVENT_TYPE: ClassVar[str | None] = "AppRemoved"


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


@attrs.frozen
class PlanEvent(WebhookEvent):
    """A paid-plan event of the app instance.

    The fields are seen in Wix's SDK (the ``PaidPlanPurchased``, ``PaidPlanChanged``,
    ``PaidPlanAutoRenewalCancelled``, ``PlanConvertedToPaid``, ``PlanReactivated`` and
    ``PlanTransferred`` types of ``@wix/auto_sdk_app-management_app-instances``):
    ``vendorProductId`` (the plan), ``cycle`` (``MONTHLY``, ``YEARLY``, ...),
    ``expiresOn`` (only on purchase, conversion to paid and reactivation) and
    ``operationTimeStamp``, all in the nested ``data``. Absent or non-string
    values read as ``None``.
    """

    @property
    def vendor_product_id(self) -> str | None:
        return _text(self.data.get("vendorProductId"))

    @property
    def cycle(self) -> str | None:
        return _text(self.data.get("cycle"))

    @property
    def expires_on(self) -> str | None:
        """The plan's expiry as Wix sent it (an ISO 8601 timestamp), or ``None``."""
        return _text(self.data.get("expiresOn"))

    @property
    def operation_time(self) -> str | None:
        """``operationTimeStamp``: when the purchase, change or cancellation happened."""
        return _text(self.data.get("operationTimeStamp"))


@attrs.frozen
class PaidPlanPurchased(PlanEvent):
    EVENT_TYPE: ClassVar[str | None] = "PaidPlanPurchased"


@attrs.frozen
class PaidPlanChanged(PlanEvent):
    """An upgrade or downgrade; the nested data also has ``previousVendorProductId``
    and ``previousCycle`` (seen in Wix's SDK)."""

    EVENT_TYPE: ClassVar[str | None] = "PaidPlanChanged"


@attrs.frozen
class PaidPlanAutoRenewalCancelled(PlanEvent):
    """The plan, or its auto-renewal, was cancelled: it stays usable until the end
    of the current cycle (documented in the SDK's event description)."""

    EVENT_TYPE: ClassVar[str | None] = "PaidPlanAutoRenewalCancelled"


@attrs.frozen
class PlanConvertedToPaid(PlanEvent):
    """A free trial ended and the site owner was charged."""

    EVENT_TYPE: ClassVar[str | None] = "PlanConvertedToPaid"


@attrs.frozen
class PlanReactivated(PlanEvent):
    """Auto-renewal was turned back on; the nested data also has ``reason``."""

    EVENT_TYPE: ClassVar[str | None] = "PlanReactivated"


@attrs.frozen
class PlanTransferred(PlanEvent):
    """The paid plan moved to another Wix account (see ``account_info``)."""

    EVENT_TYPE: ClassVar[str | None] = "PlanTransferred"


class DomainEventKind(enum.Enum):
    """Which body a domain event carries (seen in Wix's SDK, ``runHandler``)."""

    CREATED = "created"  # createdEvent.entity
    UPDATED = "updated"  # updatedEvent.currentEntity (+ modifiedFields)
    DELETED = "deleted"  # deletedEvent.deletedEntity (may be absent)
    ACTION = "action"  # actionEvent.body


@attrs.frozen
class DomainEvent(WebhookEvent):
    """A standardized Wix event about an entity (``entity_fqdn``).

    ``id`` is Wix's event id, documented as the way to ignore duplicate
    deliveries; ``slug`` the action (``created``, ``updated``, ``deleted``, or an
    action's name); ``event_time`` the documented ``eventTime``. ``kind`` says
    which body came: ``entity`` (the created, current or deleted entity) or
    ``body`` (an action's), and ``modified_fields`` for an update.
    ``entity_event_sequence`` orders updates of one entity (seen in Wix's SDK
    typings; a decimal string).
    """

    id: str | None = None
    slug: str | None = None
    entity_fqdn: str | None = None
    entity_id: str | None = None
    event_time: datetime | None = None
    kind: DomainEventKind | None = None
    entity: Mapping[str, Any] | None = attrs.field(default=None, hash=False)
    body: Mapping[str, Any] | None = attrs.field(default=None, hash=False)
    modified_fields: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    entity_event_sequence: str | None = None

    FQDN: ClassVar[str | None] = None
    SLUG: ClassVar[str | None] = None

    @property
    def occurred_at(self) -> datetime:
        """The ``eventTime``, or the ``iat`` when the event has none."""
        return self.event_time if self.event_time is not None else self.issued_at


@attrs.frozen
class AppInstallationCreated(DomainEvent):
    """The app's first installation on a site (documented: later uninstalls and
    reinstalls update the same App Installation and fire ``AppInstallationUpdated``).
    ``entity`` is the App Installation object."""

    FQDN: ClassVar[str | None] = APP_INSTALLATION_FQDN
    SLUG: ClassVar[str | None] = "created"

    @property
    def status(self) -> str | None:
        """The installation's ``status`` (``INSTALLED`` or ``UNINSTALLED``)."""
        return _text((self.entity or {}).get("status"))


@attrs.frozen
class AppInstallationUpdated(DomainEvent):
    """The App Installation changed; ``status == "UNINSTALLED"`` is an uninstall
    (documented: "filter for status set to UNINSTALLED"), ``"INSTALLED"`` after one
    a reinstall (the status flips between the two; the instance id stays)."""

    FQDN: ClassVar[str | None] = APP_INSTALLATION_FQDN
    SLUG: ClassVar[str | None] = "updated"

    @property
    def status(self) -> str | None:
        """The installation's ``status`` (``INSTALLED`` or ``UNINSTALLED``)."""
        return _text((self.entity or {}).get("status"))


EVENT_CLASSES: dict[str, type[WebhookEvent]] = {
    cls.EVENT_TYPE: cls
    for cls in (
        AppInstalled,
        AppRemoved,
        PaidPlanPurchased,
        PaidPlanChanged,
        PaidPlanAutoRenewalCancelled,
        PlanConvertedToPaid,
        PlanReactivated,
        PlanTransferred,
    )
    if cls.EVENT_TYPE is not None
}
"""The app-instance events, by ``eventType`` (seen in Wix's SDK: the
``EventDefinition`` names in ``@wix/auto_sdk_app-management_app-instances``)."""

DOMAIN_CLASSES: dict[tuple[str, str], type[DomainEvent]] = {
    (cls.FQDN, cls.SLUG): cls
    for cls in (AppInstallationCreated, AppInstallationUpdated)
    if cls.FQDN is not None and cls.SLUG is not None
}
"""The domain events tokenbroker knows, by ``(entityFqdn, slug)``: both documented,
unlike their ``eventType`` (assumed ``<entityFqdn>_<slug>``, the pattern seen in
Wix's SDK, e.g. ``wix.headless.v1.redirect_session_created`` with slug ``created``)."""


def domain_event_type(fqdn: str, slug: str) -> str:
    """The ``eventType`` of a domain event (assumed, after the SDK's pattern)."""
    return f"{fqdn}_{slug}"
