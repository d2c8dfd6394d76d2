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
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import suppress
from contextvars import ContextVar
from typing import Any, Final, Protocol

import attrs
import httpx2

from ..core.breaker import CircuitBreaker, CircuitState, Permit
from ..core.clock import Clock
from ..core.errors import ProviderError, TransientProviderError, with_request_id
from ..core.flow import Flow, Op, Sleep
from ..core.loops import on_loop_close
from ..core.metrics import CURRENT_APP, PROVIDER_DURATION, PROVIDER_REQUESTS, status_class
from ..core.retry import RetryBudget
from .errors import DEFAULT_RULES, NotInstalledRules, classify, request_id_of
from .facts import USER_AGENT

log = logging.getLogger("tokenbroker.wix")

_NO_ANSWER: Final = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)

# What the first async request would otherwise import on the event loop: httpcore2
# picks its anyio backend lazily, and anyio imports its asyncio backend on first use
# (seen in httpcore2's and anyio's source: tens of milliseconds, once per process).
_ASYNC_BACKEND_MODULES: Final = ("anyio._backends._asyncio", "httpcore2._backends.anyio")


def warm_async_backend() -> None:
    """Import the async HTTP backend now (off the loop), not during the first request."""
    for name in _ASYNC_BACKEND_MODULES:
        with suppress(ImportError):
            importlib.import_module(name)


# The trial permit a half-open breaker gave to the request now being sent in this
# context. Sending a BI event or an instance lookup runs the caller's auth, which
# may itself fetch a token from this provider: that nested request belongs to the
# trial. Refusing it would fail the trial without asking Wix, every time.
_TRIAL: ContextVar[tuple[CircuitBreaker, Permit] | None] = ContextVar(
    "tokenbroker_wix_trial", default=None
)


class HttpPort(Protocol):
    """What ``Send`` needs: a shared sync client and the running loop's async one."""

    @property
    def client(self) -> httpx2.Client: ...

    @property
    def aclient(self) -> httpx2.AsyncClient: ...


@attrs.frozen
class Send(Op[httpx2.Response]):
    request: httpx2.Request
    auth: httpx2.Auth | None = None

    def run(self, port: HttpPort) -> httpx2.Response:
        return port.client.send(self.request, auth=self.auth)

    async def arun(self, port: HttpPort) -> httpx2.Response:
        # a port that builds its TLS context off the loop first (``WixHttp.aready``)
        ready = getattr(port, "aready", None)
        if ready is not None:
            await ready()
        return await port.aclient.send(self.request, auth=self.auth)


class WixHttp:
    """Sends requests to one Wix API within the retry budget and the breaker.

    Thread-safe and usable from several event loops: the sync client is shared,
    and each event loop gets its own async client. It is its own ``HttpPort``.
    """

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
        self.api_url = api_url
        self.app = app
        """The app labelling the request metrics (``None``: the token path's app, if any)."""
        self.not_installed = not_installed
        """What reads as "not installed" in an error answer (see ``NotInstalledRules``)."""
        self.retry = retry
        self.breaker = breaker
        self._clock = clock
        self._scrub = scrub
        self._timeout = httpx2.Timeout(timeout)
        self.max_call_seconds = retry.worst_case(timeout)
        """How long one call may take at worst (what a fleet lease must outlast)."""
        self._transport = transport
        self._ssl: ssl.SSLContext | None = None
        self._client: httpx2.Client | None = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._ready = False

    # -- clients --------------------------------------------------------------
    def prepare(self) -> None:
        """Build what the clients need (the TLS context, the async backend's modules):
        tens of milliseconds that must not be spent on an event loop."""
        if self._transport is None:
            self._ssl_context()
        warm_async_backend()
        self._ready = True

    async def aready(self) -> None:
        """``prepare`` in a worker thread, the first time: the loop keeps running."""
        if not self._ready:
            await asyncio.to_thread(self.prepare)

    def _ssl_context(self) -> ssl.SSLContext:
        """One TLS context for every client: building one costs tens of
        milliseconds, which a new event loop per call would pay each time."""
        context = self._ssl
        if context is None:
            with self._lock:
                if self._ssl is None:
                    self._ssl = httpx2.create_ssl_context()
                context = self._ssl
        return context

    @property
    def client(self) -> httpx2.Client:
        client = self._client
        if client is None:
            context = self._ssl_context()  # takes the lock itself: before, not inside
            with self._lock:
                if self._client is None:
                    self._client = httpx2.Client(
                        timeout=self._timeout,
                        verify=context,
                        transport=self._transport,  # type: ignore[arg-type]
                        headers={"User-Agent": USER_AGENT},
                    )
                client = self._client
        return client

    @property
    def aclient(self) -> httpx2.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = httpx2.AsyncClient(
                timeout=self._timeout,
                verify=self._ssl_context(),
                transport=self._transport,  # type: ignore[arg-type]
                headers={"User-Agent": USER_AGENT},
            )
            self._aclients[loop] = client
            # A loop per asyncio.run() would otherwise leave a client, its sockets and
            # the loop itself behind, every time.
            on_loop_close(self.aclose_loop_client)
        return client

    def close(self) -> None:
        """Close the sync client. An async client is closed on its own loop: by
        ``aclose`` there, or when that loop shuts down."""
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
    def request_flow(
        self, request: httpx2.Request, what: str, auth: httpx2.Auth | None = None
    ) -> Flow[httpx2.Response]:
        """Send ``request`` within the retry budget and the breaker; return a 2xx response."""
        # ``client.send`` applies no client default headers (only ``build_request`` does),
        # so a request built here names tokenbroker itself.
        request.headers.setdefault("User-Agent", USER_AGENT)
        budget = self.retry
        breaker = self.breaker
        for attempt in range(budget.max_attempts):
            last = attempt == budget.max_attempts - 1
            permit = self._admit(what)
            scope = _TRIAL.set((breaker, permit)) if permit.trial else None
            started = time.perf_counter()
            try:
                response: httpx2.Response | None = yield from Send(request, auth)
            except _NO_ANSWER as exc:
                response, no_answer = None, type(exc).__name__
            except BaseException:
                breaker.release(permit)  # cancelled, or failed on our side: no verdict
                raise
            finally:
                if scope is not None:
                    with suppress(ValueError):  # closed from another context: nothing to undo
                        _TRIAL.reset(scope)
            self._measure(request, response, time.perf_counter() - started)
            if response is None:
                self._record(permit, failed=True, last_failure=f"no answer: {no_answer}")
                if breaker.state is not CircuitState.CLOSED:
                    raise self._circuit_open(what, f"no answer: {no_answer}")
                if last:
                    raise TransientProviderError(
                        f"{what}: no answer from {self.api_url} after {budget.max_attempts} "
                        f"attempt(s): {no_answer}"
                    )
                pause = budget.backoff(attempt)
                log.info("%s: no answer (%s); retrying in %.2fs", what, no_answer, pause)
                yield from Sleep(pause)
                continue
            if response.is_success:
                self._record(permit, failed=False)
                return response
            yield from Sleep(self._judge(response, what, permit, attempt))
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _measure(
        self, request: httpx2.Request, response: httpx2.Response | None, duration: float
    ) -> None:
        """Count one attempt: ``endpoint`` is the URL's path (Wix's API paths carry no
        instance id: assumed from the endpoints tokenbroker calls)."""
        app = self._app_label()
        endpoint = request.url.path
        status = None if response is None else response.status_code
        PROVIDER_REQUESTS.inc((app, endpoint, status_class(status)))
        PROVIDER_DURATION.observe((app, endpoint), duration)

    def _judge(self, response: httpx2.Response, what: str, permit: Permit, attempt: int) -> float:
        """Classify a non-2xx answer and tell the breaker: raise its error, or return
        how long to wait before the next attempt (logged with the request id)."""
        error = classify(response, what, self._scrub, self.not_installed)
        transient = isinstance(error, TransientProviderError)
        reason = str(error).removeprefix(f"{what}: ")
        self._record(permit, failed=transient, last_failure=reason)
        if transient and self.breaker.state is not CircuitState.CLOSED:
            # the id once, on the circuit's error, not inside its "last failure" too
            unquoted = reason.removesuffix(with_request_id("", error.request_id))
            raise self._circuit_open(what, unquoted, error.request_id) from error
        pause = self.retry.pause_after(
            error, response.headers.get("Retry-After"), attempt, self._clock.time()
        )
        log.info("%s; retrying in %.2fs", error, pause)
        return pause

    def _admit(self, what: str) -> Permit:
        held = _TRIAL.get()
        if held is not None and held[0] is self.breaker and self.breaker.holds(held[1]):
            return held[1]
        permit = self.breaker.allow()
        if permit is None:
            raise self._circuit_open(what)
        if permit.trial:
            log.info("Wix API circuit half-open: sending one trial request (%s)", what)
        return permit

    def _record(self, permit: Permit, *, failed: bool, last_failure: str = "") -> None:
        """Tell the breaker how the attempt went; ``last_failure`` (the error's message,
        request id included) names the failure that opened it, in the log line."""
        breaker = self.breaker
        if failed:
            if breaker.record_failure(permit):
                log.warning(
                    "Wix API circuit opened after %d consecutive failures; "
                    "requests to %s refused for %gs (last failure: %s)",
                    breaker.failures,
                    self.api_url,
                    breaker.current_cooldown,
                    last_failure or "unknown",
                    extra={"app": self._app_label(), "outcome": "breaker_open"},
                )
        elif breaker.record_success(permit):
            log.info(
                "Wix API circuit closed: %s answered again",
                self.api_url,
                extra={"app": self._app_label(), "outcome": "breaker_closed"},
            )

    def _app_label(self) -> str:
        return self.app if self.app is not None else CURRENT_APP.get()

    def _circuit_open(
        self, what: str, reason: str | None = None, request_id: str | None = None
    ) -> TransientProviderError:
        """The error for a call the open circuit stops; ``request_id`` is that of the
        answer that stopped it, if one did (``None`` when nothing was sent)."""
        breaker = self.breaker
        failures = breaker.failures
        if breaker.state is CircuitState.HALF_OPEN:
            when = "a trial request is under way"
        else:
            when = f"retrying in {math.ceil(breaker.retry_in())}s"
        message = f"{what}: Wix API circuit open after {failures} consecutive failures; {when}"
        if reason:
            message += f" (last failure: {reason})"
        return TransientProviderError(message, status=None, request_id=request_id)


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
