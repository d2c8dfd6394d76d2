"""What a verified webhook event does to the installation registry.

Pure decisions, no I/O: the broker reads the current record, asks ``apply`` for
the ``Change``, and writes it with the store's compare-and-set (newest
``updated_at``, i.e. the JWT's ``iat``, wins).

The record is a function of the *set* of installs and removals delivered so far
(kept, bounded, in ``extra["deliveries"]``), never of their arrival order: Wix
delivers late, repeated and out of order. In ``iat`` order, with a removal
winning a tie:

* the newest delivery decides the status (and ``removed_at``, ``updated_at``);
* an active period begins with the first install after a removal: that install
  gives ``installed_at``, the origin and the identity; another install within
  the period is not news and changes none of them;
* news, for the hooks, is a change of status, or the first delivery about an
  installation (a record made by hand included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs

from ...core.installation import Installation, InstallationStatus
from .events import AppInstalled, AppRemoved, WebhookEvent

DELIVERIES: Final = "deliveries"
"""The key in ``Installation.extra`` that holds the deliveries seen."""
MAX_DELIVERIES: Final = 32
"""How many deliveries a record keeps (the newest): installs and removals are rare."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_INSTALL, _REMOVAL = "installed", "removed"  # a removal sorts after an install of equal iat


@attrs.frozen
class Change:
    """The record to write, and whether it is news (a change worth the hooks). A late
    or repeated delivery that only fills in older facts is written, not news."""

    record: Installation
    news: bool


@attrs.frozen(order=True)
class _Delivery:
    at: int  # iat, integer microseconds since the epoch
    kind: str
    origin: str | None = attrs.field(default=None, order=False)
    identity: Mapping[str, Any] | None = attrs.field(default=None, order=False)

    def to_json(self) -> list[Any]:
        return [self.at, self.kind, self.origin, dict(self.identity or {})]


def touches_registry(event: WebhookEvent) -> bool:
    """Whether ``event`` is about the installation itself (install or removal)."""
    return isinstance(event, AppInstalled | AppRemoved)


def apply(event: WebhookEvent, app_id: str, current: Installation | None) -> Change | None:
    """The change ``event`` asks for, or ``None`` if it does not touch the registry."""
    if not isinstance(event, AppInstalled | AppRemoved):
        return None
    seen = _deliveries(current)
    new = _delivery(event)
    if any((d.at, d.kind) == (new.at, new.kind) for d in seen):
        return Change(current, news=False) if current is not None else None
    deliveries = sorted([*seen, new])[-MAX_DELIVERIES:]
    record = _record(app_id, event.instance_id, deliveries, current)
    # A record made by hand carries no event time: the first webhook about it is news.
    news = current is None or current.updated_at is None or record.status is not current.status
    return Change(record, news=news)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _US


def _moment(micros: int) -> datetime:
    return _EPOCH + micros * _US


def _delivery(event: AppInstalled | AppRemoved) -> _Delivery:
    if isinstance(event, AppRemoved):
        return _Delivery(_micros(event.issued_at), _REMOVAL)
    identity = dict(event.identity) if event.identity else None
    return _Delivery(_micros(event.issued_at), _INSTALL, event.origin_instance_id, identity)


def _deliveries(current: Installation | None) -> list[_Delivery]:
    """The deliveries a record has seen; for a record from before they were kept
    (or made by hand), what its fields say."""
    if current is None:
        return []
    raw = current.extra.get(DELIVERIES)
    if isinstance(raw, list):
        return [d for d in map(_parse, raw) if d is not None]
    seen = []
    if current.installed_at is not None:
        identity = current.extra.get("identity")
        seen.append(
            _Delivery(
                _micros(current.installed_at),
                _INSTALL,
                current.origin_instance_id,
                identity if isinstance(identity, Mapping) else None,
            )
        )
    if current.status is InstallationStatus.REMOVED and current.removed_at is not None:
        seen.append(_Delivery(_micros(current.removed_at), _REMOVAL))
    return seen


def _parse(raw: object) -> _Delivery | None:
    if not isinstance(raw, list) or len(raw) != 4:
        return None
    at, kind, origin, identity = raw
    if not isinstance(at, int) or kind not in (_INSTALL, _REMOVAL):
        return None
    return _Delivery(
        at,
        kind,
        origin if isinstance(origin, str) else None,
        identity if isinstance(identity, Mapping) and identity else None,
    )


def _period_start(deliveries: Sequence[_Delivery]) -> _Delivery | None:
    """The first install after the last removal in ``deliveries`` (sorted)."""
    start = None
    for delivery in deliveries:
        if delivery.kind == _REMOVAL:
            start = None
        elif start is None:
            start = delivery
    return start


def _record(
    app_id: str, instance_id: str, deliveries: list[_Delivery], current: Installation | None
) -> Installation:
    last = deliveries[-1]
    removed = last.kind == _REMOVAL
    installs = [i for i, d in enumerate(deliveries) if d.kind == _INSTALL]
    # Removed, the record keeps what the period before the removal said.
    start = _period_start(deliveries[: installs[-1] + 1]) if installs else None
    installed_at = _moment(start.at) if start is not None else None
    extra = {k: v for k, v in (current.extra if current else {}).items() if k != "identity"}
    if start is not None and start.identity:
        extra["identity"] = dict(start.identity)
    extra[DELIVERIES] = [d.to_json() for d in deliveries]
    same_period = current is not None and current.installed_at == installed_at
    return Installation(
        app_id=app_id,
        instance_id=instance_id,
        status=InstallationStatus.REMOVED if removed else InstallationStatus.INSTALLED,
        installed_at=installed_at,
        removed_at=_moment(last.at) if removed else None,
        # Setup belongs to an active period: a new period has not finished it.
        setup_finished_at=current.setup_finished_at if current and same_period else None,
        origin_instance_id=start.origin if start is not None else None,
        updated_at=_moment(last.at),
        extra=extra,
    )
