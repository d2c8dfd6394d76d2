"""Typed Wix webhook events, as the hooks receive them.

A Wix webhook body is a JWT (RS256). Its ``data`` claim is a JSON *string*
``{"eventType", "instanceId", "data": <JSON string>, "identity": <JSON string>}``.
``tokenbroker.wix.webhooks.verify.WebhookVerifier.verify`` checks the signature and
turns it into one of
these classes; an event type tokenbroker does not know becomes a plain
``WebhookEvent``, so new Wix events reach plugins without a release.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

import attrs


@attrs.frozen
class WebhookEvent:
    """Any verified Wix webhook event.

    ``issued_at`` is the JWT's ``iat``: the order of events for one instance is
    decided by it, not by arrival. ``data`` and ``identity`` are the parsed
    nested JSON objects (empty when absent).
    """

    event_type: str
    instance_id: str
    app_id: str | None
    issued_at: datetime
    data: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    identity: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    EVENT_TYPE: ClassVar[str | None] = None


@attrs.frozen
class AppInstalled(WebhookEvent):
    """The app was installed on a site; ``origin_instance_id`` is set when the site
    was copied from another one that had the app."""

    origin_instance_id: str | None = None

    EVENT_TYPE: ClassVar[str | None] = "AppInstalled"


@attrs.frozen
class AppRemoved(WebhookEvent):
    EVENT_TYPE: ClassVar[str | None] = "AppRemoved"


@attrs.frozen
class PaidPlanPurchased(WebhookEvent):
    EVENT_TYPE: ClassVar[str | None] = "PaidPlanPurchased"


@attrs.frozen
class PaidPlanChanged(WebhookEvent):
    EVENT_TYPE: ClassVar[str | None] = "PaidPlanChanged"


@attrs.frozen
class PaidPlanAutoRenewalCancelled(WebhookEvent):
    EVENT_TYPE: ClassVar[str | None] = "PaidPlanAutoRenewalCancelled"


EVENT_CLASSES: dict[str, type[WebhookEvent]] = {
    cls.EVENT_TYPE: cls
    for cls in (
        AppInstalled,
        AppRemoved,
        PaidPlanPurchased,
        PaidPlanChanged,
        PaidPlanAutoRenewalCancelled,
    )
    if cls.EVENT_TYPE is not None
}
