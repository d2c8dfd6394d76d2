"""The emulator a test drives: lifecycle, latency, pauses, and request dispatch.

``WixEmulator`` adds these to what it inherits, one layer a module: the records
(``records``), the app's endpoints (``endpoints``), Token Info and the user-side
credentials (``identity``), the fault queues (``faults``) and the counters and request
IDs (``observation``). It is the ``server._Application`` its HTTP server calls into.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Final

import attrs

from . import checks
from .endpoints import (
    _ROUTES,
    ACCESS_ENDPOINT,
    BI_EVENT_ENDPOINT,
    INSTANCE_ENDPOINT,
    TOKEN_ENDPOINT,
    TOKEN_INFO_ENDPOINT,
)
from .observation import _Observation
from .records import checked
from .responses import _Answer, _error, _refusal
from .server import _EmulatorServer, _Request, _Response

logger = logging.getLogger("tokenbroker.emulator")

# How long stop() waits for handler threads to notice their sockets were closed.
_DRAIN_TIMEOUT: Final = 5.0
# The endpoints that issue the app's tokens: their requests are counted in flight.
_TOKEN_ENDPOINTS: Final = frozenset({TOKEN_ENDPOINT, ACCESS_ENDPOINT})


def _url_of(server: _EmulatorServer) -> str:
    host, port = server.server_address[:2]
    if not isinstance(host, str):
        host = host.decode()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _port(name: str, value: object) -> None:
    checks.integer(name, value, low=0, high=65535)


@attrs.define(eq=False, repr=False)
class WixEmulator(_Observation):
    """Wix's token, token-info, BI-event, instance and legacy OAuth endpoints, with knobs.

    Thread-safe: the HTTP handler threads and the test thread share state under one
    lock, and every delay (latency, hangs, pauses) is waited out without holding it, so
    a slow request never blocks the others. Each request to a known endpoint with its
    method (``POST /oauth2/token``, say) is counted in ``calls``, including requests
    answered by an injected fault; a 404, a 405 and a request refused as malformed are
    not counted. Every answer, those included, carries a unique ``x-wix-request-id``
    header, recorded in ``request_ids``.

    It reads requests as strictly as a real server: a malformed one is answered 400 (or
    413, 414, 431, 501, 505 where HTTP says so), bodies are at most 1 MiB, and a
    connection that sends nothing for ``request_timeout``, or does not deliver a whole
    request within ``request_timeout`` of its first byte, is closed (with a 408 in the
    second case).

    Its parameters (attrs fields, keyword-only after the first two):

    * ``app_id``: The app ID that Create Access Token accepts.
    * ``app_secret``: The app secret it accepts, and signs ``sign_instance`` with.
    * ``token_lifetime``: ``expires_in`` of issued tokens, in seconds (finite, positive).
    * ``clock``: Returns the time in seconds; tokens expire by it (default ``time.time``).
    * ``max_tokens``: Issued tokens remembered, the oldest forgotten first (at least 1).
    * ``error_shape``: ``"wix"`` (the default: ``{"message", "details":
      {"applicationError": {"code", "description", "data"}}}``, or a
      ``validationError``) or ``"ietf"`` (``{"error", "error_description"}``, RFC 6749
      5.2): the shape of every error answer, faults and refusals included.
    * ``not_installed_status``: The status of Create Access Token for an instance that
      is not installed: 400 (the default), 401, 403 or 404. Its body says
      ``APP_NOT_INSTALLED`` (``invalid_grant`` in the ietf shape) and "App is not
      installed on this instance".
    * ``rotate_refresh_tokens``: Whether each refresh on ``POST /oauth/access`` answers
      a new refresh token and ends the one used (the default, True); False answers the
      same one, as Wix documents (see ``legacy``).
    * ``legacy_token_lifetime``: Seconds the access tokens of ``POST /oauth/access``
      live (finite, positive; default 300, Wix's documented 5 minutes).
    * ``latency``: Seconds every request waits before it is answered (finite, at least 0).
    * ``host``: The address to listen on.
    * ``port``: The port to listen on; 0 picks a free one.
    * ``request_timeout``: Seconds a connection may stay idle, and then has to deliver
      each whole request from its first byte, before it is closed (finite,
      positive). Tests of slow clients set it low.

    ``error_shape``, ``not_installed_status``, ``token_lifetime``,
    ``rotate_refresh_tokens``, ``legacy_token_lifetime`` and ``latency`` can also be set
    while it runs, checked as they are set.
    """

    _latency: float = attrs.field(default=0.0, kw_only=True, validator=checked(checks.non_negative))
    _host: str = attrs.field(default="127.0.0.1", kw_only=True, validator=checked(checks.text))
    _port: int = attrs.field(default=0, kw_only=True, validator=checked(_port))
    _request_timeout: float = attrs.field(
        default=10.0, kw_only=True, validator=checked(checks.positive)
    )

    # Signalled (under _lock) whenever in-flight counts, the pause gate or the running
    # state change, so waiters observe instead of polling.
    _changed: threading.Condition = attrs.field(init=False)
    _lifecycle: threading.RLock = attrs.field(init=False, factory=threading.RLock)
    _stopping: threading.Event = attrs.field(init=False, factory=threading.Event)
    _server: _EmulatorServer | None = attrs.field(init=False, default=None)
    _thread: threading.Thread | None = attrs.field(init=False, default=None)

    _paused: bool = attrs.field(init=False, default=False)

    @_changed.default
    def _make_condition(self) -> threading.Condition:
        return threading.Condition(self._lock)

    def __repr__(self) -> str:
        # Read without the lock: a repr must not deadlock a debugger stopped inside it.
        server = self._server
        url = _url_of(server) if server is not None else None
        return (
            f"WixEmulator(app_id={self._app_id!r}, url={url!r}, "
            f"installed={len(self._installations)}, token_lifetime={self._token_lifetime!r}, "
            f"latency={self._latency!r}, request_timeout={self._request_timeout!r})"
        )

    # -- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL to give the client as its Wix API root, e.g. ``http://127.0.0.1:5123``."""
        server = self._server
        if server is None:
            raise RuntimeError("the Wix emulator is not running; call start() first")
        return _url_of(server)

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def open_connections(self) -> int:
        """Client connections the server holds open now (0 when stopped)."""
        server = self._server
        return server.open_connections if server is not None else 0

    def start(self) -> str:
        """Bind the socket and serve in a daemon thread; returns ``url``.

        Raises:
            BindError: The address cannot be listened on (the port is in use, say). It
                is an ``OSError`` naming host and port; nothing is left running.
        """
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the Wix emulator is already running")
            server = _EmulatorServer(self, (self._host, self._port), self._request_timeout)
            self._stopping.clear()
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
        and their connections closed, so stop() does not wait for them to finish. A
        pause ends with the server: a restarted emulator answers at once. Installations,
        tokens, queued faults and counters are kept.
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
            with self._changed:
                self._paused = False
        logger.debug("Wix emulator stopped")

    def serve_forever(self) -> None:
        """Serve until Ctrl-C or ``stop()``; for the ``tokenbroker emulator`` CLI."""
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
        checks.non_negative("latency", value)
        with self._lock:
            self._latency = value

    # -- holding requests in flight ----------------------------------------------------

    def pause(self) -> None:
        """Hold every request that arrives from now on until ``resume()`` (or ``stop()``).

        Lets a test put a known number of requests in flight at once (see
        ``wait_for_in_flight``) without relying on timing.
        """
        with self._changed:
            self._paused = True

    def resume(self) -> None:
        """Release held requests; they are then answered as usual."""
        with self._changed:
            self._paused = False
            self._changed.notify_all()

    def wait_for_in_flight(self, count: int, timeout: float | None = 5.0) -> bool:
        """Block until at least ``count`` token requests (``/oauth2/token`` and
        ``/oauth/access``) are in flight; False on timeout.

        ``timeout`` is seconds (finite, at least 0), or None to wait as long as it takes.
        """
        checks.integer("count", count, low=0)
        if timeout is not None:
            checks.non_negative("timeout", timeout)
        with self._changed:
            return self._changed.wait_for(lambda: self._in_flight >= count, timeout)

    # -- request handling (the server's _Application; called from handler threads) ---

    def _serve(self, request: _Request) -> _Response | None:
        """Answer one request; None means drop the connection unanswered (stopping)."""
        answer = self._answer(request)
        return None if answer is None else self._finish(answer)

    def _refuse_request(self, status: int, message: str) -> _Response:
        return self._finish(_refusal(status, message))

    def _handler(self, endpoint: str) -> Callable[[_Request], _Answer]:
        return {
            TOKEN_ENDPOINT: self._create_access_token,
            TOKEN_INFO_ENDPOINT: self._token_info,
            BI_EVENT_ENDPOINT: self._send_bi_event,
            INSTANCE_ENDPOINT: self._get_app_instance,
            ACCESS_ENDPOINT: self._request_access,
        }[endpoint]

    def _answer(self, request: _Request) -> _Answer | None:
        route = _ROUTES.get(request.path)
        if route is None:
            return _error(HTTPStatus.NOT_FOUND, "Not Found", "NOT_FOUND", "No such endpoint")
        endpoint, method = route
        if request.method != method:
            # Not a call of the endpoint: Wix's router answers it, so it is not counted.
            return _error(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "Method Not Allowed",
                "METHOD_NOT_ALLOWED",
                f"{endpoint} accepts {method} only",
                (("Allow", method),),
            )
        counted = endpoint in _TOKEN_ENDPOINTS
        with self._changed:
            self._calls[endpoint] += 1
            fault = self._next_fault_locked(endpoint)
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
                self._stopping.wait(min(delay, threading.TIMEOUT_MAX))
            if self._stopping.is_set():
                return None
            if fault is not None and fault.response is not None:
                return fault.response
            return self._handler(endpoint)(request)
        finally:
            if counted:
                with self._changed:
                    self._in_flight -= 1
                    self._changed.notify_all()
