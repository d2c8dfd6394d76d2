"""What a paid-plan event does to the installation's record: ``extra["plan"]``.

Pure decisions, no I/O, like ``records``. The plan is what the newest plan
event says, newest by ``occurred_at`` (the JWT's ``iat``; a tie goes to the
greater event, so the result does not depend on arrival order): a late, older
delivery never overwrites a newer plan. It is kept as::

    {"vendor_product_id": "premium", "cycle": "YEARLY",
     "expires_on": "2027-01-01T00:00:00Z", "event": "PaidPlanPurchased",
     "at": "2026-12-02T07:00:00+00:00"}

``expires_on`` is ``None`` when the newest event carries none (seen in Wix's SDK:
only ``PaidPlanPurchased``, ``PlanConvertedToPaid`` and ``PlanReactivated`` have
``expiresOn``). The plan's record keeps the ``updated_at`` it had, which orders
installs and removals only; an instance with no record yet gets an installed one
without an event time (as ``installations.add`` makes), so that its
``AppInstalled`` is still news when it comes (assumed: Wix sends plan events
only for installed apps).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from ...core.installation import Installation
from .events import PlanEvent
from .records import with_account_info

PLAN: Final = "plan"
"""The key in ``Installation.extra`` that holds the installation's plan."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def plan_of(event: PlanEvent) -> dict[str, Any]:
    """The ``extra["plan"]`` that ``event`` describes."""
    return {
        "vendor_product_id": event.vendor_product_id,
        "cycle": event.cycle,
        "expires_on": event.expires_on,
        "event": event.event_type,
        "at": event.occurred_at.isoformat(),
    }


def apply_plan(event: PlanEvent, app_id: str, current: Installation | None) -> Installation | None:
    """The record with ``event``'s plan (and account info), or ``None`` if it says
    nothing newer than ``current`` already does."""
    if current is None:
        current = Installation(app_id=app_id, instance_id=event.instance_id)
        changed = True
    else:
        changed = False
    extra = dict(current.extra)
    new = plan_of(event)
    old = extra.get(PLAN)
    if not isinstance(old, Mapping) or _order(old) < _order(new):
        extra[PLAN] = new
        changed = True
    changed = with_account_info(extra, event) or changed
    return attrs.evolve(current, extra=extra) if changed else None


def _order(plan: Mapping[str, Any]) -> tuple[datetime, str]:
    try:
        at = datetime.fromisoformat(str(plan.get("at")))
    except ValueError:
        at = _EPOCH  # hand-edited or damaged: any real plan replaces it
    if at.utcoffset() is None:
        at = _EPOCH
    return at, repr(sorted(plan.items(), key=lambda item: item[0]))
