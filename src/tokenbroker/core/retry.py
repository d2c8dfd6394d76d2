"""How many times a provider asks, and how long it waits in between.

Shared by every HTTP provider (Wix's, ``oauth2``): a request that fails in a way worth
retrying (5xx, 408, timeouts, connection errors, a short ``Retry-After``) is sent again
after a full-jitter backoff, within a fixed number of attempts.
"""

from __future__ import annotations

import email.utils
import math
import random

import attrs

from .errors import ProviderError, RateLimited, TransientProviderError


@attrs.frozen
class RetryBudget:
    """At most ``max_attempts`` requests per call; between them a full-jitter backoff
    (``backoff_base`` doubling, capped at ``backoff_max``), or a ``Retry-After`` of at
    most ``max_retry_after`` seconds (a longer one is not waited out)."""

    max_attempts: int = 3
    backoff_base: float = 0.25
    backoff_max: float = 4.0
    max_retry_after: float = 10.0

    def worst_case(self, timeout: float) -> float:
        """The longest one call can take, in seconds, with ``timeout`` per request:
        every attempt timing out, and every wait between them at its longest (a
        ``Retry-After`` up to ``max_retry_after``, or the backoff's cap)."""
        waits = (self.max_attempts - 1) * max(self.max_retry_after, self.backoff_max)
        return self.max_attempts * timeout + waits

    def backoff(self, attempt: int) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, base * 2**attempt]."""
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))  # noqa: S311

    def pause_after(
        self, error: ProviderError, retry_after: str | None, attempt: int, now: float
    ) -> float:
        """Seconds to wait before attempt ``attempt + 1`` after ``error``, or raise it.

        A 429 waits its ``Retry-After`` (set on the error) when that is at most
        ``max_retry_after``, else the backoff; a transient error waits the backoff;
        anything else, or the last attempt, raises ``error``.
        """
        last = attempt == self.max_attempts - 1
        if isinstance(error, RateLimited):
            wait = parse_retry_after(retry_after, now)
            error.retry_after = wait
            if last or (wait is not None and wait > self.max_retry_after):
                raise error
            return wait if wait is not None else self.backoff(attempt)
        if isinstance(error, TransientProviderError) and not last:
            return self.backoff(attempt)
        raise error


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait, from ``Retry-After`` as seconds or an HTTP date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)
