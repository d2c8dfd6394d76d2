"""Fault injection: the canned answers and delays a test queues per endpoint.

``_FaultInjection`` sits between the Wix records and endpoints (``endpoints``,
``identity``, ``legacy``) and the emulator (``state``), which takes the next fault for each request
it serves. A fault with no body of the test's is worded when it is sent, in the
``error_shape`` set then.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import attrs

from . import checks
from .endpoints import ENDPOINTS, TOKEN_ENDPOINT
from .legacy import _LegacyOAuth
from .responses import _Answer, _failure, _garbage, _rate_limited


@attrs.frozen
class _Fault:
    """One queued misbehaviour: a canned answer, or a delay before the real one."""

    response: _Answer | None
    delay: float = 0.0


@attrs.define
class _Queued:
    """A fault and how many more requests it answers (not ``times`` copies of it)."""

    fault: _Fault
    remaining: int


def _check_endpoint(endpoint: object) -> None:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; known: {sorted(ENDPOINTS)}")


def _check_times(times: object) -> int:
    return checks.integer("times", times, low=1)


@attrs.define(eq=False, repr=False)
class _FaultInjection(_LegacyOAuth):
    """The fault queues, one per endpoint, under the endpoints' lock."""

    _faults: dict[str, collections.deque[_Queued]] = attrs.field(init=False)

    @_faults.default
    def _make_fault_queues(self) -> dict[str, collections.deque[_Queued]]:
        return {endpoint: collections.deque() for endpoint in ENDPOINTS}

    def fail_next(
        self,
        status: int,
        *,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        endpoint: str = TOKEN_ENDPOINT,
    ) -> None:
        """Answer the next ``times`` requests to ``endpoint`` with ``status``.

        The default body is the error shape for that status (Wix's, or the ietf one
        when ``error_shape`` says so), so without a ``body`` the status must be an
        error (400-599). A mapping is sent as JSON;
        bytes or str are sent as they are (``text/plain`` unless ``headers`` name a
        ``Content-Type``). With a body, a status from 200 up is allowed, so a test can
        inject a 200 with a malformed body; 204, 205 and 304 cannot carry one and are
        refused.
        """
        checks.answer_status(status, body_given=body is not None)
        if body is not None and not isinstance(body, bytes | str | Mapping):
            raise TypeError(f"body must be bytes, str or a mapping, got {type(body).__name__}")
        checks.header_fields(headers)
        _check_endpoint(endpoint)
        _check_times(times)
        self._enqueue(endpoint, _Fault(_failure(status, body, headers)), times)

    def garbage_next(
        self,
        *,
        times: int = 1,
        endpoint: str = TOKEN_ENDPOINT,
        body: bytes = b"<html>oops</html>",
        status: int = 200,
    ) -> None:
        """Answer with a non-JSON body, as a proxy or load balancer in the way might.

        ``status`` is 200-599 but 204, 205 and 304, which cannot carry a body.
        """
        checks.answer_status(status, body_given=True)
        if not isinstance(body, bytes | bytearray):
            raise TypeError(f"body must be bytes, got {type(body).__name__}")
        _check_endpoint(endpoint)
        _check_times(times)
        self._enqueue(endpoint, _Fault(_garbage(status, body)), times)

    def rate_limit_next(
        self,
        retry_after: float | None = 1,
        *,
        times: int = 1,
        endpoint: str = TOKEN_ENDPOINT,
    ) -> None:
        """Answer 429, with ``Retry-After: <retry_after>`` unless it is ``None``.

        ``retry_after`` is finite and at least 0. HTTP sends whole seconds, so a
        fraction is rounded up: 0.5 is sent as ``Retry-After: 1``.
        """
        if retry_after is not None:
            checks.non_negative("retry_after", retry_after)
        _check_endpoint(endpoint)
        _check_times(times)
        self._enqueue(endpoint, _Fault(_rate_limited(retry_after)), times)

    def hang_next(self, seconds: float, *, times: int = 1, endpoint: str = TOKEN_ENDPOINT) -> None:
        """Wait ``seconds`` (finite, at least 0; on top of latency), then answer normally."""
        checks.non_negative("seconds", seconds)
        _check_endpoint(endpoint)
        _check_times(times)
        self._enqueue(endpoint, _Fault(None, delay=seconds), times)

    def clear_faults(self) -> None:
        """Drop every fault still queued."""
        with self._lock:
            for queue in self._faults.values():
                queue.clear()

    def _enqueue(self, endpoint: str, fault: _Fault, times: int) -> None:
        with self._lock:
            self._faults[endpoint].append(_Queued(fault, times))

    def _next_fault_locked(self, endpoint: str) -> _Fault | None:
        queue = self._faults[endpoint]
        if not queue:
            return None
        head = queue[0]
        head.remaining -= 1
        if head.remaining == 0:
            queue.popleft()
        return head.fault
