"""A stand-in for the Wix endpoints tokenbroker talks to, served on loopback.

No network reaches Wix from the places tokenbroker is built and tested, so every HTTP
test of the Wix provider runs against this emulator instead. It listens on a real
socket (``http.server.ThreadingHTTPServer`` in a daemon thread) so the code under test
exercises its real transport: connection pools, keep-alive, timeouts, concurrency.

It answers the way DESIGN.md says Wix does:

* ``POST /oauth2/token`` issues a token for an installed app instance,
* ``POST /apps/v1/bi-event`` accepts ``APP_FINISHED_CONFIGURATION``,
* ``GET /apps/v1/instance`` describes the installation,

and lets a test inject faults (errors, non-JSON answers, 429s, slow answers), revoke
tokens, move time through an injected clock, hold requests in flight, and count what
it received.

This module depends only on the standard library and ``attrs`` so that it can be
used, or run as ``tokenbroker emulator``, without the rest of the package.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import http.server
import io
import json
import logging
import secrets
import selectors
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, Final, cast

import attrs

__all__ = [
    "BI_EVENT_ENDPOINT",
    "ENDPOINTS",
    "INSTANCE_ENDPOINT",
    "TOKEN_ENDPOINT",
    "WixEmulator",
]

logger = logging.getLogger("tokenbroker.emulator")

TOKEN_ENDPOINT: Final = "oauth2/token"  # noqa: S105 (a URL path, not a password)
BI_EVENT_ENDPOINT: Final = "apps/v1/bi-event"
INSTANCE_ENDPOINT: Final = "apps/v1/instance"
ENDPOINTS: Final = frozenset({TOKEN_ENDPOINT, BI_EVENT_ENDPOINT, INSTANCE_ENDPOINT})

# URL path -> (endpoint name, the one method it accepts).
_ROUTES: Final[Mapping[str, tuple[str, str]]] = {
    "/" + TOKEN_ENDPOINT: (TOKEN_ENDPOINT, "POST"),
    "/" + BI_EVENT_ENDPOINT: (BI_EVENT_ENDPOINT, "POST"),
    "/" + INSTANCE_ENDPOINT: (INSTANCE_ENDPOINT, "GET"),
}

_FINISHED_CONFIGURATION: Final = "APP_FINISHED_CONFIGURATION"
_TOKEN_FIELDS: Final = ("grant_type", "client_id", "client_secret", "instance_id")
_JSON: Final = "application/json"
# Bodies larger than this are refused rather than read: the emulator is for tests, and
# a runaway client should fail loudly instead of filling memory.
_MAX_BODY: Final = 1 << 20
# How long stop() waits for handler threads to notice their sockets were closed.
_DRAIN_TIMEOUT: Final = 5.0


@attrs.frozen
class _Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class _Request:
    method: str
    path: str
    content_type: str | None
    authorization: str | None = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)


@attrs.frozen
class _Fault:
    """One queued misbehaviour: a canned answer, or a delay before the real one."""

    response: _Response | None
    delay: float = 0.0


@attrs.frozen
class _Installation:
    instance_id: str
    app_name: str
    site_id: str
    site_display_name: str


@attrs.define
class _IssuedToken:
    instance_id: str
    expires_at: float
    revoked: bool = False


def _json_response(
    status: int, payload: Mapping[str, Any], headers: tuple[tuple[str, str], ...] = ()
) -> _Response:
    body = json.dumps(payload).encode()
    return _Response(status, body, (("Content-Type", _JSON), *headers))


def _error(
    status: int,
    message: str,
    code: str,
    description: str,
    headers: tuple[tuple[str, str], ...] = (),
) -> _Response:
    """Answer in Wix's standard error shape, which clients must parse."""
    payload = {
        "message": message,
        "details": {"applicationError": {"code": code, "description": description}},
    }
    return _json_response(status, payload, headers)


def _standard_error(status: int, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    try:
        known = HTTPStatus(status)
    except ValueError:
        return _error(
            status, "Injected failure", f"ERROR_{status}", "Injected by the emulator", headers
        )
    return _error(status, known.phrase, known.name, "Injected by the emulator", headers)


def _unauthorized(description: str) -> _Response:
    return _error(HTTPStatus.UNAUTHORIZED, "Unauthorized", "UNAUTHORIZED", description)


def _bad_request(code: str, description: str) -> _Response:
    return _error(HTTPStatus.BAD_REQUEST, "Bad Request", code, description)


def _merge_headers(
    defaults: tuple[tuple[str, str], ...], overrides: Mapping[str, str] | None
) -> tuple[tuple[str, str], ...]:
    """Let a test replace default headers by name; framing headers stay ours."""
    if not overrides:
        return defaults
    replaced = {name.lower() for name in overrides}
    kept = tuple((name, value) for name, value in defaults if name.lower() not in replaced)
    extra = tuple(
        (name, value)
        for name, value in overrides.items()
        if name.lower() not in {"content-length", "transfer-encoding", "connection"}
    )
    return kept + extra


def _check_endpoint(endpoint: str) -> None:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; known: {sorted(ENDPOINTS)}")


def _check_times(times: int) -> None:
    if times < 1:
        raise ValueError(f"times must be at least 1, got {times}")


def _format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _non_negative(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.alias} must not be negative, got {value}")


@attrs.define(eq=False)
class WixEmulator:
    """Wix's token, BI-event and instance endpoints, with knobs for tests.

    Thread-safe: the HTTP handler threads and the test thread share state under one
    lock, and every delay (latency, hangs, pauses) is waited out without holding it, so
    a slow request never blocks the others. Each request to a known endpoint is counted
    in :attr:`calls`, including requests answered by an injected fault.
    """

    _app_id: str = attrs.field(default="demo-app-id")
    _app_secret: str = attrs.field(default="demo-app-secret", repr=False)
    _token_lifetime: int = attrs.field(default=14400, kw_only=True, validator=_non_negative)
    _latency: float = attrs.field(default=0.0, kw_only=True, validator=_non_negative)
    _host: str = attrs.field(default="127.0.0.1", kw_only=True)
    _port: int = attrs.field(default=0, kw_only=True)
    _clock: Callable[[], float] = attrs.field(default=time.time, kw_only=True, repr=False)

    _lock: threading.Lock = attrs.field(init=False, repr=False, factory=threading.Lock)
    # Signalled (under _lock) whenever in-flight counts, the pause gate or the running
    # state change, so waiters observe instead of polling.
    _changed: threading.Condition = attrs.field(init=False, repr=False)
    _lifecycle: threading.RLock = attrs.field(init=False, repr=False, factory=threading.RLock)
    _stopping: threading.Event = attrs.field(init=False, repr=False, factory=threading.Event)
    _server: _EmulatorServer | None = attrs.field(init=False, repr=False, default=None)
    _thread: threading.Thread | None = attrs.field(init=False, repr=False, default=None)

    _installations: dict[str, _Installation] = attrs.field(init=False, repr=False, factory=dict)
    _tokens: dict[str, _IssuedToken] = attrs.field(init=False, repr=False, factory=dict)
    _tokens_by_instance: dict[str, list[str]] = attrs.field(init=False, repr=False, factory=dict)
    _faults: dict[str, collections.deque[_Fault]] = attrs.field(init=False, repr=False)
    _calls: collections.Counter[str] = attrs.field(
        init=False, repr=False, factory=collections.Counter
    )
    _bi_events: list[tuple[str, str]] = attrs.field(init=False, repr=False, factory=list)
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
    def app_id(self) -> str:
        return self._app_id

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

    @property
    def token_lifetime(self) -> int:
        """``expires_in`` given to tokens issued from now on."""
        with self._lock:
            return self._token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"token_lifetime must not be negative, got {value}")
        with self._lock:
            self._token_lifetime = value

    # -- installations ---------------------------------------------------------------

    def install(
        self,
        instance_id: str,
        *,
        app_name: str = "Demo App",
        site_id: str | None = None,
        site_display_name: str = "Demo Site",
    ) -> None:
        """Install the app on an instance (again, if it was installed before)."""
        if site_id is None:
            # Stable per instance, so a test can predict it without passing one.
            site_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"wix-emulator:{instance_id}"))
        with self._lock:
            self._installations[instance_id] = _Installation(
                instance_id, app_name, site_id, site_display_name
            )

    def uninstall(self, instance_id: str) -> None:
        """Remove an installation and revoke its tokens; a no-op if not installed."""
        with self._lock:
            self._installations.pop(instance_id, None)
            self._revoke_instance_locked(instance_id)

    @property
    def installed(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._installations)

    # -- tokens ----------------------------------------------------------------------

    def revoke(self, access_token: str) -> None:
        """Make one token unusable; unknown tokens are ignored."""
        with self._lock:
            issued = self._tokens.get(access_token)
            if issued is not None:
                issued.revoked = True

    def revoke_instance(self, instance_id: str) -> None:
        """Revoke every token issued for an instance; the installation stays."""
        with self._lock:
            self._revoke_instance_locked(instance_id)

    def _revoke_instance_locked(self, instance_id: str) -> None:
        for token in self._tokens_by_instance.get(instance_id, ()):
            self._tokens[token].revoked = True

    def issued_tokens_for(self, instance_id: str) -> list[str]:
        """Every token issued for the instance, oldest first, revoked or expired too."""
        with self._lock:
            return list(self._tokens_by_instance.get(instance_id, ()))

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
        if body is None:
            response = _standard_error(status)
        elif isinstance(body, Mapping):
            response = _json_response(status, body)
        else:
            raw = body.encode() if isinstance(body, str) else bytes(body)
            response = _Response(status, raw, (("Content-Type", "text/plain; charset=utf-8"),))
        response = attrs.evolve(response, headers=_merge_headers(response.headers, headers))
        self._enqueue(endpoint, _Fault(response), times)

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
        response = _Response(status, bytes(body), (("Content-Type", "text/html; charset=utf-8"),))
        self._enqueue(endpoint, _Fault(response), times)

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
        headers: tuple[tuple[str, str], ...] = ()
        if retry_after is not None:
            headers = (("Retry-After", _format_retry_after(retry_after)),)
        response = _error(
            HTTPStatus.TOO_MANY_REQUESTS,
            "Too Many Requests",
            "TOO_MANY_REQUESTS",
            "Rate limit exceeded",
            headers,
        )
        self._enqueue(endpoint, _Fault(response), times)

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

    # -- request handling (called from handler threads) -----------------------------

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

    def _create_access_token(self, request: _Request) -> _Response:
        media_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        if media_type != _JSON:
            return _bad_request("INVALID_CONTENT_TYPE", "Content-Type must be application/json")
        try:
            payload = json.loads(request.body)
        except ValueError:
            return _bad_request("INVALID_JSON", "The request body is not valid JSON")
        if not isinstance(payload, dict):
            return _bad_request("INVALID_REQUEST", "The request body must be a JSON object")
        missing = [f for f in _TOKEN_FIELDS if not (isinstance(payload.get(f), str) and payload[f])]
        if missing:
            return _bad_request(
                "INVALID_REQUEST", f"Missing or invalid fields: {', '.join(missing)}"
            )
        if payload["grant_type"] != "client_credentials":
            return _bad_request("UNSUPPORTED_GRANT_TYPE", "grant_type must be client_credentials")
        # compare_digest on both, so a wrong ID and a wrong secret cost the same.
        id_ok = hmac.compare_digest(payload["client_id"].encode(), self._app_id.encode())
        secret_ok = hmac.compare_digest(
            payload["client_secret"].encode(), self._app_secret.encode()
        )
        if not (id_ok and secret_ok):
            return _error(
                HTTPStatus.UNAUTHORIZED,
                "Invalid client credentials",
                "INVALID_CLIENT",
                "The client_id or client_secret is wrong",
            )
        instance_id: str = payload["instance_id"]
        with self._lock:
            if instance_id not in self._installations:
                return _error(
                    HTTPStatus.BAD_REQUEST,
                    "App is not installed on this instance",
                    "APP_NOT_INSTALLED",
                    "The app is not installed on the given instance_id",
                )
            lifetime = self._token_lifetime
            token = "OAUTH2." + secrets.token_urlsafe(32)
            self._tokens[token] = _IssuedToken(instance_id, self._clock() + lifetime)
            self._tokens_by_instance.setdefault(instance_id, []).append(token)
        return _json_response(
            HTTPStatus.OK,
            {"access_token": token, "token_type": "Bearer", "expires_in": lifetime},
        )

    def _authenticate(self, request: _Request) -> _Installation | _Response:
        """Find the installation a raw ``Authorization`` token belongs to."""
        token = request.authorization
        if not token:
            return _unauthorized("Missing Authorization header")
        if token.lower().startswith("bearer "):
            return _unauthorized("Send the raw access token, without a 'Bearer ' prefix")
        with self._lock:
            issued = self._tokens.get(token)
            if issued is None:
                return _unauthorized("Unknown access token")
            if issued.revoked:
                return _unauthorized("The access token was revoked")
            if self._clock() >= issued.expires_at:
                return _unauthorized("The access token has expired")
            installation = self._installations.get(issued.instance_id)
            if installation is None:
                return _unauthorized("The app is no longer installed on this instance")
            return installation

    def _send_bi_event(self, request: _Request) -> _Response:
        installation = self._authenticate(request)
        if isinstance(installation, _Response):
            return installation
        try:
            payload = json.loads(request.body)
        except ValueError:
            return _bad_request("INVALID_JSON", "The request body is not valid JSON")
        event = payload.get("eventName") if isinstance(payload, dict) else None
        if event != _FINISHED_CONFIGURATION:
            return _bad_request(
                "INVALID_EVENT_NAME", f"eventName must be {_FINISHED_CONFIGURATION}"
            )
        with self._lock:
            self._bi_events.append((installation.instance_id, event))
        return _json_response(HTTPStatus.OK, {})

    def _get_app_instance(self, request: _Request) -> _Response:
        installation = self._authenticate(request)
        if isinstance(installation, _Response):
            return installation
        return _json_response(
            HTTPStatus.OK,
            {
                "instance": {
                    "instanceId": installation.instance_id,
                    "appName": installation.app_name,
                    "isFree": True,
                    "appVersion": "latest",
                },
                "site": {
                    "siteId": installation.site_id,
                    "siteDisplayName": installation.site_display_name,
                    "locale": "en",
                },
            },
        )


class _EmulatorServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that can close its keep-alive connections on stop."""

    daemon_threads = True
    # stop() closes connections itself; joining handler threads that sit on an idle
    # keep-alive socket could otherwise block forever.
    block_on_close = False
    # 100+ clients connecting at once must queue, not be refused.
    request_queue_size = 256

    def __init__(self, emulator: WixEmulator, address: tuple[str, int]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Condition()
        self._closing = False
        self._stop_requested = threading.Event()
        super().__init__(address, _Handler)
        # Created only once binding succeeded, so a failed bind leaks nothing.
        self._wake_reader, self._wake_writer = socket.socketpair()

    def serve_until_stopped(self) -> None:
        """``serve_forever`` without its polling: request_stop() wakes the loop at once.

        ``shutdown()`` only notices its flag when the poll interval runs out, which
        would add that interval to every test that stops an emulator.
        """
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self._stop_requested.is_set():
                ready = selector.select()
                if self._stop_requested.is_set():
                    break
                if any(key.fileobj is self for key, _ in ready):
                    self._accept_one()

    def _accept_one(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError:
            return
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def request_stop(self) -> None:
        self._stop_requested.set()
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock = cast(socket.socket, request)
        with self._connections_lock:
            if self._closing:
                return
            self._connections.add(sock)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(sock)
                self._connections_lock.notify_all()

    def close_connections(self) -> None:
        """Shut down every open connection so idle handler threads wake and exit."""
        with self._connections_lock:
            self._closing = True
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def wait_until_drained(self, timeout: float) -> bool:
        with self._connections_lock:
            return self._connections_lock.wait_for(lambda: not self._connections, timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, stop()) are expected; keep them off stderr.
        logger.debug("error while serving %s", client_address, exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Translates HTTP to and from :meth:`WixEmulator._serve`."""

    server_version = "tokenbroker-wix-emulator"
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; with Nagle on, a keep-alive client
    # waits out the peer's delayed ACK (~40 ms) for every response.
    disable_nagle_algorithm = True

    def _handle(self) -> None:
        emulator = cast(_EmulatorServer, self.server).emulator
        try:
            body = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            self._send(_bad_request("INVALID_REQUEST", str(exc)))
            return
        request = _Request(
            method=self.command,
            path=urllib.parse.urlsplit(self.path).path,
            content_type=self.headers.get("Content-Type"),
            authorization=self.headers.get("Authorization"),
            body=body,
        )
        response = emulator._serve(request)
        if response is None:
            self.close_connection = True
            return
        self._send(response)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def _read_body(self) -> bytes:
        """Read the whole body, so the connection stays usable for the next request."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return _read_chunked(self.rfile)
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            raise ValueError("Content-Length is not a number") from None
        if not 0 <= length <= _MAX_BODY:
            raise ValueError("Content-Length is out of range")
        return self.rfile.read(length)

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests get Wix's JSON error shape too, not http.server's HTML."""
        self.close_connection = True
        try:
            status = HTTPStatus(code)
            phrase, name = status.phrase, status.name
        except ValueError:
            phrase, name = "Error", f"ERROR_{code}"
        self._send(_error(code, phrase, name, message or phrase))

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # Only the request line and status reach the log: never headers or bodies.
        logger.debug("%s " + format, self.address_string(), *args)


def _read_chunked(stream: io.BufferedIOBase) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = stream.readline(1024)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ValueError("malformed chunked body") from None
        if size == 0:
            # Skip trailers up to the blank line that ends the body.
            while stream.readline(1024).strip():
                pass
            return b"".join(chunks)
        total += size
        if total > _MAX_BODY:
            raise ValueError("body too large")
        chunks.append(stream.read(size))
        stream.readline(1024)
