"""From a verified JWT's claims to a typed event: the ``data`` claim's envelope.

The ``data`` claim is a JSON *string* (Wix's SDK refuses anything else:
``parseJWT`` in ``@wix/sdk`` ``event-handlers-modules.js``), holding
``{"eventType", "instanceId", "data": <JSON string>, "identity": <JSON string>,
"accountInfo": {"accountId", "parentAccountId", "siteId"}}``. The nested
``data`` is the event's own fields, or, for a standardized event, a domain
event envelope (``tokenbroker.wix.webhooks.domain``).

Every id that reaches a store key or a log line is checked with ``validate_id``;
a bad one is a 400 with a short fixed reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ...core.errors import ConfigError
from ...core.token import validate_id
from ..errors import WebhookRejected
from . import domain
from .events import (
    EVENT_CLASSES,
    AccountInfo,
    AppInstallationCreated,
    AppInstallationUpdated,
    AppInstalled,
    WebhookEvent,
)

__all__ = ["event_from_claims", "json_object"]


def event_from_claims(
    claims: Mapping[str, Any], issued_at: datetime, *, app_id: str | None
) -> WebhookEvent:
    """The event in verified ``claims``; ``app_id``, when given, refuses other apps'."""
    if "data" not in claims:
        raise WebhookRejected(400, "no data claim")
    if not isinstance(claims["data"], str):
        raise WebhookRejected(400, "data claim not a string")
    envelope = json_object(claims["data"])
    if envelope is None:
        raise WebhookRejected(400, "malformed data claim")
    event_type = checked_id(envelope.get("eventType"), "event type", "bad eventType")
    data = _nested_object(envelope.get("data"))
    if data is None:
        raise WebhookRejected(400, "malformed nested data")
    identity = _nested_object(envelope.get("identity"))
    if identity is None:
        raise WebhookRejected(400, "malformed identity")
    common: dict[str, Any] = {
        "event_type": event_type,
        "issued_at": issued_at,
        "data": data,
        "identity": identity,
        "account_info": _account_info(envelope.get("accountInfo")),
    }

    if domain.is_domain_event(data):
        parts = domain.parse(data)
        installation = issubclass(parts.cls, AppInstallationCreated | AppInstallationUpdated)
        entity = parts.entity or {}
        # The App Installation names its instance and app itself (documented fields of
        # the App Installation object); other entities' fields are not about the app.
        if installation and entity.get("instanceId") is not None:
            instance_id = checked_id(entity["instanceId"], "instance id", "bad instanceId")
        else:
            instance_id = checked_id(envelope.get("instanceId"), "instance id", "bad instanceId")
        event_app = _app_id(entity.get("appId")) if installation else None
        _check_app(event_app, app_id)
        return parts.cls(**common, instance_id=instance_id, app_id=event_app, **parts.fields)

    instance_id = checked_id(envelope.get("instanceId"), "instance id", "bad instanceId")
    event_app = _app_id(data.get("appId"))
    _check_app(event_app, app_id)
    cls = EVENT_CLASSES.get(event_type, WebhookEvent)
    if issubclass(cls, AppInstalled):
        origin = data.get("originInstanceId")
        # Wix sends "" (or nothing) when the site was not copied from another.
        if origin is None or origin == "":
            origin_id = None
        else:
            origin_id = checked_id(origin, "origin instance id", "bad originInstanceId")
        return cls(
            **common, instance_id=instance_id, app_id=event_app, origin_instance_id=origin_id
        )
    return cls(**common, instance_id=instance_id, app_id=event_app)


def json_object(raw: bytes | str) -> dict[str, Any] | None:
    """Parse a JSON object, or return None; deep nesting is malformed, not a crash."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def checked_id(value: object, what: str, reason: str) -> str:
    """``value`` if it is a usable id, else ``WebhookRejected(400, reason)``."""
    # Ids reach store keys and log lines: validate_id refuses control characters.
    try:
        return validate_id(value, what)
    except ConfigError:
        raise WebhookRejected(400, reason) from None


def _nested_object(value: object) -> dict[str, Any] | None:
    """Wix nests objects as JSON strings (``parseJWT`` JSON-parses them); a decoded
    object is accepted too, defensively. Absent is empty."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return json_object(value)
    return None


def _app_id(value: object) -> str | None:
    return None if value is None else checked_id(value, "app id", "bad appId")


def _check_app(event_app: str | None, app_id: str | None) -> None:
    # A shared webhook URL or a copied key must not let one app act on another's
    # installations.
    if app_id is not None and event_app is not None and event_app != app_id:
        raise WebhookRejected(400, "event for another app")


def _account_info(value: object) -> AccountInfo | None:
    """``accountInfo``: an object in the envelope (``parseJWT`` passes it on as it
    is); a JSON string of one is accepted too, defensively. Empty ids are absent."""
    if value is None:
        return None
    found = json_object(value) if isinstance(value, str) else value
    if not isinstance(found, dict):
        raise WebhookRejected(400, "malformed accountInfo")
    ids: dict[str, str | None] = {}
    for key, name in (
        ("accountId", "account_id"),
        ("parentAccountId", "parent_account_id"),
        ("siteId", "site_id"),
    ):
        raw = found.get(key)
        ids[name] = None if raw is None or raw == "" else checked_id(raw, key, "bad accountInfo")
    if not any(ids.values()):
        return None
    return AccountInfo(**ids)
