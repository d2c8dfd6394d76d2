"""Turning tokens and installations into stored fields and back, the same way in
every backend.

A record becomes a flat mapping of fields: SQL stores them as columns, Redis
as one JSON document. Times are integer microseconds since the epoch: exact,
portable (no timezone columns, no float rounding), and comparable inside the
database or a Lua script. Reading is strict: anything that cannot be turned
back into a value raises ``Corrupt``, which the backends turn into "missing,
with a warning".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from ..core.installation import Installation, InstallationStatus
from ..core.token import Token, TokenKey

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND: Final = timedelta(microseconds=1)


class Corrupt(Exception):
    """A stored record that cannot be turned back into a value."""


def to_micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: tokenbroker only handles timezone-aware times")
    return (moment - EPOCH) // MICROSECOND


def opt_micros(moment: datetime | None) -> int | None:
    return None if moment is None else to_micros(moment)


def from_micros(value: object, field: str) -> datetime:
    # bool is an int subclass; no driver hands one back for an integer field.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Corrupt(f"{field} is {value!r}")
    try:
        return EPOCH + value * MICROSECOND
    except OverflowError:
        raise Corrupt(f"{field} is out of range") from None


def opt_from_micros(value: object, field: str) -> datetime | None:
    return None if value is None else from_micros(value, field)


def text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise Corrupt(f"{field} is {'empty' if value == '' else type(value).__name__}")
    return value


def token_fields(token: Token) -> dict[str, Any]:
    """A token's stored fields (its key is stored by each backend its own way)."""
    return {
        "access_token": token.access_token,
        "token_type": token.token_type,
        "obtained_at": to_micros(token.obtained_at),
        "expires_at": to_micros(token.expires_at),
        "refresh_at": opt_micros(token.refresh_at),
        "must_refresh_at": opt_micros(token.must_refresh_at),
    }


def token_from_fields(key: TokenKey, fields: Mapping[str, Any]) -> Token:
    """The token ``token_fields`` stored under ``key``; ``Corrupt`` if it cannot be."""
    return Token(
        key=key,
        access_token=text(fields.get("access_token"), "access_token"),
        token_type=text(fields.get("token_type"), "token_type"),
        obtained_at=from_micros(fields.get("obtained_at"), "obtained_at"),
        expires_at=from_micros(fields.get("expires_at"), "expires_at"),
        refresh_at=opt_from_micros(fields.get("refresh_at"), "refresh_at"),
        must_refresh_at=opt_from_micros(fields.get("must_refresh_at"), "must_refresh_at"),
    )


def installation_fields(inst: Installation) -> dict[str, Any]:
    """An installation's stored fields, ``extra`` as a dict (its ids are stored by
    each backend its own way)."""
    return {
        "status": inst.status.value,
        "installed_at": opt_micros(inst.installed_at),
        "removed_at": opt_micros(inst.removed_at),
        "setup_finished_at": opt_micros(inst.setup_finished_at),
        "origin_instance_id": inst.origin_instance_id,
        "updated_at": opt_micros(inst.updated_at),
        "extra": dict(inst.extra),
    }


def installation_from_fields(
    app_id: str, instance_id: str, fields: Mapping[str, Any]
) -> Installation:
    """The installation ``installation_fields`` stored; ``Corrupt`` if it cannot be."""
    status_value = fields.get("status")
    try:
        status = InstallationStatus(status_value)
    except ValueError:
        raise Corrupt(f"status is {status_value!r}") from None
    extra = fields.get("extra")
    if not isinstance(extra, dict):
        raise Corrupt(f"extra is a JSON {type(extra).__name__}, not an object")
    origin = fields.get("origin_instance_id")
    if origin is not None and not isinstance(origin, str):
        raise Corrupt(f"origin_instance_id is {type(origin).__name__}")
    return Installation(
        app_id=app_id,
        instance_id=instance_id,
        status=status,
        installed_at=opt_from_micros(fields.get("installed_at"), "installed_at"),
        removed_at=opt_from_micros(fields.get("removed_at"), "removed_at"),
        setup_finished_at=opt_from_micros(fields.get("setup_finished_at"), "setup_finished_at"),
        origin_instance_id=origin,
        updated_at=opt_from_micros(fields.get("updated_at"), "updated_at"),
        extra=extra,
    )


def json_text(document: Mapping[str, Any], *, ensure_ascii: bool = True) -> str:
    """``document`` as compact JSON with sorted keys: the same record always makes
    the same text, so a compare-and-set can compare stored bytes."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=ensure_ascii)


def json_object(raw: str | bytes, what: str) -> dict[str, Any]:
    """The JSON object stored as ``raw`` (text or UTF-8 bytes); ``Corrupt`` if it is not one."""
    try:
        document = json.loads(raw)
    # TypeError: a driver handed back something else (NULL, say);
    # UnicodeDecodeError is a ValueError; deep nesting is damage, not a crash.
    except (TypeError, ValueError, RecursionError):
        raise Corrupt(f"{what} is not JSON") from None
    if not isinstance(document, dict):
        raise Corrupt(f"{what} is a JSON {type(document).__name__}, not an object")
    return document
