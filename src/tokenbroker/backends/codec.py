"""Turning values into stored fields and back, the same way in every backend.

Times are stored as integer microseconds since the epoch: exact, portable (no
timezone columns, no float rounding), and comparable inside the database or a
Lua script. Reading is strict: anything that cannot be turned back into a value
raises ``Corrupt``, which the backends turn into "missing, with a warning".
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ..core.token import Token

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
