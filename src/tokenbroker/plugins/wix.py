"""The Wix provider: Create Access Token, Send BI Event, Get App Instance.

Wire facts (see docs/architecture.md and DESIGN.md):

* ``POST {api}/oauth2/token`` with a JSON body ``{"grant_type":
  "client_credentials", "client_id", "client_secret", "instance_id"}``;
  the answer is ``{"access_token", "token_type", "expires_in"}``.
* API calls carry the raw token in ``Authorization`` (no ``Bearer``).

Retry budget: at most ``max_attempts`` requests (default 3) per token, and
likewise per BI event or instance lookup. 5xx, 408, timeouts and connection
errors are retried after a full-jitter exponential backoff: a random wait of up
to 0.25 s, doubling with each attempt, never above 4 s (with 3 attempts: at
most 0.25 s, then at most 0.5 s). A 429 is retried after its ``Retry-After``
when that is at most 10 s (after the backoff when it has none); a longer wait,
or a 429 on the last attempt, raises ``RateLimited`` carrying the wait. Every
other 4xx, 401/403 included, is never retried.

Circuit breaker: on top of that budget, each provider (one app, one API URL)
has one ``CircuitBreaker`` (``provider.breaker``) shared by all three
endpoints, so an outage does not become a retry storm. 5 consecutive transient
failures (5xx, 408, timeouts, connection errors) open it; any other answer,
429 and 401 included, shows the API is up and resets the count. While it is
open every call raises ``TransientProviderError`` ("... circuit open after N
consecutive failures; retrying in Ns", ``status`` ``None``) without sending
anything, and a call whose failure opened it stops retrying there. After a
15 s cooldown a single trial request goes through while the others are still
refused (a token fetched by that request's own ``httpx.Auth`` counts as part
of the trial): an answer closes the circuit and resets the cooldown, a failure
re-opens it with the cooldown doubled (30 s, 60 s, ... at most 300 s). A
cancelled trial frees its slot at once; one that never reports is given up
after 60 s.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import re
import threading
import time
import weakref
from contextlib import suppress
from contextvars import ContextVar
from typing import Any, Final

import attrs
import httpx

from ..core.breaker import CircuitBreaker, CircuitState, Permit
from ..core.clock import to_datetime
from ..core.errors import (
    ConfigError,
    InstanceNotInstalled,
    InvalidCredentials,
    ProviderError,
    RateLimited,
    TransientProviderError,
)
from ..core.flow import Flow, Op, run_async, run_sync
from ..core.token import Token, TokenKey
from .hookspecs import hookimpl
from .registry import ProviderConfig, RegisterProvider

log = logging.getLogger("tokenbroker.wix")

DEFAULT_API_URL: Final = "https://www.wixapis.com"
TOKEN_PATH: Final = "/oauth2/token"  # noqa: S105 - a path, not a password
BI_EVENT_PATH: Final = "/apps/v1/bi-event"
INSTANCE_PATH: Final = "/apps/v1/instance"
FINISHED_CONFIGURATION: Final = "APP_FINISHED_CONFIGURATION"
_NOT_INSTALLED_CODES: Final = frozenset(
    {"APP_NOT_INSTALLED", "INSTANCE_NOT_FOUND", "APP_INSTANCE_NOT_FOUND", "APP_REMOVED"}
)
_NOT_INSTALLED_TEXT: Final = re.compile(
    r"not\s+installed|instance\s+not\s+found|app\s+removed", re.IGNORECASE
)
_TOKEN_CHARS: Final = re.compile(r"[\x21-\x7e]+")
_MAX_MESSAGE: Final = 300
_NO_ANSWER: Final = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

# The trial permit a half-open breaker gave to the request now being sent in this
# context. Sending a BI event or an instance lookup runs the caller's httpx.Auth,
# which may itself fetch a token from this provider: that nested request belongs
# to the trial. Refusing it would fail the trial without asking Wix, every time.
_TRIAL: ContextVar[tuple[CircuitBreaker, Permit] | None] = ContextVar(
    "tokenbroker_wix_trial", default=None
)


@attrs.frozen
class RetryBudget:
    max_attempts: int = 3
    backoff_base: float = 0.25
    backoff_max: float = 4.0
    max_retry_after: float = 10.0

    def backoff(self, attempt: int) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, base * 2**attempt]."""
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))  # noqa: S311


def validate_api_url(url: str) -> str:
    parsed = httpx.URL(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"API URL {url!r} must be an absolute http(s) URL")
    if parsed.userinfo:
        raise ConfigError("API URL must not carry credentials")
    return str(parsed).rstrip("/")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait, from ``Retry-After`` as seconds or an HTTP date."""
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


def _error_fields(response: httpx.Response) -> tuple[str | None, str | None]:
    """Wix's ``message`` and ``details.applicationError.code``, if present."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    message = body.get("message")
    details = body.get("details")
    code = None
    if isinstance(details, dict):
        app_error = details.get("applicationError")
        if isinstance(app_error, dict) and isinstance(app_error.get("code"), str):
            code = app_error["code"]
    return (message if isinstance(message, str) else None), code


class WixProvider:
    """Gets Wix access tokens with the client-credentials grant.

    Thread-safe and usable from several event loops: the sync
    ``httpx.Client`` is shared, and each event loop gets its own
    ``httpx.AsyncClient``.
    """

    name = "wix"

    def __init__(
        self,
        config: ProviderConfig,
        *,
        retry: RetryBudget | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.app_id = config.app_id
        self._secret = config.app_secret
        self.api_url = validate_api_url(config.api_url)
        self._clock = config.clock
        self._retry = retry or RetryBudget(max_attempts=max(1, config.max_attempts))
        self._breaker = breaker if breaker is not None else CircuitBreaker(clock=config.clock)
        self._timeout = httpx.Timeout(config.timeout)
        self._transport = config.transport
        self._client: httpx.Client | None = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"WixProvider(app_id={self.app_id!r}, api_url={self.api_url!r})"

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker guarding every request this provider sends."""
        return self._breaker

    # -- clients --------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"User-Agent": "tokenbroker/0.1 (+https://pypi.org/project/tokenbroker)"}

    @property
    def client(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(
                        timeout=self._timeout, transport=self._transport, headers=self._headers()
                    )
                client = self._client
        return client

    @property
    def aclient(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport, headers=self._headers()
            )
            self._aclients[loop] = client
        return client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose_loop_client(self) -> None:
        """Close the running loop's async client (before that loop ends)."""
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def aclose(self) -> None:
        await self.aclose_loop_client()
        self.close()

    # -- the decision core ----------------------------------------------------
    def _scrub(self, text: str) -> str:
        secret = self._secret.reveal()
        if secret and secret in text:
            text = text.replace(secret, "***")
        return text[:_MAX_MESSAGE]

    def _failure(self, response: httpx.Response, what: str) -> ProviderError:
        message, code = _error_fields(response)
        message = self._scrub(message) if message else None
        status = response.status_code
        detail = f"{what}: Wix answered {status}" + (f": {message}" if message else "")
        kwargs: dict[str, Any] = {"status": status, "wix_message": message, "code": code}
        if code in _NOT_INSTALLED_CODES or (
            status in (400, 401, 403, 404) and message and _NOT_INSTALLED_TEXT.search(message)
        ):
            return InstanceNotInstalled(detail, **kwargs)
        if status in (401, 403):
            return InvalidCredentials(detail, **kwargs)
        if status == 429:
            return RateLimited(detail, **kwargs)
        if status == 408 or status >= 500:
            return TransientProviderError(detail, **kwargs)
        return ProviderError(detail, **kwargs)

    def _request_flow(
        self, request: httpx.Request, what: str, auth: httpx.Auth | None = None
    ) -> Flow[httpx.Response]:
        """Send ``request`` within the retry budget and the breaker; return a 2xx response."""
        budget = self._retry
        breaker = self._breaker
        for attempt in range(budget.max_attempts):
            last = attempt == budget.max_attempts - 1
            permit = self._admit(what)
            scope = _TRIAL.set((breaker, permit)) if permit.trial else None
            try:
                response: httpx.Response | None = yield Op("send", (request, auth))
            except _NO_ANSWER as exc:
                response, no_answer = None, type(exc).__name__
            except BaseException:
                breaker.release(permit)  # cancelled, or failed on our side: no verdict
                raise
            finally:
                if scope is not None:
                    with suppress(ValueError):  # closed from another context: nothing to undo
                        _TRIAL.reset(scope)
            if response is None:
                self._record(permit, failed=True)
                if breaker.state is not CircuitState.CLOSED:
                    raise self._circuit_open(what, f"no answer: {no_answer}")
                if last:
                    raise TransientProviderError(
                        f"{what}: no answer from {self.api_url} after {budget.max_attempts} "
                        f"attempt(s): {no_answer}"
                    )
                yield Op("sleep", (budget.backoff(attempt),))
                continue
            if response.is_success:
                self._record(permit, failed=False)
                return response
            error = self._failure(response, what)
            transient = isinstance(error, TransientProviderError)
            self._record(permit, failed=transient)
            if transient and breaker.state is not CircuitState.CLOSED:
                reason = str(error).removeprefix(f"{what}: ")
                raise self._circuit_open(what, reason) from error
            if isinstance(error, RateLimited):
                wait = parse_retry_after(response.headers.get("Retry-After"), self._clock.time())
                error.retry_after = wait
                if last or (wait is not None and wait > budget.max_retry_after):
                    raise error
                yield Op("sleep", (wait if wait is not None else budget.backoff(attempt),))
                continue
            if transient and not last:
                yield Op("sleep", (budget.backoff(attempt),))
                continue
            raise error
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _admit(self, what: str) -> Permit:
        held = _TRIAL.get()
        if held is not None and held[0] is self._breaker and self._breaker.holds(held[1]):
            return held[1]
        permit = self._breaker.allow()
        if permit is None:
            raise self._circuit_open(what)
        if permit.trial:
            log.info("Wix API circuit half-open: sending one trial request (%s)", what)
        return permit

    def _record(self, permit: Permit, *, failed: bool) -> None:
        breaker = self._breaker
        if failed:
            if breaker.record_failure(permit):
                log.warning(
                    "Wix API circuit opened after %d consecutive failures; "
                    "requests to %s refused for %gs",
                    breaker.failures,
                    self.api_url,
                    breaker.current_cooldown,
                )
        elif breaker.record_success(permit):
            log.info("Wix API circuit closed: %s answered again", self.api_url)

    def _circuit_open(self, what: str, reason: str | None = None) -> TransientProviderError:
        breaker = self._breaker
        failures = breaker.failures
        if breaker.state is CircuitState.HALF_OPEN:
            when = "a trial request is under way"
        else:
            when = f"retrying in {math.ceil(breaker.retry_in())}s"
        message = f"{what}: Wix API circuit open after {failures} consecutive failures; {when}"
        if reason:
            message += f" (last failure: {reason})"
        return TransientProviderError(message, status=None)

    def _token_request(self, key: TokenKey) -> httpx.Request:
        if key.app_id != self.app_id:
            raise ConfigError(f"this provider serves app {self.app_id!r}, not {key.app_id!r}")
        return httpx.Request(
            "POST",
            self.api_url + TOKEN_PATH,
            json={
                "grant_type": "client_credentials",
                "client_id": self.app_id,
                "client_secret": self._secret.reveal(),
                "instance_id": key.instance_id,
            },
        )

    def _token_flow(self, key: TokenKey) -> Flow[Token]:
        obtained = self._clock.time()  # counted from before the request: errs early
        response = yield from self._request_flow(self._token_request(key), "Create Access Token")
        return self.parse_token(key, response, obtained)

    def parse_token(self, key: TokenKey, response: httpx.Response, obtained: float) -> Token:
        """Strictly parse a Create Access Token answer; anything odd is a ProviderError."""

        def bad(why: str) -> ProviderError:
            return ProviderError(
                f"Create Access Token: Wix answered {response.status_code} with {why}",
                status=response.status_code,
            )

        try:
            body = response.json()
        except ValueError:
            raise bad("a body that is not JSON") from None
        if not isinstance(body, dict):
            raise bad(f"JSON {type(body).__name__}, not an object")
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise bad("no access_token string")
        if not _TOKEN_CHARS.fullmatch(access_token):
            raise bad("an access_token containing whitespace or control characters")
        token_type = body.get("token_type", "Bearer")
        if not isinstance(token_type, str) or not token_type:
            raise bad("a token_type that is not a string")
        expires_in = body.get("expires_in")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise bad("no numeric expires_in")
        if not math.isfinite(expires_in) or expires_in <= 0:
            raise bad(f"a non-positive expires_in ({expires_in!r})")
        return Token(
            key=key,
            access_token=access_token,
            token_type=token_type,
            expires_at=to_datetime(obtained + float(expires_in)),
            obtained_at=to_datetime(obtained),
        )

    # -- ports ----------------------------------------------------------------
    def _send(self, request: httpx.Request, auth: httpx.Auth | None) -> httpx.Response:
        return self.client.send(request, auth=auth)

    async def _asend(self, request: httpx.Request, auth: httpx.Auth | None) -> httpx.Response:
        return await self.aclient.send(request, auth=auth)

    @property
    def _port(self) -> _Port:
        return _Port(self._send, time.sleep)

    @property
    def _aport(self) -> _Port:
        return _Port(self._asend, asyncio.sleep)

    # -- TokenProvider ----------------------------------------------------------
    def acquire(self, key: TokenKey) -> Token:
        return run_sync(self._token_flow(key), self._port)

    async def aacquire(self, key: TokenKey) -> Token:
        return await run_async(self._token_flow(key), self._aport)

    # -- the app APIs -----------------------------------------------------------
    def _bi_request(self) -> httpx.Request:
        return httpx.Request(
            "POST", self.api_url + BI_EVENT_PATH, json={"eventName": FINISHED_CONFIGURATION}
        )

    def _instance_request(self) -> httpx.Request:
        return httpx.Request("GET", self.api_url + INSTANCE_PATH)

    def send_finished_configuration(self, auth: httpx.Auth) -> None:
        """Send Wix the ``APP_FINISHED_CONFIGURATION`` BI event."""
        run_sync(self._request_flow(self._bi_request(), "Send BI Event", auth), self._port)

    async def asend_finished_configuration(self, auth: httpx.Auth) -> None:
        await run_async(self._request_flow(self._bi_request(), "Send BI Event", auth), self._aport)

    def get_app_instance(self, auth: httpx.Auth) -> dict[str, Any]:
        response = run_sync(
            self._request_flow(self._instance_request(), "Get App Instance", auth), self._port
        )
        return _json_object(response, "Get App Instance")

    async def aget_app_instance(self, auth: httpx.Auth) -> dict[str, Any]:
        response = await run_async(
            self._request_flow(self._instance_request(), "Get App Instance", auth), self._aport
        )
        return _json_object(response, "Get App Instance")


@attrs.frozen
class _Port:
    send: Any
    sleep: Any


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ProviderError(f"{what}: Wix answered with a body that is not a JSON object")
    return body


def wix_provider(config: ProviderConfig) -> WixProvider:
    return WixProvider(config)


@hookimpl
def tokenbroker_register_providers(register: RegisterProvider) -> None:
    register("wix", wix_provider, description="Wix OAuth client credentials (Create Access Token)")
