"""What a verified webhook event does to the installation registry.

Pure decisions, no I/O: the broker reads the current record, asks ``apply`` for
the ``Change``, and writes it with the store's compare-and-set (newest
``updated_at``, i.e. the JWT's ``iat``, wins).

Whatever order Wix delivers a set of events in, and however often, the record
ends as it would after delivering them once each in ``iat`` order: the newest
event decides the status, and a late, older ``AppInstalled`` still fills in what
only it knows (when the app was installed, from where, by whom) without being
news. A repeated delivery changes nothing.
"""

from __future__ import annotations

from typing import Any

import attrs

from ...core.installation import Installation, InstallationStatus
from .events import AppInstalled, AppRemoved, WebhookEvent


@attrs.frozen
class Change:
    """The record to write, and whether it is news (a change of state worth the
    hooks). A late event that only fills in older facts is written, not news."""

    record: Installation
    news: bool


def touches_registry(event: WebhookEvent) -> bool:
    """Whether ``event`` is about the installation itself (install or removal)."""
    return isinstance(event, AppInstalled | AppRemoved)


def apply(event: WebhookEvent, app_id: str, current: Installation | None) -> Change | None:
    """The change ``event`` asks for, or ``None`` if it does not touch the registry."""
    if not touches_registry(event):
        return None
    seen_until = current.updated_at if current is not None else None
    if current is not None and seen_until is not None and event.issued_at < seen_until:
        return Change(_late(event, current), news=False)
    if isinstance(event, AppInstalled):
        return Change(_installed(event, app_id, current), news=True)
    base = current or Installation(app_id=app_id, instance_id=event.instance_id)
    removed = attrs.evolve(
        base,
        status=InstallationStatus.REMOVED,
        removed_at=event.issued_at,
        updated_at=event.issued_at,
    )
    return Change(removed, news=True)


def _installed(event: AppInstalled, app_id: str, current: Installation | None) -> Installation:
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
        extra=_with_identity(event, current),
    )


def _late(event: WebhookEvent, current: Installation) -> Installation:
    """``current`` with what an event older than it still tells.

    In ``iat`` order every ``AppInstalled`` sets ``installed_at`` (and the origin
    and identity), and a removal keeps them: so the newest install seen so far
    holds them, whenever it arrived. A late removal tells nothing new.
    """
    if not isinstance(event, AppInstalled):
        return current
    if current.installed_at is not None and current.installed_at >= event.issued_at:
        return current
    return attrs.evolve(
        current,
        installed_at=event.issued_at,
        origin_instance_id=event.origin_instance_id,
        extra=_with_identity(event, current),
    )


def _with_identity(event: AppInstalled, current: Installation | None) -> dict[str, Any]:
    extra: dict[str, Any] = dict(current.extra) if current is not None else {}
    if event.identity:
        extra["identity"] = dict(event.identity)
    return extra
