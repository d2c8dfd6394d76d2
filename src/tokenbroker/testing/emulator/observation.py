"""What the emulator counts and records of the requests it answers, and request IDs.

``_Observation`` sits between the fault queues (``faults``) and the emulator
(``state``): it keeps the counters a test reads, and gives every answer its
``x-wix-request-id`` on the way out (``_finish``), wording an error in the shape
``error_shape`` names then.
"""

from __future__ import annotations

import collections
import secrets
import time
from typing import Final

import attrs

from .endpoints import ACCESS_ENDPOINT, TOKEN_ENDPOINT
from .faults import _FaultInjection
from .responses import _Answer, _Problem
from .server import _Response

# Seen in the SDK: @wix/sdk reads it from every answer it reports on (build/fetch-error.js,
# build/rest-modules.js, build/auth/AppStrategy.js). The ID's format is assumed.
REQUEST_ID_HEADER: Final = "x-wix-request-id"
# Request IDs remembered, the oldest forgotten first.
_MAX_REQUEST_IDS: Final = 10_000


@attrs.define(eq=False, repr=False)
class _Observation(_FaultInjection):
    """Counters and request IDs, under the records' lock."""

    _calls: collections.Counter[str] = attrs.field(init=False, factory=collections.Counter)
    _in_flight: int = attrs.field(init=False, default=0)
    _peak_concurrency: int = attrs.field(init=False, default=0)
    _request_ids: collections.deque[str] = attrs.field(
        init=False, factory=lambda: collections.deque(maxlen=_MAX_REQUEST_IDS)
    )

    @property
    def calls(self) -> collections.Counter[str]:
        """Requests received per endpoint name (a copy)."""
        with self._lock:
            return collections.Counter(self._calls)

    @property
    def token_requests(self) -> int:
        """``POST /oauth2/token`` requests received (``calls["oauth2/token"]``)."""
        with self._lock:
            return self._calls[TOKEN_ENDPOINT]

    @property
    def access_requests(self) -> int:
        """``POST /oauth/access`` requests received (``calls["oauth/access"]``)."""
        with self._lock:
            return self._calls[ACCESS_ENDPOINT]

    @property
    def in_flight(self) -> int:
        """Token requests (``/oauth2/token`` and ``/oauth/access``) received and not yet
        answered."""
        with self._lock:
            return self._in_flight

    @property
    def peak_concurrency(self) -> int:
        """The most token requests (of both endpoints) that were in flight at once."""
        with self._lock:
            return self._peak_concurrency

    @property
    def bi_events(self) -> list[tuple[str, str]]:
        """``(instance_id, eventName)`` for each BI event accepted, in order (a copy)."""
        with self._lock:
            return list(self._bi_events)

    @property
    def request_ids(self) -> list[str]:
        """The ``x-wix-request-id`` of each answer sent, oldest first (the last 10,000)."""
        with self._lock:
            return list(self._request_ids)

    @property
    def last_request_id(self) -> str | None:
        """The ``x-wix-request-id`` of the latest answer, or None before the first."""
        with self._lock:
            return self._request_ids[-1] if self._request_ids else None

    def reset_counters(self) -> None:
        """Forget calls, peak concurrency, BI events, request IDs and the Bearer count.

        Tokens, installations and faults stay.
        """
        with self._lock:
            self._calls.clear()
            self._bi_events.clear()
            self._request_ids.clear()
            self._bearer_prefixed = 0
            self._peak_concurrency = self._in_flight

    def _finish(self, answer: _Answer) -> _Response:
        """Word a problem in the current shape, and stamp the answer with a request ID."""
        with self._lock:
            shape = self._error_shape
        response = answer.render(shape) if isinstance(answer, _Problem) else answer
        # A test's fault may bring its own ID; it is recorded like the emulator's own.
        given = [value for name, value in response.headers if name.lower() == REQUEST_ID_HEADER]
        # "<epoch seconds>.<16 random digits>": unique in practice. Wall time, not the
        # emulator clock: the 500 for a clock that broke needs an ID as well.
        request_id = given[0] if given else f"{int(time.time())}.{secrets.randbelow(10**16):016d}"
        with self._lock:
            self._request_ids.append(request_id)
        if given:
            return response
        headers = (*response.headers, (REQUEST_ID_HEADER, request_id))
        return attrs.evolve(response, headers=headers)
