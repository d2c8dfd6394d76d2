"""The OAuth 2.0 server a test drives: lifecycle, knobs, faults, counts, serving."""

from __future__ import annotations

import collections
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ..emulator import checks
from ..emulator.server import _EmulatorServer, _Request, _Response
from .rules import (
    AUTH_METHODS,
    NO_STORE,
    REQUEST_ID_HEADER,
    TokenRules,
    auth_methods,
    json_answer,
    oauth_error,
    parse_form,
)


def _optional(check: Callable[[str, Any], object]) -> Callable[[Any, Any, Any], None]:
    def validate(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            check(attribute.alias or attribute.name, value)

    return validate


def _checked(check: Callable[[str, Any], object]) -> Callable[[Any, Any, Any], None]:
    def validate(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        check(attribute.alias or attribute.name, value)

    return validate


@attrs.frozen
class _Fault:
    response: _Response | None
    delay: float = 0.0


@attrs.define
class _Queued:
    fault: _Fault
    remaining: int


@attrs.define(eq=False, repr=False)
class OAuth2Server:
    """A token endpoint that issues client-credentials tokens, with knobs for tests.

    Thread-safe. Every request is counted in ``calls`` (by path); ``token_requests``
    counts ``POST``s to ``token_path``, those answered by a fault included.

    Its parameters (attrs fields, keyword-only after the first two):

    * ``client_id``, ``client_secret``: the credentials it accepts.
    * ``auth_methods``: the client authentication methods it accepts (both by default).
    * ``required_scope``: space-separated scopes every request must ask for (each of
      them; more are fine), or ``None``; a request short of one is ``invalid_scope``.
    * ``audience``: the ``audience`` every request must name, or ``None``.
    * ``tenant_param``: the per-tenant mode: every request must carry this form field,
      and each token is issued for (and recorded under) its value.
    * ``token_lifetime``: ``expires_in`` of the tokens, in seconds (positive).
    * ``omit_expires_in``: answer without ``expires_in`` (RFC 6749 5.1 allows it).
    * ``token_type``: the ``token_type`` answered (``Bearer``).
    * ``clock``: returns the time in seconds; tokens expire by it (``time.time``).
    * ``token_path``, ``latency``, ``host``, ``port`` (0: a free one), ``request_timeout``.

    ``token_lifetime``, ``omit_expires_in`` and ``latency`` can be set while it runs.
    """

    _client_id: str = attrs.field(validator=_checked(checks.text))
    _client_secret: str = attrs.field(validator=_checked(checks.text))
    _auth_methods: tuple[str, ...] = attrs.field(
        default=AUTH_METHODS, kw_only=True, converter=tuple, validator=_checked(auth_methods)
    )
    _required_scope: str | None = attrs.field(
        default=None, kw_only=True, validator=_optional(checks.text)
    )
    _audience: str | None = attrs.field(
        default=None, kw_only=True, validator=_optional(checks.text)
    )
    _tenant_param: str | None = attrs.field(
        default=None, kw_only=True, validator=_optional(checks.text)
    )
    _token_lifetime: float = attrs.field(
        default=3600.0, kw_only=True, validator=_checked(checks.positive)
    )
    _omit_expires_in: bool = attrs.field(default=False, kw_only=True)
    _token_type: str = attrs.field(default="Bearer", kw_only=True, validator=_checked(checks.text))
    _clock: Callable[[], float] = attrs.field(default=time.time, kw_only=True)
    _token_path: str = attrs.field(default="/oauth/token", kw_only=True)
    _latency: float = attrs.field(
        default=0.0, kw_only=True, validator=_checked(checks.non_negative)
    )
    _host: str = attrs.field(default="127.0.0.1", kw_only=True, validator=_checked(checks.text))
    _port: int = attrs.field(default=0, kw_only=True)
    _request_timeout: float = attrs.field(
        default=10.0, kw_only=True, validator=_checked(checks.positive)
    )
    _max_tokens: int = attrs.field(default=10_000, kw_only=True)

    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _stopping: threading.Event = attrs.field(init=False, factory=threading.Event)
    _faults: collections.deque[_Queued] = attrs.field(init=False, factory=collections.deque)
    _calls: collections.Counter[str] = attrs.field(init=False, factory=collections.Counter)
    _forms: collections.deque[dict[str, str]] = attrs.field(
        init=False, factory=lambda: collections.deque(maxlen=1000)
    )
    # token -> (tenant, or "" outside the per-tenant mode; expiry), oldest first
    _issued: dict[str, tuple[str, float]] = attrs.field(init=False, factory=dict)
    _rules: TokenRules = attrs.field(init=False)
    _server: _EmulatorServer | None = attrs.field(init=False, default=None)
    _thread: threading.Thread | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if not self._token_path.startswith("/"):
            raise ValueError(f"token_path must start with '/', got {self._token_path!r}")
        checks.integer("port", self._port, low=0, high=65535)
        checks.integer("max_tokens", self._max_tokens, low=1)
        if not callable(self._clock):
            raise TypeError(f"clock must be callable, got {self._clock!r}")
        self._rules = TokenRules(
            self._client_id,
            self._client_secret,
            self._auth_methods,
            self._required_scope,
            self._audience,
            self._tenant_param,
        )

    def __repr__(self) -> str:
        url = self.url if self._server is not None else None
        return f"OAuth2Server(client_id={self._client_id!r}, url={url!r})"

    # -- lifecycle ------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:5123``."""
        server = self._server
        if server is None:
            raise RuntimeError("the OAuth 2.0 server is not running; call start() first")
        host, port = server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def token_url(self) -> str:
        """The token endpoint's URL: the ``token_url`` provider option."""
        return self.url + self._token_path

    def start(self) -> str:
        """Listen and serve in a daemon thread; returns ``token_url``."""
        if self._server is not None:
            raise RuntimeError("the OAuth 2.0 server is already running")
        server = _EmulatorServer(self, (self._host, self._port), self._request_timeout)
        self._stopping.clear()
        self._thread = threading.Thread(target=server.serve_until_stopped, daemon=True)
        self._server = server
        self._thread.start()
        return self.token_url

    def stop(self) -> None:
        """Stop serving and close every connection (idempotent); records are kept."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.request_stop()
        thread.join()
        server.close_connections()
        server.server_close()
        server.wait_until_drained(5.0)
        self._server = self._thread = None

    def __enter__(self) -> OAuth2Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- knobs ------------------------------------------------------------------------
    @property
    def token_lifetime(self) -> float:
        return self._token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, value: float) -> None:
        self._token_lifetime = checks.positive("token_lifetime", value)

    @property
    def omit_expires_in(self) -> bool:
        return self._omit_expires_in

    @omit_expires_in.setter
    def omit_expires_in(self, value: bool) -> None:
        self._omit_expires_in = bool(value)

    @property
    def latency(self) -> float:
        return self._latency

    @latency.setter
    def latency(self, value: float) -> None:
        self._latency = checks.non_negative("latency", value)

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` token requests with ``status``: by default an RFC
        6749 error body (``server_error`` for a 5xx, ``invalid_request`` otherwise); a
        mapping ``body`` is sent as JSON, bytes or str as they are."""
        checks.answer_status(status, body_given=body is not None)
        checks.header_fields(headers)
        more = tuple((headers or {}).items())
        if body is None:
            error = "server_error" if status >= 500 else "invalid_request"
            response = oauth_error(status, error, f"injected {status}", *more)
        elif isinstance(body, Mapping):
            response = json_answer(status, checks.json_object("body", body), more)
        elif isinstance(body, bytes | str):
            data = body.encode() if isinstance(body, str) else body
            kind = (
                ()
                if any(k.lower() == "content-type" for k, _ in more)
                else (("Content-Type", "text/plain"),)
            )
            response = _Response(status, data, (*kind, *more))
        else:
            raise TypeError(f"body must be bytes, str or a mapping, got {type(body).__name__}")
        self._enqueue(_Fault(response), times)

    def garbage_next(
        self, *, times: int = 1, body: bytes = b"<html>oops</html>", status: int = 200
    ) -> None:
        """Answer with a non-JSON body, as a proxy in the way might."""
        checks.answer_status(status, body_given=True)
        self._enqueue(
            _Fault(_Response(status, bytes(body), (("Content-Type", "text/html"),))), times
        )

    def rate_limit_next(self, retry_after: float | None = 1, *, times: int = 1) -> None:
        """Answer 429, with ``Retry-After`` (whole seconds, rounded up) unless ``None``."""
        more: tuple[tuple[str, str], ...] = ()
        if retry_after is not None:
            more = (
                ("Retry-After", str(math.ceil(checks.non_negative("retry_after", retry_after)))),
            )
        response = oauth_error(429, "temporarily_unavailable", "Too many requests", *more)
        self._enqueue(_Fault(response), times)

    def hang_next(self, seconds: float, *, times: int = 1) -> None:
        """Wait ``seconds`` (on top of ``latency``) before answering as usual."""
        self._enqueue(_Fault(None, delay=checks.non_negative("seconds", seconds)), times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _enqueue(self, fault: _Fault, times: int) -> None:
        checks.integer("times", times, low=1)
        with self._lock:
            self._faults.append(_Queued(fault, times))

    # -- what it saw ------------------------------------------------------------------
    @property
    def calls(self) -> collections.Counter[str]:
        """Requests received, by path (a copy)."""
        with self._lock:
            return collections.Counter(self._calls)

    @property
    def token_requests(self) -> int:
        """``POST`` requests to the token path, faults included."""
        with self._lock:
            return self._calls[self._token_path]

    @property
    def forms(self) -> list[dict[str, str]]:
        """The form of each token request that got past the faults, granted or not,
        oldest first (the last 1000): ``client_secret`` masked, and the client
        authentication method seen under ``"(auth)"``."""
        with self._lock:
            return [dict(form) for form in self._forms]

    def issued_tokens_for(self, tenant: str | None = None) -> list[str]:
        """Tokens issued for ``tenant`` in the per-tenant mode; every token issued
        otherwise (they are the app's, whatever instance asks)."""
        with self._lock:
            if self._tenant_param is None or tenant is None:
                return list(self._issued)
            return [token for token, (owner, _) in self._issued.items() if owner == tenant]

    def is_live(self, token: str) -> bool:
        """Whether ``token`` was issued here and has not expired by ``clock``."""
        with self._lock:
            found = self._issued.get(token)
        return found is not None and self._clock() < found[1]

    # -- serving (the emulator server's _Application) ----------------------------------
    def _refuse_request(self, status: int, message: str) -> _Response:
        return self._finish(oauth_error(status, "invalid_request", message))

    def _serve(self, request: _Request) -> _Response | None:
        with self._lock:
            self._calls[request.path] += 1
        if request.path != self._token_path:
            return self._finish(oauth_error(404, "invalid_request", "No such endpoint"))
        if request.method != "POST":  # RFC 6749 3.2
            return self._finish(oauth_error(405, "invalid_request", "Use POST", ("Allow", "POST")))
        with self._lock:
            fault = None
            if self._faults:
                head = self._faults[0]
                head.remaining -= 1
                if head.remaining == 0:
                    self._faults.popleft()
                fault = head.fault
        delay = self._latency + (fault.delay if fault is not None else 0.0)
        if delay > 0:
            self._stopping.wait(min(delay, threading.TIMEOUT_MAX))
        if self._stopping.is_set():
            return None
        if fault is not None and fault.response is not None:
            return self._finish(fault.response)
        return self._finish(self._token(request))

    def _finish(self, response: _Response) -> _Response:
        request_id = f"{int(time.time())}-{secrets.token_hex(8)}"
        return attrs.evolve(response, headers=(*response.headers, (REQUEST_ID_HEADER, request_id)))

    def _token(self, request: _Request) -> _Response:
        form = parse_form(request)
        if not isinstance(form, dict):
            return form
        try:
            tenant = self._rules.grant(request.authorization, form)
        finally:
            if "client_secret" in form:
                form["client_secret"] = "***"  # noqa: S105 - a mask
            with self._lock:
                self._forms.append(form)
        if not isinstance(tenant, str):
            return tenant
        token = "tok_" + secrets.token_urlsafe(24)
        with self._lock:
            lifetime = self._token_lifetime
            self._issued[token] = (tenant, self._clock() + lifetime)
            while len(self._issued) > self._max_tokens:
                del self._issued[next(iter(self._issued))]
        answer: dict[str, object] = {"access_token": token, "token_type": self._token_type}
        if not self._omit_expires_in:
            answer["expires_in"] = lifetime
        return json_answer(200, answer, NO_STORE)
