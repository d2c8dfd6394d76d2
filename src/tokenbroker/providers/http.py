"""Sending token requests: HTTP clients, the retry budget and the circuit breaker.

The same rules as the Wix provider's (``tokenbroker.wix.http``), for any token
endpoint: at most ``max_attempts`` requests per fetch; 5xx, 408, timeouts and
connection errors retried after a full-jitter backoff (up to 0.25 s, doubling,
at most 4 s); a 429 retried after its ``Retry-After`` when that is at most 10 s
(after the backoff when it has none), else raised as ``RateLimited`` with the
wait; every other 4xx raised at once. One ``CircuitBreaker``
(``tokenbroker.core.breaker``) per provider: 5 consecutive transient failures
open it for 15 s (doubling to 300 s), and while it is open nothing is sent.

``BreakingHttp`` is that machinery for any HTTP API: the clients (one shared sync
client, one async client per event loop, one TLS context built off the loop), the
request loop within the retry budget and the breaker, the request metrics and the
breaker's log lines. ``TokenEndpoint`` is it for one token endpoint, and the Wix
provider's ``WixHttp`` (``tokenbroker.wix.http``) is it for a Wix API: each says how
it classifies an error answer and how it names itself in messages.
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
from typing import Final, Protocol

import attrs
import httpx2

from ..core.breaker import CircuitBreaker, CircuitState, Permit
from ..core.clock import Clock
from ..core.errors import ProviderError, TransientProviderError, with_request_id
from ..core.flow import Flow, Op, Sleep
from ..core.loops import on_loop_close
from ..core.metrics import CURRENT_APP, PROVIDER_DURATION, PROVIDER_REQUESTS, status_class
from ..core.retry import RetryBudget
from .errors import classify

log = logging.getLogger("tokenbroker.oauth2")

USER_AGENT: Final = "tokenbroker/0.1 (+https://pypi.org/project/tokenbroker)"
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


class HttpPort(Protocol):
    """What ``Send`` needs: the shared sync client, the running loop's async one, and
    ``aready`` to build what they need off the loop first."""

    @property
    def client(self) -> httpx2.Client: ...

    @property
    def aclient(self) -> httpx2.AsyncClient: ...

    async def aready(self) -> None: ...


@attrs.frozen
class Send(Op[httpx2.Response]):
    """Send one request on the port's client (sync) or its loop's client (async)."""

    request: httpx2.Request
    auth: httpx2.Auth | None = None

    def run(self, port: HttpPort) -> httpx2.Response:
        return port.client.send(self.request, auth=self.auth)

    async def arun(self, port: HttpPort) -> httpx2.Response:
        await port.aready()
        return await port.aclient.send(self.request, auth=self.auth)


class BreakingHttp:
    """Sends requests to one HTTP API within the retry budget and the breaker.

    Thread-safe and usable from several event loops: the sync client is shared and
    each loop gets its own async client, closed when that loop shuts down. It is its
    own ``HttpPort``. A subclass says how an error answer is classified
    (``_classify``) and how it names itself: ``circuit`` in log lines ("token
    endpoint"), ``circuit_error`` in the error a refused call raises ("circuit"),
    ``no_answer_from`` in the one a call that got no answer raises.
    """

    circuit = "endpoint"
    circuit_error = "circuit"
    no_answer_from = ""

    def __init__(
        self,
        *,
        url: str,
        clock: Clock,
        retry: RetryBudget,
        breaker: CircuitBreaker,
        timeout: float,
        transport: httpx2.BaseTransport | httpx2.AsyncBaseTransport | None,
        scrub: Callable[[str], str],
        log: logging.Logger,
        app: str | None = None,
    ) -> None:
        self.url = url
        self.app = app
        """The app labelling the request metrics (``None``: the token path's app, if any)."""
        self.retry = retry
        self.breaker = breaker
        self.max_call_seconds = retry.worst_case(timeout)
        """How long one call may take at worst (what a fleet lease must outlast)."""
        self._clock = clock
        self._scrub = scrub
        self._log = log
        self._timeout = httpx2.Timeout(timeout)
        self._transport = transport
        self._ssl: ssl.SSLContext | None = None
        self._client: httpx2.Client | None = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient]
        self._aclients = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._ready = False

    # -- clients ----------------------------------------------------------------
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
        with self._lock:
            if self._ssl is None:
                self._ssl = httpx2.create_ssl_context()
            return self._ssl

    def _options(self) -> dict[str, object]:
        options: dict[str, object] = {
            "timeout": self._timeout,
            "transport": self._transport,
            "headers": {"User-Agent": USER_AGENT},
            "follow_redirects": False,  # a redirect would carry the secret elsewhere
        }
        if self._transport is None:  # a given transport does its own TLS, if any
            # One context for every client: building one costs tens of milliseconds,
            # which a new event loop per call would pay each time.
            options["verify"] = self._ssl_context()
        return options

    @property
    def client(self) -> httpx2.Client:
        client = self._client
        if client is None:
            options = self._options()  # takes the lock itself: before, not inside
            with self._lock:
                if self._client is None:
                    self._client = httpx2.Client(**options)  # type: ignore[arg-type]
                client = self._client
        return client

    @property
    def aclient(self) -> httpx2.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = httpx2.AsyncClient(**self._options())  # type: ignore[arg-type]
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

    # -- the decision core ----------------------------------------------------------
    def request_flow(
        self, request: httpx2.Request, what: str, auth: httpx2.Auth | None = None
    ) -> Flow[httpx2.Response]:
        """Send ``request`` within the retry budget and the breaker; return a 2xx answer."""
        # ``client.send`` applies no client default headers (only ``build_request`` does),
        # so a request built here names tokenbroker itself.
        request.headers.setdefault("User-Agent", USER_AGENT)
        budget = self.retry
        for attempt in range(budget.max_attempts):
            last = attempt == budget.max_attempts - 1
            permit = self._admit(what)
            started = time.perf_counter()
            try:
                response: httpx2.Response | None = yield from self._send(request, auth, permit)
            except _NO_ANSWER as exc:
                response, no_answer = None, type(exc).__name__
            except BaseException:
                self.breaker.release(permit)  # cancelled, or failed on our side: no verdict
                raise
            self._measure(request, response, time.perf_counter() - started)
            if response is None:
                reason = f"no answer: {no_answer}"
                self._record(permit, failed=True, reason=reason)
                if self.breaker.state is not CircuitState.CLOSED:
                    raise self._circuit_open(what, reason)
                if last:
                    raise TransientProviderError(
                        f"{what}: no answer{self.no_answer_from} after "
                        f"{budget.max_attempts} attempt(s): {no_answer}"
                    )
                pause = budget.backoff(attempt)
                self._log.info("%s: no answer (%s); retrying in %.2fs", what, no_answer, pause)
                yield from Sleep(pause)
                continue
            if response.is_success:
                self._record(permit, failed=False)
                return response
            yield from Sleep(self._judge(response, what, permit, attempt))
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _send(
        self, request: httpx2.Request, auth: httpx2.Auth | None, permit: Permit
    ) -> Flow[httpx2.Response]:
        """One attempt, under ``permit`` (a subclass may scope the permit to it)."""
        return (yield from Send(request, auth))

    def _classify(self, response: httpx2.Response, what: str) -> ProviderError:
        """The error a non-2xx answer means (each API's own classifier)."""
        raise NotImplementedError

    def _app_label(self) -> str:
        return self.app if self.app is not None else CURRENT_APP.get()

    def _measure(
        self, request: httpx2.Request, response: httpx2.Response | None, duration: float
    ) -> None:
        """Count one attempt by the URL's path (a configured URL, or a Wix API path,
        which carries no instance id: bounded)."""
        app = self._app_label()
        status = None if response is None else response.status_code
        PROVIDER_REQUESTS.inc((app, request.url.path, status_class(status)))
        PROVIDER_DURATION.observe((app, request.url.path), duration)

    def _judge(self, response: httpx2.Response, what: str, permit: Permit, attempt: int) -> float:
        """Classify a non-2xx answer and tell the breaker: raise its error, or return
        how long to wait before the next attempt (logged with the request id)."""
        error = self._classify(response, what)
        transient = isinstance(error, TransientProviderError)
        reason = str(error).removeprefix(f"{what}: ")
        self._record(permit, failed=transient, reason=reason)
        if transient and self.breaker.state is not CircuitState.CLOSED:
            # the id once, on the circuit's error, not inside its "last failure" too
            unquoted = reason.removesuffix(with_request_id("", error.request_id))
            raise self._circuit_open(what, unquoted, error.request_id) from error
        pause = self.retry.pause_after(
            error, response.headers.get("Retry-After"), attempt, self._clock.time()
        )
        self._log.info("%s; retrying in %.2fs", error, pause)
        return pause

    def _admit(self, what: str) -> Permit:
        permit = self.breaker.allow()
        if permit is None:
            raise self._circuit_open(what)
        if permit.trial:
            self._log.info(
                "%s circuit half-open: sending one trial request (%s)", self.circuit, what
            )
        return permit

    def _record(self, permit: Permit, *, failed: bool, reason: str = "") -> None:
        """Tell the breaker how the attempt went; ``reason`` (the error's message,
        request id included) names the failure that opened it, in the log line."""
        breaker = self.breaker
        if not failed:
            if breaker.record_success(permit):
                self._log.info(
                    "%s circuit closed: %s answered again",
                    self.circuit,
                    self.url,
                    extra={"app": self._app_label(), "outcome": "breaker_closed"},
                )
        elif breaker.record_failure(permit):
            self._log.warning(
                "%s circuit opened after %d consecutive failures; requests to "
                "%s refused for %gs (last failure: %s)",
                self.circuit,
                breaker.failures,
                self.url,
                breaker.current_cooldown,
                reason or "unknown",
                extra={"app": self._app_label(), "outcome": "breaker_open"},
            )

    def _circuit_open(
        self, what: str, reason: str | None = None, request_id: str | None = None
    ) -> TransientProviderError:
        """The error for a call the open circuit stops; ``request_id`` is that of the
        answer that stopped it, if one did (``None`` when nothing was sent)."""
        breaker = self.breaker
        if breaker.state is CircuitState.HALF_OPEN:
            when = "a trial request is under way"
        else:
            when = f"retrying in {math.ceil(breaker.retry_in())}s"
        message = (
            f"{what}: {self.circuit_error} open after {breaker.failures} consecutive "
            f"failures; {when}"
        )
        if reason:
            message += f" (last failure: {reason})"
        return TransientProviderError(message, status=None, request_id=request_id)


class TokenEndpoint(BreakingHttp):
    """Sends requests to one token endpoint within the retry budget and the breaker;
    its errors are classified by ``tokenbroker.providers.errors`` and carry the id of
    ``request_id_header``."""

    circuit = "token endpoint"

    def __init__(
        self,
        *,
        url: str,
        clock: Clock,
        retry: RetryBudget,
        breaker: CircuitBreaker,
        timeout: float,
        transport: httpx2.BaseTransport | httpx2.AsyncBaseTransport | None,
        scrub: Callable[[str], str],
        request_id_header: str,
        app: str | None = None,
    ) -> None:
        super().__init__(
            url=url,
            clock=clock,
            retry=retry,
            breaker=breaker,
            timeout=timeout,
            transport=transport,
            scrub=scrub,
            log=log,
            app=app,
        )
        self.request_id_header = request_id_header

    def _classify(self, response: httpx2.Response, what: str) -> ProviderError:
        return classify(response, what, self._scrub, self.request_id_header)
