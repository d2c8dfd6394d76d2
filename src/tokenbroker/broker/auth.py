"""``broker.auth(instance_id)``: an httpx2 ``Auth`` (and an httpx one) for Wix calls.

It sets ``Authorization: <raw token>`` (Wix wants no ``Bearer`` prefix). Wix answers
401 for a stale token (revoked, say by a reinstall) and (assumed: seen in use, not
documented) for a missing permission; a new token cures only the first, and each one
spends Wix's per-instance budget (about 200 requests a minute). So, on a 401, the
request is retried once:

* with a token newer than the refused one, if one is known (another request got it,
  here or, through the store, in another process): no new token;
* else with a new token, unless a 401 already got one for that instance within
  ``grace`` seconds (default 30): then the 401 is returned as it is, and logged
  (a WARNING once per grace period per instance) with Wix's ``x-wix-request-id``.

The grace is fleet-wide: the right to re-mint is the store's lease (an atomic
set-if-absent on every backend) on ``TokenKey("tokenbroker~401", app_id,
instance_id)`` with ``ttl=grace``. In the process, ``RemintGuard`` (bounded, on the
broker's clock) keeps each instance's last re-mint: a storm of 401s costs no store
round trip, and requests refused during a re-mint wait for its token. ``grace=0``
re-mints on every 401.

The decisions are one generator, ``_flow``; ``sync_auth_flow`` and ``async_auth_flow``
only drive it. The class derives from httpx2's ``Auth`` and, where httpx is
installed, httpx's (one protocol): httpx clients take it, and httpx is no dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncGenerator, Generator
from concurrent.futures import Future, InvalidStateError, wait
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeGuard

import attrs
import httpx2

from ..core.engine import NO_LEASE
from ..core.errors import ConfigError, StorageError
from ..core.flow import Flow, Op
from ..core.ops import AcquireLease, GetToken, ReleaseLease
from ..core.token import TokenKey

if TYPE_CHECKING:
    from ..core.engine import TokenEngine
    from ..core.protocols import Lease, TokenStore
    from ..core.token import Token

log = logging.getLogger("tokenbroker.auth")

DEFAULT_GRACE: Final = 30.0
"""Seconds after a 401-driven re-mint during which another 401 is not re-minted."""
REMINT_LEASE_PROVIDER: Final = "tokenbroker~401"
"""The ``provider`` part of the reserved lease key that grants one re-mint."""
MAX_REMINT_RECORDS: Final = 10_000
"""How many instances' last re-mint one broker remembers (the oldest goes first)."""
# Seen in Wix's SDK: fetch-error.js and rest-modules.js read it as the request's id.
REQUEST_ID_HEADER: Final = "x-wix-request-id"


def check_grace(value: object, what: str = "grace") -> float:
    """``value`` as a grace period in seconds: a finite number, at least 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what} must be a finite number of seconds, at least 0, not {value}")
    return float(value)


class TokenSource(Protocol):
    """What the auth needs of the broker."""

    @property
    def store(self) -> TokenStore: ...

    @property
    def engine(self) -> TokenEngine: ...

    def key(self, instance_id: str) -> TokenKey: ...

    def token(self, instance_id: str) -> Token: ...

    async def atoken(self, instance_id: str) -> Token: ...

    def invalidate(self, token: Token) -> None: ...

    async def ainvalidate(self, token: Token) -> None: ...


@attrs.frozen
class _TokenFor(Op["Token"]):
    instance_id: str

    def run(self, port: TokenSource) -> Token:
        return port.token(self.instance_id)

    async def arun(self, port: TokenSource) -> Token:
        return await port.atoken(self.instance_id)


@attrs.frozen
class _Invalidate(Op[None]):
    token: Token

    def run(self, port: TokenSource) -> None:
        port.invalidate(self.token)

    async def arun(self, port: TokenSource) -> None:
        await port.ainvalidate(self.token)


@attrs.frozen
class _Await(Op["Token | None"]):
    """The token a re-mint under way produces; ``None`` if it fails or takes too long."""

    future: Future[Token | None]
    timeout: float

    def run(self, port: object) -> Token | None:
        wait([self.future], self.timeout)
        return self.future.result() if self.future.done() else None

    async def arun(self, port: object) -> Token | None:
        # Not wrap_future: a waiter's cancellation must not cancel the shared future.
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def wake(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there
                loop.call_soon_threadsafe(done.set)

        self.future.add_done_callback(wake)
        try:
            await asyncio.wait_for(done.wait(), self.timeout)
        except TimeoutError:
            return None
        return self.future.result()


@attrs.define(eq=False)
class _Remint:
    """One instance's last 401-driven re-mint, as this process knows it."""

    at: float
    future: Future[Token | None] = attrs.field(factory=Future)
    lease: Lease | None = None
    foreign: bool = False  # the store refused the lease: another process re-minted
    warned: bool = False


@attrs.frozen
class _Use:
    token: Token


@attrs.frozen
class _Join:  # a re-mint within the grace: wait for it if it is under way, else refuse
    remint: _Remint


@attrs.frozen
class _Claim:
    remint: _Remint
    previous: Lease | None


class RemintGuard:
    """The 401 re-mints of one broker, at most one per instance per grace period:
    thread-safe, shared by sync and async callers, bounded, and no I/O (the flow's)."""

    def __init__(self, engine: TokenEngine, *, max_records: int = MAX_REMINT_RECORDS) -> None:
        if max_records < 1:
            raise ConfigError(f"max_records must be at least 1, not {max_records}")
        self._engine = engine
        self._max = max_records
        self._records: dict[TokenKey, _Remint] = {}
        self._lock = threading.Lock()

    @staticmethod
    def lease_key(key: TokenKey) -> TokenKey:
        """The reserved key whose lease grants one re-mint for ``key``, fleet-wide."""
        return TokenKey(REMINT_LEASE_PROVIDER, key.app_id, key.instance_id)

    def newer(self, candidate: Token | None, sent: Token) -> TypeGuard[Token]:
        """Whether ``candidate`` can stand in for the refused ``sent`` token."""
        return (
            candidate is not None
            and candidate.access_token != sent.access_token
            and candidate.obtained_at >= sent.obtained_at
            and self._engine.policy.state(candidate, self._engine.clock.time()).servable
        )

    def decide(self, key: TokenKey, sent: Token, grace: float) -> _Use | _Join | _Claim:
        """What to do about a 401 for ``sent``, judged on what the process knows."""
        now = self._engine.clock.time()
        with self._lock:
            near = self._engine.near.get(key) if self._engine.near is not None else None
            if near is not None and self.newer(near.token, sent):
                return _Use(near.token)
            last = self._records.get(key)
            # a clock that went back ends the grace: one token too many beats a stuck 401
            if last is not None and 0 <= now - last.at < grace:
                if not last.future.done():
                    return _Join(last)
                known = last.future.result()
                return _Use(known) if self.newer(known, sent) else _Join(last)
            claim = _Remint(at=now)
            self._records.pop(key, None)
            while len(self._records) >= self._max:
                del self._records[next(iter(self._records))]
            self._records[key] = claim
            return _Claim(claim, last.lease if last is not None else None)

    @staticmethod
    def settle(remint: _Remint, token: Token | None) -> None:
        """Hand the re-mint's outcome to the requests waiting for it."""
        with contextlib.suppress(InvalidStateError):  # settled already
            remint.future.set_result(token)

    def first_warning(self, key: TokenKey) -> bool:
        """True once per re-mint: whether a 401 returned as it is is worth a WARNING."""
        with self._lock:
            if (remint := self._records.get(key)) is None:
                return True
            first, remint.warned = not remint.warned, True
            return first


def _authorize(request: Any, token: Token) -> Any:
    request.headers["Authorization"] = token.access_token
    return request


def _httpx_auth_base() -> type[httpx2.Auth]:
    """httpx2's ``Auth``, joined by httpx's when httpx is importable."""
    try:
        import httpx  # noqa: PLC0415 - optional: only to be accepted by httpx clients
    except ImportError:
        return httpx2.Auth
    return type("_Auth", (httpx2.Auth, httpx.Auth), {})


_AuthBase: type[httpx2.Auth] = httpx2.Auth if TYPE_CHECKING else _httpx_auth_base()


class BrokerAuth(_AuthBase):  # type: ignore[misc,valid-type]
    """Sets ``Authorization: <raw token>``; on a 401 retries once with a newer token,
    re-minting at most once per instance per ``grace`` seconds (see the module)."""

    requires_request_body = True  # the body is replayed on the retry

    def __init__(
        self,
        broker: TokenSource,
        instance_id: str,
        *,
        grace: float = DEFAULT_GRACE,
        guard: RemintGuard | None = None,
    ) -> None:
        self._broker = broker
        self._key = broker.key(instance_id)
        self.instance_id = self._key.instance_id
        self.grace = check_grace(grace)
        self._guard = guard if guard is not None else RemintGuard(broker.engine)

    def __repr__(self) -> str:
        return f"BrokerAuth(instance_id={self.instance_id!r}, grace={self.grace:g})"

    def _flow(self, request: Any) -> Generator[Any, Any, None]:
        # It yields a request for the client to send, or an op on the broker.
        token = yield from _TokenFor(self.instance_id)
        response = yield _authorize(request, token)
        if response.status_code != 401:
            return
        retry = yield from self._after_401(token, request, response)
        if retry is not None:
            response = yield _authorize(request, retry)
            if response.status_code == 401:
                self._refused(request, response, "with a newer token too")

    def _after_401(self, sent: Token, request: Any, response: Any) -> Flow[Token | None]:
        """The token to retry with, or ``None``: the 401 goes back as it is."""
        decision = self._guard.decide(self._key, sent, self.grace)
        if isinstance(decision, _Use):
            return decision.token
        if isinstance(decision, _Claim):
            return (yield from self._remint(decision, sent, request, response))
        remint, newer = decision.remint, None
        if not remint.future.done():
            newer = yield from _Await(remint.future, self._broker.engine.wait_timeout)
        elif remint.foreign:  # re-minted by another process: the store has its token
            newer = yield from self._stored_newer(sent)
        if self._guard.newer(newer, sent):
            return newer
        self._refused(request, response)
        return None

    def _remint(
        self, claim: _Claim, sent: Token, request: Any, response: Any
    ) -> Flow[Token | None]:
        health = self._broker.engine.health
        remint, token = claim.remint, None
        try:
            if claim.previous is not None:  # ours, and past its grace by the broker's clock
                with contextlib.suppress(StorageError):  # it lapses by itself
                    yield from ReleaseLease(claim.previous)
            lease: Lease | None = NO_LEASE  # grace 0, or the store is out: decide alone
            if self.grace > 0:
                grant = AcquireLease(RemintGuard.lease_key(self._key), self.grace)
                lease = yield from health.guard(grant, NO_LEASE)
            if lease is None:  # another process re-minted within the grace
                remint.foreign = True
                token = yield from self._stored_newer(sent)
            else:
                remint.lease = None if lease is NO_LEASE else lease
                log.info(
                    "401 from Wix for instance %s (%s); getting a new token",
                    self.instance_id,
                    _about(request, response),
                )
                yield from _Invalidate(sent)
                token = yield from _TokenFor(self.instance_id)
        finally:
            self._guard.settle(remint, token)
        if token is None:
            self._refused(request, response)
        return token

    def _stored_newer(self, sent: Token) -> Flow[Token | None]:
        """The store's token if newer than ``sent`` (``broker.token()`` then gives it too)."""
        health = self._broker.engine.health
        stored: Token | None = yield from health.guard(GetToken(self._key), None)
        if stored is None or not self._guard.newer(stored, sent):
            return None
        near = self._broker.engine.near
        if near is not None:
            near.discard(self._key, only=sent.access_token)
        return stored

    def _refused(self, request: Any, response: Any, why: str = "") -> None:
        log.log(
            logging.WARNING if self._guard.first_warning(self._key) else logging.DEBUG,
            "401 from Wix for instance %s (%s) %s; returned as it is (a missing permission?)",
            self.instance_id,
            _about(request, response),
            why or f"within {self.grace:g}s of a new token, so no new token",
        )

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        request.read()
        flow = self._flow(request)
        try:
            step = next(flow)
            while True:
                if isinstance(step, Op):
                    try:
                        result = step.run(self._broker)
                    except BaseException as exc:
                        step = flow.throw(exc)
                        continue
                else:
                    result = yield step
                step = flow.send(result)
        except StopIteration:
            return
        finally:
            flow.close()

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        await request.aread()
        flow = self._flow(request)
        try:
            step = next(flow)
            while True:
                if isinstance(step, Op):
                    try:
                        result = await step.arun(self._broker)
                    except BaseException as exc:
                        step = flow.throw(exc)
                        continue
                else:
                    result = yield step
                step = flow.send(result)
        except StopIteration:
            return
        finally:
            flow.close()


def _about(request: Any, response: Any) -> str:
    """``METHOD /path, request id <Wix's id>``: no query string, which may carry data."""
    request_id = response.headers.get(REQUEST_ID_HEADER) or "none"
    return f"{request.method} {request.url.path}, request id {request_id}"
