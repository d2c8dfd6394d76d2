"""What a verified webhook event does to the installation registry.

Pure decisions, no I/O: the facade reads the current record, asks ``apply``
for the new one, and writes it with the store's compare-and-set (newest
``updated_at``, i.e. the JWT's ``iat``, wins). A repeated delivery produces the
identical record, which the store reports as unchanged; an old ``AppInstalled``
arriving after a newer ``AppRemoved`` loses to it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs

from .core.installation import Installation, InstallationStatus
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


class SeenDeliveries:
    """Digests of the last deliveries of events that have no registry record to
    deduplicate them (paid-plan events, unknown types). In-process only."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, body: bytes) -> bool:
        digest = hashlib.sha256(body).digest()
        with self._lock:
            if digest in self._seen:
                self._seen.move_to_end(digest)
                return False
            self._seen[digest] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True


@attrs.frozen
class WebhookOutcome:
    """What handling one webhook did. ``news`` is False for a repeated or
    out-of-date delivery; ``hooks`` are the plugin calls still to make (empty
    once run, or when there was no news)."""

    event: WebhookEvent
    news: bool
    hooks: tuple[Callable[[], int], ...] = ()

    def run_hooks(self) -> int:
        """Call the plugin hooks; return how many implementations failed (logged)."""
        return sum(call() for call in self.hooks)
