"""What a verified webhook event does to the installation registry.

Pure decisions, no I/O: the broker reads the current record, asks ``apply`` for
the ``Change``, and writes it with the store's compare-and-set (newest
``updated_at``, i.e. the JWT's ``iat``, wins).

The record is a function of the *set* of installs and removals delivered so far
(kept, bounded, in ``extra["deliveries"]``), never of their arrival order: Wix
delivers late, repeated and out of order (documented: "Webhook Resend Policy",
a resent webhook can arrive after a newer one). Installs are ``AppInstalled``,
``AppInstallationCreated`` and ``AppInstallationUpdated`` with status
``INSTALLED``; removals are ``AppRemoved`` and ``AppInstallationUpdated`` with
status ``UNINSTALLED``. In the order of ``event.occurred_at`` (the ``iat``, or a
domain event's ``eventTime``), with a removal winning a tie:

* the newest delivery decides the status (and ``removed_at``, ``updated_at``);
* an active period begins with the first install after a removal: that install
  gives ``installed_at``, the origin and the identity; another install within
  the period is not news and changes none of them (except that the origin comes
  from the first install of the period that knows it: an App Installation event
  carries none);
* news, for the hooks, is a change of status, or the first delivery about an
  installation (a record made by hand included).

``extra["account_info"]`` keeps the ``accountInfo`` of the newest event that
wrote the record and carried one (``with_account_info``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs

from ...core.installation import Installation, InstallationStatus
from .events import (
    AppInstallationCreated,
    AppInstallationUpdated,
    AppInstalled,
    AppRemoved,
    WebhookEvent,
)

DELIVERIES: Final = "deliveries"
"""The key in ``Installation.extra`` that holds the deliveries seen."""
MAX_DELIVERIES: Final = 32
"""How many deliveries a record keeps (the newest): installs and removals are rare."""
ACCOUNT_INFO: Final = "account_info"
"""The key in ``Installation.extra`` that holds the newest ``accountInfo``."""
INSTALLED_STATUS: Final = "INSTALLED"
UNINSTALLED_STATUS: Final = "UNINSTALLED"
"""The App Installation's statuses (documented: it "flips between INSTALLED and
UNINSTALLED", and an uninstall is an update "with status set to UNINSTALLED")."""

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
    at: int  # occurred_at, integer microseconds since the epoch
    kind: str
    origin: str | None = attrs.field(default=None, order=False)
    identity: Mapping[str, Any] | None = attrs.field(default=None, order=False)
    # An App Installation event says nothing of the origin; AppInstalled always does.
    knows_origin: bool = attrs.field(default=True, order=False)

    def to_json(self) -> list[Any]:
        stored = [self.at, self.kind, self.origin, dict(self.identity or {})]
        return stored if self.knows_origin else [*stored, {"origin": "unknown"}]


def registry_kind(event: WebhookEvent) -> str | None:
    """``"installed"`` or ``"removed"`` for an event about the installation itself,
    else ``None`` (an App Installation update with another status included)."""
    if isinstance(event, AppInstalled | AppInstallationCreated):
        return _INSTALL
    if isinstance(event, AppRemoved):
        return _REMOVAL
    if isinstance(event, AppInstallationUpdated):
        return {INSTALLED_STATUS: _INSTALL, UNINSTALLED_STATUS: _REMOVAL}.get(event.status or "")
    return None


def touches_registry(event: WebhookEvent) -> bool:
    """Whether ``event`` is about the installation itself (install or removal)."""
    return registry_kind(event) is not None


def removes(event: WebhookEvent) -> bool:
    """Whether ``event`` is a removal (``AppRemoved``, or an uninstall update)."""
    return registry_kind(event) == _REMOVAL


def apply(event: WebhookEvent, app_id: str, current: Installation | None) -> Change | None:
    """The change ``event`` asks for, or ``None`` if it does not touch the registry."""
    new = _delivery(event)
    if new is None:
        return None
    seen = _deliveries(current)
    if any((d.at, d.kind) == (new.at, new.kind) for d in seen):
        return Change(current, news=False) if current is not None else None
    deliveries = sorted([*seen, new])[-MAX_DELIVERIES:]
    record = _record(app_id, event.instance_id, deliveries, current)
    extra = dict(record.extra)
    if with_account_info(extra, event):
        record = attrs.evolve(record, extra=extra)
    # A record made by hand carries no event time: the first webhook about it is news.
    news = current is None or current.updated_at is None or record.status is not current.status
    return Change(record, news=news)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _US


def _moment(micros: int) -> datetime:
    return _EPOCH + micros * _US


def with_account_info(extra: dict[str, Any], event: WebhookEvent) -> bool:
    """Keep ``event``'s ``accountInfo`` in ``extra`` unless a newer one is there
    (by ``occurred_at``; a tie goes to the greater value, so the result does not
    depend on arrival order); whether ``extra`` changed."""
    if event.account_info is None:
        return False
    new = {**event.account_info.to_json(), "at": event.occurred_at.isoformat()}
    old = extra.get(ACCOUNT_INFO)
    if isinstance(old, Mapping) and _account_key(old) >= _account_key(new):
        return False
    extra[ACCOUNT_INFO] = new
    return True


def _account_key(info: Mapping[str, Any]) -> tuple[datetime, str]:
    try:
        at = datetime.fromisoformat(str(info.get("at")))
    except ValueError:
        at = _EPOCH  # hand-edited or damaged: any real one replaces it
    if at.utcoffset() is None:
        at = _EPOCH
    return at, repr(sorted(info.items()))


def _delivery(event: WebhookEvent) -> _Delivery | None:
    kind = registry_kind(event)
    if kind is None:
        return None
    at = _micros(event.occurred_at)
    if kind == _REMOVAL:
        return _Delivery(at, _REMOVAL)
    identity = dict(event.identity) if event.identity else None
    if isinstance(event, AppInstalled):
        return _Delivery(at, _INSTALL, event.origin_instance_id, identity)
    return _Delivery(at, _INSTALL, None, identity, knows_origin=False)


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
    if not isinstance(raw, list) or len(raw) not in (4, 5):
        return None
    at, kind, origin, identity, *more = raw
    if not isinstance(at, int) or isinstance(at, bool) or kind not in (_INSTALL, _REMOVAL):
        return None
    notes = more[0] if more and isinstance(more[0], Mapping) else {}
    return _Delivery(
        at,
        kind,
        origin if isinstance(origin, str) else None,
        identity if isinstance(identity, Mapping) and identity else None,
        knows_origin=notes.get("origin") != "unknown",
    )


def _origin(deliveries: Sequence[_Delivery], start: _Delivery) -> str | None:
    """The origin of the period that ``start`` begins: its own if it knows it, else
    that of the period's first install that does."""
    if start.knows_origin:
        return start.origin
    begun = False
    for delivery in deliveries:
        begun = begun or delivery is start
        if not begun:
            continue
        if delivery.kind == _REMOVAL:
            break
        if delivery.knows_origin:
            return delivery.origin
    return None


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
        origin_instance_id=_origin(deliveries, start) if start is not None else None,
        updated_at=_moment(last.at),
        extra=extra,
    )
