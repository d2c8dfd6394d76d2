"""The values a token is made of: its key, the token itself, and input checks."""

from __future__ import annotations

import hashlib
import unicodedata
from datetime import datetime
from typing import Final

import attrs

from .clock import to_timestamp
from .errors import ConfigError

MAX_ID_LENGTH: Final = 256


def _mask(_: object) -> str:
    return "'***'"


def validate_id(value: object, what: str = "instance id") -> str:
    """Return ``value`` if it is a usable identifier, else raise ``ConfigError``.

    Identifiers end up in SQL keys, Redis keys, URLs and log lines: blank ones,
    overlong ones and ones with control characters are refused up front.
    """
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ConfigError(f"{what} is empty")
    if value != value.strip():
        raise ConfigError(f"{what} {value.strip()[:40]!r} has leading or trailing whitespace")
    if len(value) > MAX_ID_LENGTH:
        raise ConfigError(f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in value):
        raise ConfigError(f"{what} {value[:40]!r} contains control characters")
    return value


@attrs.frozen(cache_hash=True)
class TokenKey:
    """Which token: the provider that issues it, the app, and the installation."""

    provider: str
    app_id: str
    instance_id: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.app_id}:{self.instance_id}"


@attrs.frozen
class Token:
    """An access token for one installation.

    ``refresh_at`` and ``must_refresh_at`` are stamped by the ``RefreshPolicy``
    when the token is acquired (jitter included) and stored with it, so every
    process sharing a store agrees on when the token becomes due.
    """

    key: TokenKey
    access_token: str = attrs.field(repr=_mask)
    token_type: str
    expires_at: datetime
    obtained_at: datetime
    refresh_at: datetime | None = None
    must_refresh_at: datetime | None = None

    @property
    def instance_id(self) -> str:
        return self.key.instance_id

    @property
    def fingerprint(self) -> str:
        """A short, one-way name for the token, safe for logs and output."""
        return hashlib.sha256(self.access_token.encode()).hexdigest()[:12]

    @property
    def lifetime(self) -> float:
        return to_timestamp(self.expires_at) - to_timestamp(self.obtained_at)

    def expired(self, now: float) -> bool:
        return now >= to_timestamp(self.expires_at)

    def expires_in(self, now: float) -> float:
        return to_timestamp(self.expires_at) - now
