"""One request within a credentials breaker, for every provider that holds credentials.

A provider keeps a ``CircuitBreaker`` of consecutive refusals of its credentials
(an app-wide failure: asking again with the same ones only spends the rate budget).
``guarded`` runs one request flow under it: refused without a request while the
breaker is open; a refusal (``InvalidCredentials``) counts, and the one that opens
the breaker is logged; an outcome with no verdict on the credentials (another error,
a cancellation) gives the permit back; any answer closes it again.
"""

from __future__ import annotations

import logging
import math
from typing import TypeVar

from .breaker import CircuitBreaker
from .errors import InvalidCredentials
from .flow import Flow

__all__ = ["guarded"]

T = TypeVar("T")


def guarded(
    breaker: CircuitBreaker, request: Flow[T], *, what: str, refused: str, log: logging.Logger
) -> Flow[T]:
    """``request``'s result, within ``breaker``.

    ``what`` names the request and ``refused`` says whose credentials were refused
    ("Wix refused app X's credentials"), in the error raised while the breaker is
    open and in the WARNING logged when a refusal opens it.
    """
    permit = breaker.allow()
    if permit is None:
        request.close()  # never started: nothing is sent
        raise InvalidCredentials(
            f"{what}: not sent: {refused} {breaker.failures} times in a row; the next try "
            f"in {math.ceil(breaker.retry_in())}s",
            status=None,
        )
    try:
        result = yield from request
    except InvalidCredentials as exc:
        if breaker.record_failure(permit):
            log.warning(
                "%s %d times in a row; %s is not sent for %gs (last refusal: %s)",
                refused,
                breaker.failures,
                what,
                breaker.current_cooldown,
                exc,
            )
        raise
    except BaseException:
        breaker.release(permit)  # no verdict on the credentials
        raise
    breaker.record_success(permit)
    return result
