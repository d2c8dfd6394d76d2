"""An installation of the app on one Wix site (an *app instance*)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs


class InstallationStatus(enum.Enum):
    INSTALLED = "installed"
    REMOVED = "removed"


@attrs.frozen
class Installation:
    """What the app knows about one installation.

    ``updated_at`` is the time of the event that produced this record (for a
    webhook, the JWT's ``iat``). Stores keep the record with the latest
    ``updated_at``, so late or repeated deliveries cannot undo newer news.
    """

    app_id: str
    instance_id: str
    status: InstallationStatus = InstallationStatus.INSTALLED
    installed_at: datetime | None = None
    removed_at: datetime | None = None
    setup_finished_at: datetime | None = None
    origin_instance_id: str | None = None
    updated_at: datetime | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    @property
    def active(self) -> bool:
        return self.status is InstallationStatus.INSTALLED

    def to_json(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            "instance_id": self.instance_id,
            "app_id": self.app_id,
            "status": self.status.value,
            "installed_at": iso(self.installed_at),
            "removed_at": iso(self.removed_at),
            "setup_finished_at": iso(self.setup_finished_at),
            "origin_instance_id": self.origin_instance_id,
            "updated_at": iso(self.updated_at),
            "extra": dict(self.extra),
        }
