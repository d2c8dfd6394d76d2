"""Talking to one Wix API: HTTP clients, the retry budget and the circuit breaker.

Retry budget: at most ``max_attempts`` requests (default 3) per call. 5xx, 408,
timeouts and connection errors are retried after a full-jitter exponential
backoff: a random wait of up to 0.25 s, doubling with each attempt, never above
4 s (with 3 attempts: at most 0.25 s, then at most 0.5 s). A 429 is retried
after its ``Retry-After`` when that is at most 10 s (after the backoff when it
has none); a longer wait, or a 429 on the last attempt, raises ``RateLimited``
carrying the wait. Every other 4xx, 401/403 included, is never retried.

Circuit breaker: on top of that budget, each provider (one app, one API URL)
has one ``CircuitBreaker`` shared by all its endpoints, so an outage does not
become a retry storm. 5 consecutive transient failures (5xx, 408, timeouts,
connection errors) open it; any other answer, 429 and 401 included, shows the
API is up and resets the count. While it is open every call raises
``TransientProviderError`` ("... circuit open after N consecutive failures;
retrying in Ns", ``status`` ``None``) without sending anything, and a call whose
failure opened it stops retrying there. After a 15 s cooldown a single trial
request goes through while the others are still refused (a token fetched by
that request's own auth counts as part of the trial): an answer closes the
circuit and resets the cooldown, a failure re-opens it with the cooldown
doubled (30 s, 60 s, ... at most 300 s). A cancelled trial frees its slot at
once; one that never reports is given up after 60 s.

Every error raised for an answer carries that answer's ``x-wix-request-id``
(``request_id``, also at the end of its message); each failed attempt that is
retried is logged at INFO with it, and so is the failure that opens the circuit.

The clients, the request loop and the breaker's bookkeeping are
``tokenbroker.providers.http.BreakingHttp``'s, shared with the generic token
endpoint; what is Wix's here is the error classifier, the wording, and a
half-open trial that covers the requests made by its own auth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from contextvars import ContextVar
from typing import Any

import httpx2

from ..core.breaker import CircuitBreaker, Permit
from ..core.clock import Clock
from ..core.errors import ProviderError
from ..core.flow import Flow
from ..core.retry import RetryBudget
from ..providers.http import BreakingHttp, Send, warm_async_backend
from .errors import DEFAULT_RULES, NotInstalledRules, classify, request_id_of

__all__ = ["WixHttp", "json_object", "warm_async_backend"]

log = logging.getLogger("tokenbroker.wix")

# The trial permit a half-open breaker gave to the request now being sent in this
# context. Sending a BI event or an instance lookup runs the caller's auth, which
# may itself fetch a token from this provider: that nested request belongs to the
# trial. Refusing it would fail the trial without asking Wix, every time.
_TRIAL: ContextVar[tuple[CircuitBreaker, Permit] | None] = ContextVar(
    "tokenbroker_wix_trial", default=None
)


class WixHttp(BreakingHttp):
    """Sends requests to one Wix API within the retry budget and the breaker.

    Thread-safe and usable from several event loops: the sync client is shared,
    and each event loop gets its own async client. It is its own ``HttpPort``.
    """

    circuit = "Wix API"
    circuit_error = "Wix API circuit"

    def __init__(
        self,
        *,
        api_url: str,
        clock: Clock,
        retry: RetryBudget,
        breaker: CircuitBreaker,
        timeout: float,
        transport: httpx2.BaseTransport | httpx2.AsyncBaseTransport | None,
        scrub: Callable[[str], str],
        not_installed: NotInstalledRules = DEFAULT_RULES,
        app: str | None = None,
    ) -> None:
        super().__init__(
            url=api_url,
            clock=clock,
            retry=retry,
            breaker=breaker,
            timeout=timeout,
            transport=transport,
            scrub=scrub,
            log=log,
            app=app,
        )
        self.api_url = api_url
        self.no_answer_from = f" from {api_url}"
        self.not_installed = not_installed
        """What reads as "not installed" in an error answer (see ``NotInstalledRules``)."""

    def _classify(self, response: httpx2.Response, what: str) -> ProviderError:
        return classify(response, what, self._scrub, self.not_installed)

    def _admit(self, what: str) -> Permit:
        held = _TRIAL.get()
        if held is not None and held[0] is self.breaker and self.breaker.holds(held[1]):
            return held[1]  # a request of the trial's own auth: part of the trial
        return super()._admit(what)

    def _send(
        self, request: httpx2.Request, auth: httpx2.Auth | None, permit: Permit
    ) -> Flow[httpx2.Response]:
        scope = _TRIAL.set((self.breaker, permit)) if permit.trial else None
        try:
            return (yield from Send(request, auth))
        finally:
            if scope is not None:
                with suppress(ValueError):  # closed from another context: nothing to undo
                    _TRIAL.reset(scope)


def json_object(
    response: httpx2.Response, what: str | Callable[[str], ProviderError]
) -> dict[str, Any]:
    """A 2xx answer's body as a JSON object; anything else is a ``ProviderError``:
    ``what(why)`` when ``what`` builds one, else one naming the call ``what``."""
    bad: Callable[[str], ProviderError]
    if isinstance(what, str):
        call = what

        def bad(why: str) -> ProviderError:
            return ProviderError(
                f"{call}: Wix answered {response.status_code} with {why}",
                status=response.status_code,
                request_id=request_id_of(response),
            )
    else:
        bad = what
    try:
        body = response.json()
    except ValueError:
        raise bad("a body that is not JSON") from None
    if not isinstance(body, dict):
        raise bad(f"JSON {type(body).__name__}, not an object")
    return body
