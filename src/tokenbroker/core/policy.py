"""When a token should be refreshed: the advisory and mandatory windows.

Learned from botocore, msal and google-auth. A token goes through four states:

``FRESH``      serve it.
``ADVISORY``   serve it, and let one caller refresh early; if that refresh
               fails, log it and keep serving the still-valid token.
``MANDATORY``  too close to expiry to hand out: every caller waits for a
               refresh, and errors raise.
``EXPIRED``    never handed out.

The windows are fractions of the token's lifetime, so a 4-hour Wix token and a
5-minute legacy token are both handled sensibly. The start of the advisory
window is pulled earlier by a random jitter, chosen once when the token is
stamped and stored with it, so a fleet does not refresh at one instant.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable

import attrs

from .clock import to_datetime, to_timestamp
from .errors import ConfigError
from .token import Token


class TokenState(enum.Enum):
    FRESH = "fresh"
    ADVISORY = "advisory"
    MANDATORY = "mandatory"
    EXPIRED = "expired"

    @property
    def servable(self) -> bool:
        return self in (TokenState.FRESH, TokenState.ADVISORY)


def _fraction(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"RefreshPolicy.{attribute.name} must be in [0, 1), not {value!r}")


@attrs.frozen
class RefreshPolicy:
    """Refresh windows as fractions of a token's lifetime.

    Defaults for a 4-hour token: the advisory window opens 30 to 45 minutes
    before expiry (12.5 % of the lifetime, plus up to 50 % of that as jitter)
    and the mandatory window 12 minutes before (5 %, at least 10 seconds).
    """

    advisory_fraction: float = attrs.field(default=0.125, validator=_fraction)
    mandatory_fraction: float = attrs.field(default=0.05, validator=_fraction)
    min_mandatory_seconds: float = 10.0
    jitter: float = attrs.field(default=0.5, validator=_fraction)
    random: Callable[[], float] = attrs.field(default=random.random, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.mandatory_fraction > self.advisory_fraction:
            raise ConfigError(
                "RefreshPolicy.mandatory_fraction must not exceed advisory_fraction "
                f"({self.mandatory_fraction} > {self.advisory_fraction})"
            )
        seconds = self.min_mandatory_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ConfigError("RefreshPolicy.min_mandatory_seconds must be a number of seconds")
        if not 0 <= seconds < math.inf:  # also false for NaN
            raise ConfigError(
                "RefreshPolicy.min_mandatory_seconds must be finite and not negative, "
                f"not {seconds}"
            )

    def windows(self, obtained: float, expires: float, draw: float) -> tuple[float, float]:
        """Return (refresh_at, must_refresh_at) as timestamps for a token's life."""
        lifetime = max(expires - obtained, 0.0)
        mandatory = max(lifetime * self.mandatory_fraction, self.min_mandatory_seconds)
        must_refresh_at = max(expires - mandatory, obtained)
        advisory = lifetime * self.advisory_fraction * (1.0 + self.jitter * draw)
        refresh_at = min(max(expires - advisory, obtained), must_refresh_at)
        return refresh_at, must_refresh_at

    def stamp(self, token: Token) -> Token:
        """Return ``token`` with its refresh times set (jitter drawn now)."""
        refresh_at, must_refresh_at = self.windows(
            to_timestamp(token.obtained_at), to_timestamp(token.expires_at), self.random()
        )
        return attrs.evolve(
            token,
            refresh_at=to_datetime(refresh_at),
            must_refresh_at=to_datetime(must_refresh_at),
        )

    def thresholds(self, token: Token) -> tuple[float, float, float]:
        """(refresh_at, must_refresh_at, expires_at) timestamps, stamping unstamped tokens
        without jitter (a third-party store may not keep the stamps)."""
        expires = to_timestamp(token.expires_at)
        if token.refresh_at is None or token.must_refresh_at is None:
            refresh_at, must = self.windows(to_timestamp(token.obtained_at), expires, 0.0)
            return refresh_at, must, expires
        return to_timestamp(token.refresh_at), to_timestamp(token.must_refresh_at), expires

    def state(self, token: Token, now: float) -> TokenState:
        return state_at(self.thresholds(token), now)


def state_at(thresholds: tuple[float, float, float], now: float) -> TokenState:
    refresh_at, must_refresh_at, expires = thresholds
    if now < refresh_at:
        return TokenState.FRESH
    if now < must_refresh_at:
        return TokenState.ADVISORY
    if now < expires:
        return TokenState.MANDATORY
    return TokenState.EXPIRED
