"""An installation's health, as token fetching has seen it: healthy, failing or dead.

``healthy``  the last fetch worked (or none failed yet).
``failing``  Wix refused the last fetch with an error about this installation; the
             broker backs off (see ``tokenbroker.core.health_policy``) and, until
             ``next_attempt``, hands callers the remembered error without asking Wix.
``dead``     Wix says the app is not installed on the instance, or the registry
             records it as removed: no token is fetched for it until it is
             installed again (an ``AppInstalled`` webhook, ``installations add``).

Where it is kept: one reserved record per installation in the store's installation
registry, under the app id ``tokenbroker~health~<app id>`` (the encryption marker's
way, ``tokenbroker~meta``), with the health in ``extra["health"]`` and ``updated_at``
the time of the write. Every replica sharing the store sees it; webhook writes to the
installation's own record (whose ``extra["deliveries"]`` rebuild it) never touch it;
and the token hit path never reads or writes it: only a fetch from Wix does.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs

from .errors import ProviderError
from .installation import Installation

log = logging.getLogger("tokenbroker")

RESERVED_PREFIX: Final = "tokenbroker~"
"""App ids that start with this are tokenbroker's own records, never an app's."""
HEALTH_PREFIX: Final = "tokenbroker~health~"
HEALTH_KEY: Final = "health"
"""The key in the reserved record's ``extra`` that holds the health."""
_MAX_APP_ID: Final = 128  # the narrowest app id column of the SQL stores

NOT_INSTALLED: Final = "not_installed"
"""``dead_reason``: Wix answered that the app is not installed on the instance."""
REMOVED: Final = "removed"
"""``dead_reason``: the registry records the installation as removed."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)


class HealthState(enum.Enum):
    HEALTHY = "healthy"
    FAILING = "failing"
    DEAD = "dead"


def is_reserved(app_id: str) -> bool:
    """Whether ``app_id`` names tokenbroker's own records (the health records, the
    encryption marker): such ids are never an app's and never listed as one."""
    return app_id.startswith(RESERVED_PREFIX)


def health_app_id(app_id: str) -> str:
    """The reserved app id under which ``app_id``'s health records are kept.

    ``tokenbroker~health~<app id>``; an app id too long for that to fit the SQL
    stores' 128-character column is replaced by its SHA-256 (``~#<hex>``).
    """
    name = HEALTH_PREFIX + app_id
    if len(name) <= _MAX_APP_ID:
        return name
    return f"{HEALTH_PREFIX}#{hashlib.sha256(app_id.encode()).hexdigest()}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@attrs.frozen
class RecordedError:
    """The error Wix last gave for an installation: enough to raise it again.

    ``kind`` is the class name (``ProviderError``, ``RateLimited``, ...); ``message``
    is the error's text, which never holds the app secret or a token.
    """

    kind: str
    message: str
    request_id: str | None = None
    status: int | None = None
    code: str | None = None
    wix_message: str | None = None
    retry_after: float | None = None

    @classmethod
    def of(cls, error: ProviderError) -> RecordedError:
        # Wix's x-wix-request-id, what its support asks for (seen in Wix's SDK:
        # auth/AppStrategy.js quotes it in its token-exchange errors).
        request_id = getattr(error, "request_id", None)
        retry_after = getattr(error, "retry_after", None)
        return cls(
            kind=type(error).__name__,
            message=str(error),
            request_id=request_id if isinstance(request_id, str) else None,
            status=error.status,
            code=error.code,
            wix_message=error.wix_message,
            retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.kind,
            "message": self.message,
            "request_id": self.request_id,
            "status": self.status,
            "code": self.code,
            "wix_message": self.wix_message,
            "retry_after": self.retry_after,
        }


@attrs.frozen
class InstallationHealth:
    """What token fetching knows of one installation.

    ``since`` is when the current state began (``None``: never recorded);
    ``failures`` counts the failed fetches since the installation was last
    healthy; ``error`` is the last one; ``next_attempt`` is when a failing
    installation may be asked for again; ``backoff`` the last wait drawn, in
    seconds (the back-off grows from it). ``dead_reason`` is ``"not_installed"``
    or ``"removed"``; ``registry_at`` the registry record's ``updated_at`` when
    the installation was found dead (a newer install of it revives it).
    ``last_token_at`` and ``next_refresh_at`` belong to the last token minted.
    """

    instance_id: str
    state: HealthState = HealthState.HEALTHY
    since: datetime | None = None
    failures: int = 0
    error: RecordedError | None = None
    next_attempt: datetime | None = None
    backoff: float = 0.0
    dead_reason: str | None = None
    registry_at: datetime | None = None
    last_token_at: datetime | None = None
    next_refresh_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def healthy(self) -> bool:
        return self.state is HealthState.HEALTHY

    @property
    def failing(self) -> bool:
        return self.state is HealthState.FAILING

    @property
    def dead(self) -> bool:
        return self.state is HealthState.DEAD

    @property
    def failing_since(self) -> datetime | None:
        """When the installation began failing, while it is failing."""
        return self.since if self.failing else None

    def backing_off(self, now: float) -> bool:
        """Whether Wix must not be asked for this installation at ``now``."""
        if self.dead:
            return True
        return (
            self.failing and self.next_attempt is not None and now < self.next_attempt.timestamp()
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "state": self.state.value,
            "since": _iso(self.since),
            "failing_since": _iso(self.failing_since),
            "failures": self.failures,
            "last_error": None if self.error is None else self.error.to_json(),
            "next_attempt": _iso(self.next_attempt),
            "dead_reason": self.dead_reason,
            "last_token_at": _iso(self.last_token_at),
            "next_refresh_at": _iso(self.next_refresh_at),
            "updated_at": _iso(self.updated_at),
        }


# -- the reserved record ---------------------------------------------------------------
def _micros(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - _EPOCH) // _US


def _moment(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not a time: {value!r}")
    return _EPOCH + value * _US


def to_record(app_id: str, health: InstallationHealth) -> Installation:
    """The reserved registry record that keeps ``health`` for ``app_id``."""
    error = health.error
    fields: dict[str, Any] = {
        "v": 1,
        "state": health.state.value,
        "since": _micros(health.since),
        "failures": health.failures,
        "error": None if error is None else attrs.asdict(error),
        "next_attempt": _micros(health.next_attempt),
        "backoff": health.backoff,
        "dead_reason": health.dead_reason,
        "registry_at": _micros(health.registry_at),
        "last_token_at": _micros(health.last_token_at),
        "next_refresh_at": _micros(health.next_refresh_at),
    }
    return Installation(
        app_id=health_app_id(app_id),
        instance_id=health.instance_id,
        updated_at=health.updated_at,
        extra={HEALTH_KEY: fields},
    )


def from_record(record: Installation | None) -> InstallationHealth | None:
    """The health a reserved record keeps; ``None`` for none, or a damaged one (with a
    warning: the installation then counts as healthy until the next fetch)."""
    if record is None:
        return None
    fields = record.extra.get(HEALTH_KEY)
    try:
        if not isinstance(fields, Mapping):
            raise ValueError("no health object")
        return _parse(record.instance_id, fields, record.updated_at)
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring the damaged health record of %s: %s", record.instance_id, exc)
        return None


def _parse(
    instance_id: str, fields: Mapping[str, Any], updated_at: datetime | None
) -> InstallationHealth:
    raw_error = fields.get("error")
    error = None
    if raw_error is not None:
        if not isinstance(raw_error, Mapping):
            raise ValueError("error is not an object")
        error = RecordedError(
            kind=str(raw_error["kind"]),
            message=str(raw_error["message"]),
            request_id=_text(raw_error.get("request_id")),
            status=_integer(raw_error.get("status")),
            code=_text(raw_error.get("code")),
            wix_message=_text(raw_error.get("wix_message")),
            retry_after=_number(raw_error.get("retry_after")),
        )
    failures = _integer(fields.get("failures")) or 0
    return InstallationHealth(
        instance_id=instance_id,
        state=HealthState(fields.get("state")),
        since=_moment(fields.get("since")),
        failures=max(failures, 0),
        error=error,
        next_attempt=_moment(fields.get("next_attempt")),
        backoff=_number(fields.get("backoff")) or 0.0,
        dead_reason=_text(fields.get("dead_reason")),
        registry_at=_moment(fields.get("registry_at")),
        last_token_at=_moment(fields.get("last_token_at")),
        next_refresh_at=_moment(fields.get("next_refresh_at")),
        updated_at=updated_at,
    )


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"not a string: {value!r}")


def _integer(value: object) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError(f"not an integer: {value!r}")


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"not a number: {value!r}")
