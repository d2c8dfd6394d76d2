"""The body of a standardized ("domain") Wix event, parsed and checked.

A domain event's nested ``data`` is the JSON object ``{id, slug, entityFqdn,
entityId, eventTime, triggeredByAnonymizeRequest, originatedFrom,
entityEventSequence}`` plus exactly one body: ``createdEvent{entity}``,
``updatedEvent{currentEntity, modifiedFields}``, ``deletedEvent{deletedEntity}``
or ``actionEvent{body}``. That is how Wix's SDK unpacks it (``runHandler`` in
``@wix/sdk`` ``event-handlers-modules.js``, which also looks for the bodies in
this order: deleted, action, updated, created). The REST typings of the same
messages (``meta.d.ts`` of the ``@wix/auto_sdk_*`` packages) name the bodies
``entityAsJson``, ``currentEntityAsJson``, ``deletedEntityAsJson`` and
``bodyAsJson``, JSON strings: both spellings are read.

Like the rest of the envelope, a field of the wrong type is a 400 with a fixed
reason: the delivery is signed by Wix, so a surprise here means a format change
to look at, not something to guess around.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from ...core.errors import ConfigError
from ...core.token import validate_id
from ..errors import WebhookRejected
from .events import DOMAIN_CLASSES, DomainEvent, DomainEventKind

# (envelope key, kind, entity key, its JSON-string twin), in the SDK's order.
_BODIES: Final = (
    ("deletedEvent", DomainEventKind.DELETED, "deletedEntity", "deletedEntityAsJson"),
    ("actionEvent", DomainEventKind.ACTION, "body", "bodyAsJson"),
    ("updatedEvent", DomainEventKind.UPDATED, "currentEntity", "currentEntityAsJson"),
    ("createdEvent", DomainEventKind.CREATED, "entity", "entityAsJson"),
)
_MALFORMED: Final = "malformed domain event"


@attrs.frozen
class DomainParts:
    """The class a domain event becomes, and its fields beyond the common ones."""

    cls: type[DomainEvent]
    fields: dict[str, Any]

    @property
    def entity(self) -> Mapping[str, Any] | None:
        entity: Mapping[str, Any] | None = self.fields.get("entity")
        return entity


def is_domain_event(data: Mapping[str, Any]) -> bool:
    """Whether the nested ``data`` is a domain event envelope (assumed: by its shape,
    since the SDK knows it from the event's definition, which a receiver lacks)."""
    return isinstance(data.get("entityFqdn"), str) or any(key in data for key, *_ in _BODIES)


def parse(data: Mapping[str, Any]) -> DomainParts:
    """The typed parts of a domain event, or ``WebhookRejected`` (400)."""
    fqdn = _optional_text(data.get("entityFqdn"))
    slug = _optional_text(data.get("slug"))
    fields: dict[str, Any] = {
        "id": _event_id(data.get("id")),
        "slug": slug,
        "entity_fqdn": fqdn,
        "entity_id": _optional_text(data.get("entityId")),
        "event_time": _event_time(data.get("eventTime")),
        "entity_event_sequence": _sequence(data.get("entityEventSequence")),
    }
    for key, kind, entity_key, json_key in _BODIES:
        if data.get(key) is None:
            continue
        body = data[key]
        if not isinstance(body, dict):
            raise WebhookRejected(400, _MALFORMED)
        content = _object(body.get(entity_key))
        if content is None:
            content = _object(body.get(json_key))
        fields["kind"] = kind
        fields["body" if kind is DomainEventKind.ACTION else "entity"] = content
        if kind is DomainEventKind.UPDATED:
            modified = body.get("modifiedFields")
            if modified is not None and not isinstance(modified, dict):
                raise WebhookRejected(400, _MALFORMED)
            fields["modified_fields"] = modified or {}
        break
    cls = DOMAIN_CLASSES.get((fqdn, slug), DomainEvent) if fqdn and slug else DomainEvent
    return DomainParts(cls, fields)


def _optional_text(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise WebhookRejected(400, _MALFORMED)
    return value


def _event_id(value: object) -> str | None:
    if value is None or value == "":
        return None
    try:
        # It names a store key (deduplication) and log lines: no control characters.
        return validate_id(value, "event id")
    except ConfigError:
        raise WebhookRejected(400, "bad event id") from None


def _event_time(value: object) -> datetime | None:
    """``eventTime``: ISO 8601 in UTC, e.g. ``2020-04-26T13:57:50.699Z`` (seen in
    Wix's SDK typings); anything else is a 400, a naive time included."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise WebhookRejected(400, "bad eventTime")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise WebhookRejected(400, "bad eventTime") from None
    if moment.utcoffset() is None:
        raise WebhookRejected(400, "bad eventTime")
    return moment.astimezone(UTC)


def _sequence(value: object) -> str | None:
    # An int64 in proto, so a decimal string in JSON; an int is accepted as well.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.isdigit():
        return value
    return None


def _object(value: object) -> dict[str, Any] | None:
    """An entity or body: an object, or (the REST spelling) a JSON string of one."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except (ValueError, RecursionError):
            raise WebhookRejected(400, _MALFORMED) from None
        if isinstance(decoded, dict):
            return decoded
    raise WebhookRejected(400, _MALFORMED)
