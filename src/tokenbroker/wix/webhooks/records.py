"""What a verified webhook event does to the installation registry.

Pure decisions, no I/O: the facade reads the current record, asks ``apply``
for the new one, and writes it with the store's compare-and-set (newest
``updated_at``, i.e. the JWT's ``iat``, wins). A repeated delivery produces the
identical record, which the store reports as unchanged; an old ``AppInstalled``
arriving after a newer ``AppRemoved`` loses to it.
"""

from __future__ import annotations

from typing import Any

import attrs

from ...core.installation import Installation, InstallationStatus
from .events import AppInstalled, AppRemoved, WebhookEvent


def apply(event: WebhookEvent, app_id: str, current: Installation | None) -> Installation | None:
    """The record ``event`` asks for, or ``None`` if it does not touch the registry."""
    extra: dict[str, Any] = dict(current.extra) if current is not None else {}
    if isinstance(event, AppInstalled):
        if event.identity:
            extra["identity"] = dict(event.identity)
        keep_setup = current is not None and current.active
        return Installation(
            app_id=app_id,
            instance_id=event.instance_id,
            status=InstallationStatus.INSTALLED,
            installed_at=event.issued_at,
            removed_at=None,
            setup_finished_at=current.setup_finished_at if keep_setup and current else None,
            origin_instance_id=event.origin_instance_id,
            updated_at=event.issued_at,
            extra=extra,
        )
    if isinstance(event, AppRemoved):
        base = current or Installation(app_id=app_id, instance_id=event.instance_id)
        return attrs.evolve(
            base,
            status=InstallationStatus.REMOVED,
            removed_at=event.issued_at,
            updated_at=event.issued_at,
            extra=extra,
        )
    return None
