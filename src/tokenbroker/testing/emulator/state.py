"""The emulator a test drives: lifecycle, fault knobs, counters, and request dispatch.

:class:`WixEmulator` adds these to the Wix records and endpoints it inherits from
:class:`~.endpoints._WixEndpoints`, and is the :class:`~.server._Application` its
HTTP server calls into.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

import attrs

from .endpoints import (
    _ROUTES,
    BI_EVENT_ENDPOINT,
    ENDPOINTS,
    TOKEN_ENDPOINT,
    _non_negative,
    _WixEndpoints,
)
from .responses import (
    _bad_request,
    _error,
    _failure,
    _garbage,
    _rate_limited,
    _unparsable_request,
)
from .server import _EmulatorServer, _Request, _Response

logger = logging.getLogger("tokenbroker.emulator")

# How long stop() waits for handler threads to notice their sockets were closed.
_DRAIN_TIMEOUT: Final = 5.0


@attrs.frozen
class _Fault:
    """One queued misbehaviour: a canned answer, or a delay before the real one."""

    response: _Response | None
    delay: float = 0.0


def _check_endpoint(endpoint: str) -> None:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; known: {sorted(ENDPOINTS)}")


def _check_times(times: int) -> None:
    if times < 1:
        raise ValueError(f"times must be at least 1, got {times}")


@attrs.define(eq=False)
class WixEmulator(_WixEndpoints):
    """Wix's token, BI-event and instance endpoints, with knobs for tests.

    Thread-safe: the HTTP handler threads and the test thread share state under one
    lock, and every delay (latency, hangs, pauses) is waited out without holding it, so
    a slow request never blocks the others. Each request to a known endpoint is counted
    in :attr:`calls`, including requests answered by an injected fault.
    """

    _latency: float = attrs.field(default=0.0, kw_only=True, validator=_non_negative)
    _host: str = attrs.field(default="127.0.0.1", kw_only=True)
    _port: int = attrs.field(default=0, kw_only=True)

    # Signalled (under _lock) whenever in-flight counts, the pause gate or the running
    # state change, so waiters observe instead of polling.
    _changed: threading.Condition = attrs.field(init=False, repr=False)
    _lifecycle: threading.RLock = attrs.field(init=False, repr=False, factory=threading.RLock)
    _stopping: threading.Event = attrs.field(init=False, repr=False, factory=threading.Event)
    _server: _EmulatorServer | None = attrs.field(init=False, repr=False, default=None)
    _thread: threading.Thread | None = attrs.field(init=False, repr=False, default=None)

    _faults: dict[str, collections.deque[_Fault]] = attrs.field(init=False, repr=False)
    _calls: collections.Counter[str] = attrs.field(
        init=False, repr=False, factory=collections.Counter
    )
    _in_flight: int = attrs.field(init=False, repr=False, default=0)
    _peak_concurrency: int = attrs.field(init=False, repr=False, default=0)
    _paused: bool = attrs.field(init=False, repr=False, default=False)

    @_changed.default
    def _make_condition(self) -> threading.Condition:
        return threading.Condition(self._lock)

    @_faults.default
    def _make_fault_queues(self) -> dict[str, collections.deque[_Fault]]:
        return {endpoint: collections.deque() for endpoint in ENDPOINTS}

    # -- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL to give the client as its Wix API root, e.g. ``http://127.0.0.1:5123``."""
        server = self._server
        if server is None:
            raise RuntimeError("the Wix emulator is not running; call start() first")
        host, port = server.server_address[:2]
        if not isinstance(host, str):
            host = host.decode()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> str:
        """Bind the socket and serve in a daemon thread; returns :attr:`url`."""
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the Wix emulator is already running")
            self._stopping.clear()
            server = _EmulatorServer(self, (self._host, self._port))
            thread = threading.Thread(
                target=server.serve_until_stopped,
                name=f"wix-emulator-{server.server_address[1]}",
                daemon=True,
            )
            self._server = server
            self._thread = thread
            thread.start()
            url = self.url
        logger.debug("Wix emulator listening on %s", url)
        return url

    def stop(self) -> None:
        """Stop serving, close every connection, and join the server thread.

        Idempotent. Requests still waiting out latency, a hang or a pause are woken
        and their connections closed, so stop() does not wait for them to finish.
        """
        with self._lifecycle:
            server, thread = self._server, self._thread
            if server is None or thread is None:
                return
            self._stopping.set()
            with self._changed:
                self._changed.notify_all()
            server.request_stop()
            thread.join()
            server.close_connections()
            server.server_close()
            server.wait_until_drained(_DRAIN_TIMEOUT)
            self._server = None
            self._thread = None
        logger.debug("Wix emulator stopped")

    def serve_forever(self) -> None:
        """Serve until Ctrl-C or :meth:`stop`; for the ``tokenbroker emulator`` CLI."""
        if not self.running:
            self.start()
        try:
            # A bounded wait rather than wait() so Ctrl-C is delivered on every
            # platform (Windows does not interrupt an untimed lock wait).
            while not self._stopping.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> WixEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- settings --------------------------------------------------------------------

    @property
    def latency(self) -> float:
        """Seconds every request waits before it is answered."""
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"latency must not be negative, got {value}")
        with self._lock:
            self._latency = value

    # -- fault injection -------------------------------------------------------------

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

        The default body is Wix's standard error shape for that status. A mapping is
        sent as JSON; bytes or str are sent as they are (``text/plain`` unless
        ``headers`` name a ``Content-Type``). Despite the name, any status from 200
        up is allowed, so a test can also inject a 200 with a malformed body.
        """
        if not 200 <= status <= 599:
            raise ValueError(f"status must be between 200 and 599, got {status}")
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
        """Answer with a non-JSON body, as a proxy or load balancer in the way might."""
        if not 200 <= status <= 599:
            raise ValueError(f"status must be between 200 and 599, got {status}")
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
        """Answer 429, with ``Retry-After: <retry_after>`` unless it is ``None``."""
        if retry_after is not None and retry_after < 0:
            raise ValueError(f"retry_after must not be negative, got {retry_after}")
        _check_endpoint(endpoint)
        _check_times(times)
        self._enqueue(endpoint, _Fault(_rate_limited(retry_after)), times)

    def hang_next(self, seconds: float, *, times: int = 1, endpoint: str = TOKEN_ENDPOINT) -> None:
        """Wait ``seconds`` (on top of latency) and then answer normally."""
        if seconds < 0:
            raise ValueError(f"seconds must not be negative, got {seconds}")
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
            self._faults[endpoint].extend([fault] * times)

    # -- holding requests in flight ----------------------------------------------------

    def pause(self) -> None:
        """Hold every request that arrives from now on until :meth:`resume`.

        Lets a test put a known number of requests in flight at once (see
        :meth:`wait_for_in_flight`) without relying on timing.
        """
        with self._changed:
            self._paused = True

    def resume(self) -> None:
        """Release held requests; they are then answered as usual."""
        with self._changed:
            self._paused = False
            self._changed.notify_all()

    def wait_for_in_flight(self, count: int, timeout: float | None = 5.0) -> bool:
        """Block until at least ``count`` token requests are in flight; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._in_flight >= count, timeout)

    # -- observation -----------------------------------------------------------------

    @property
    def calls(self) -> collections.Counter[str]:
        """Requests received per endpoint name (a copy)."""
        with self._lock:
            return collections.Counter(self._calls)

    @property
    def token_requests(self) -> int:
        with self._lock:
            return self._calls[TOKEN_ENDPOINT]

    @property
    def in_flight(self) -> int:
        """Token requests received and not yet answered."""
        with self._lock:
            return self._in_flight

    @property
    def peak_concurrency(self) -> int:
        """The most token requests that were in flight at once."""
        with self._lock:
            return self._peak_concurrency

    @property
    def bi_events(self) -> list[tuple[str, str]]:
        """``(instance_id, eventName)`` for each BI event accepted, in order (a copy)."""
        with self._lock:
            return list(self._bi_events)

    def reset_counters(self) -> None:
        """Forget calls, peak concurrency and BI events; tokens and faults stay."""
        with self._lock:
            self._calls.clear()
            self._bi_events.clear()
            self._peak_concurrency = self._in_flight

    # -- request handling (the server's _Application; called from handler threads) ---

    def _serve(self, request: _Request) -> _Response | None:
        """Answer one request; None means drop the connection unanswered (stopping)."""
        route = _ROUTES.get(request.path)
        if route is None:
            return _error(HTTPStatus.NOT_FOUND, "Not Found", "NOT_FOUND", "No such endpoint")
        endpoint, method = route
        with self._lock:
            self._calls[endpoint] += 1
        if request.method != method:
            return _error(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "Method Not Allowed",
                "METHOD_NOT_ALLOWED",
                f"{endpoint} accepts {method} only",
                (("Allow", method),),
            )
        counted = endpoint == TOKEN_ENDPOINT
        with self._changed:
            queue = self._faults[endpoint]
            fault = queue.popleft() if queue else None
            delay = self._latency + (fault.delay if fault is not None else 0.0)
            if counted:
                self._in_flight += 1
                self._peak_concurrency = max(self._peak_concurrency, self._in_flight)
                self._changed.notify_all()
        try:
            with self._changed:
                self._changed.wait_for(lambda: not self._paused or self._stopping.is_set())
            if delay > 0:
                # Waiting on the stop event, not time.sleep, so stop() is never held up.
                self._stopping.wait(delay)
            if self._stopping.is_set():
                return None
            if fault is not None and fault.response is not None:
                return fault.response
            if endpoint == TOKEN_ENDPOINT:
                return self._create_access_token(request)
            if endpoint == BI_EVENT_ENDPOINT:
                return self._send_bi_event(request)
            return self._get_app_instance(request)
        finally:
            if counted:
                with self._changed:
                    self._in_flight -= 1
                    self._changed.notify_all()

    def _refuse_body(self, reason: str) -> _Response:
        return _bad_request("INVALID_REQUEST", reason)

    def _refuse_request(self, status: int, message: str | None) -> _Response:
        return _unparsable_request(status, message)
