"""The 401 policy of ``broker.auth()``: a stale token is replaced at once, a permission
401 costs at most one new token per instance per grace period, fleet-wide.

Tokens come from the Wix emulator over loopback (``emulator.token_requests`` counts
them). The API called with them is either the emulator (which answers 401 for a
revoked token) or a ``MockTransport`` that answers 401 to every token, as Wix does
when the app lacks a permission, with an ``x-wix-request-id`` on each answer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

from tokenbroker import TokenBroker
from tokenbroker.broker.auth import RemintGuard
from tokenbroker.core.clock import ManualClock
from tokenbroker.core.errors import ConfigError, TokenBrokerError
from tokenbroker.testing.emulator import WixEmulator

from .conftest import APP_ID, APP_SECRET, INSTANCE

LIBRARIES = {"httpx2": httpx2, "httpx": httpx}
KINDS = ["httpx2.Client", "httpx2.AsyncClient", "httpx.Client", "httpx.AsyncClient"]
CONCURRENT = 20


class PermissionRefused:
    """A Wix API that answers 401 to every token, each answer with its own request id.

    With ``hold`` set, requests carrying that token wait until ``hold_count`` of them
    have arrived, so they all get their 401 before any of them can re-mint."""

    def __init__(self, library: str) -> None:
        self.lib: Any = LIBRARIES[library]
        self.sent: list[str] = []
        self.hold: str | None = None
        self.hold_count = CONCURRENT
        self._lock = threading.Lock()
        self._thread_barrier: threading.Barrier | None = None
        self._task_barrier: asyncio.Barrier | None = None

    def _answer(self, request: Any) -> Any:
        with self._lock:
            self.sent.append(request.headers["Authorization"])
            n = len(self.sent)
        # Assumed: the body of Wix's permission 401 (the auth reads only the status
        # and the x-wix-request-id header).
        body = {"message": "Permission denied", "details": {}}
        return self.lib.Response(401, headers={"x-wix-request-id": f"req-{n}"}, json=body)

    def handle(self, request: Any) -> Any:
        if self.hold is not None and request.headers["Authorization"] == self.hold:
            with self._lock:
                if self._thread_barrier is None:
                    self._thread_barrier = threading.Barrier(self.hold_count, timeout=30)
            self._thread_barrier.wait()
        return self._answer(request)

    async def ahandle(self, request: Any) -> Any:
        if self.hold is not None and request.headers["Authorization"] == self.hold:
            if self._task_barrier is None:
                self._task_barrier = asyncio.Barrier(self.hold_count)
            async with asyncio.timeout(30):
                await self._task_barrier.wait()
        return self._answer(request)

    def client(self, kind: str, auth: Any) -> Any:
        cls = getattr(self.lib, kind.split(".")[1])
        is_async = kind.endswith("AsyncClient")
        transport = self.lib.MockTransport(self.ahandle if is_async else self.handle)
        return cls(base_url="https://www.wixapis.com", transport=transport, auth=auth)


def library_of(kind: str) -> str:
    return kind.split(".", maxsplit=1)[0]


async def call(kind: str, target: PermissionRefused, auth: Any) -> Any:
    """One request through a fresh client of ``kind``; the response."""
    client = target.client(kind, auth)
    if kind.endswith("AsyncClient"):
        async with client:
            return await client.get("/stores/v1/products")
    with client:
        return client.get("/stores/v1/products")


async def call_emulator(kind: str, url: str, auth: Any) -> Any:
    cls = getattr(LIBRARIES[library_of(kind)], kind.split(".")[1])
    if kind.endswith("AsyncClient"):
        async with cls(base_url=url, auth=auth) as client:
            return await client.get("/apps/v1/instance")
    with cls(base_url=url, auth=auth) as client:
        return client.get("/apps/v1/instance")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make_broker(emulator: WixEmulator, store: str, clock: ManualClock, **kw: Any) -> TokenBroker:
    return TokenBroker(
        app_id=APP_ID,
        app_secret=APP_SECRET,
        store=store,
        api_url=emulator.url,
        clock=clock,
        **kw,
    )


@pytest.fixture
def broker(wix_emulator: WixEmulator, sqlite_url: str, clock: ManualClock) -> Iterator[TokenBroker]:
    with make_broker(wix_emulator, sqlite_url, clock) as b:
        yield b


@pytest.mark.parametrize("kind", KINDS)
class TestOneInstance:
    async def test_a_revoked_token_is_replaced_at_once(
        self, kind: str, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        old = await broker.atoken(INSTANCE)
        wix_emulator.revoke(old.access_token)
        response = await call_emulator(kind, wix_emulator.url, broker.auth(INSTANCE))
        assert response.status_code == 200
        assert wix_emulator.token_requests == 2
        assert response.request.headers["Authorization"] != old.access_token
        assert wix_emulator.calls["apps/v1/instance"] == 2

    async def test_a_permission_401_is_returned_after_at_most_one_new_token(
        self, kind: str, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        target = PermissionRefused(library_of(kind))
        first = await call(kind, target, broker.auth(INSTANCE))
        assert first.status_code == 401
        assert first.headers["x-wix-request-id"] == "req-2"
        assert wix_emulator.token_requests == 2  # the first token, and one new one
        assert len(target.sent) == 2
        assert target.sent[0] != target.sent[1]
        # within the grace: the 401 comes back as it is, no new token, no retry
        for _ in range(3):
            again = await call(kind, target, broker.auth(INSTANCE))
            assert again.status_code == 401
        assert wix_emulator.token_requests == 2
        assert target.sent[2:] == [target.sent[1]] * 3

    async def test_after_the_grace_a_401_gets_a_new_token_again(
        self, kind: str, broker: TokenBroker, wix_emulator: WixEmulator, clock: ManualClock
    ) -> None:
        target = PermissionRefused(library_of(kind))
        auth = broker.auth(INSTANCE, grace=10)
        await call(kind, target, auth)
        clock.advance(9.5)
        await call(kind, target, auth)
        assert wix_emulator.token_requests == 2
        clock.advance(0.5)
        response = await call(kind, target, auth)
        assert response.status_code == 401
        assert wix_emulator.token_requests == 3
        assert len(set(target.sent)) == 3
        assert target.sent[-1] == (await broker.atoken(INSTANCE)).access_token

    async def test_grace_0_gets_a_new_token_on_every_401(
        self, kind: str, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        target = PermissionRefused(library_of(kind))
        for _ in range(3):
            response = await call(kind, target, broker.auth(INSTANCE, grace=0))
            assert response.status_code == 401
        assert wix_emulator.token_requests == 4
        assert len(target.sent) == 6
        assert len(set(target.sent)) == 4


class TestConcurrency:
    @pytest.mark.parametrize("library", sorted(LIBRARIES))
    def test_threads_that_all_get_a_401_cost_one_new_token(
        self, library: str, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        old = broker.token(INSTANCE).access_token
        target = PermissionRefused(library)
        target.hold = old
        with (
            target.client(f"{library}.Client", broker.auth(INSTANCE)) as client,
            ThreadPoolExecutor(CONCURRENT) as pool,
        ):
            responses = list(pool.map(lambda _: client.get("/x"), range(CONCURRENT)))
        self.check(responses, target, wix_emulator, old)

    @pytest.mark.parametrize("library", sorted(LIBRARIES))
    async def test_tasks_that_all_get_a_401_cost_one_new_token(
        self, library: str, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        old = (await broker.atoken(INSTANCE)).access_token
        target = PermissionRefused(library)
        target.hold = old
        async with target.client(f"{library}.AsyncClient", broker.auth(INSTANCE)) as client:
            responses = await asyncio.gather(*(client.get("/x") for _ in range(CONCURRENT)))
        self.check(list(responses), target, wix_emulator, old)

    def test_when_the_new_token_fails_the_others_get_their_401(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        old = broker.token(INSTANCE).access_token
        wix_emulator.fail_next(401)  # Create Access Token refuses the one re-mint
        target = PermissionRefused("httpx2")
        target.hold = old

        def one(client: httpx2.Client) -> int | TokenBrokerError:
            try:
                return client.get("/x").status_code
            except TokenBrokerError as exc:
                return exc

        with (
            target.client("httpx2.Client", broker.auth(INSTANCE)) as client,
            ThreadPoolExecutor(CONCURRENT) as pool,
        ):
            outcomes = list(pool.map(lambda _: one(client), range(CONCURRENT)))
        errors = [o for o in outcomes if isinstance(o, TokenBrokerError)]
        assert len(errors) == 1  # the request that asked for the new token
        assert outcomes.count(401) == CONCURRENT - 1
        assert wix_emulator.token_requests == 2
        assert target.sent == [old] * CONCURRENT

    @staticmethod
    def check(
        responses: list[Any], target: PermissionRefused, emulator: WixEmulator, old: str
    ) -> None:
        assert [r.status_code for r in responses] == [401] * CONCURRENT
        assert emulator.token_requests == 2  # the first token, and one new one
        # every request got its 401 with the old token, then retried once with the new
        assert sorted(target.sent) == sorted([old] * CONCURRENT + [target.sent[-1]] * CONCURRENT)
        assert target.sent[-1] != old


class TestFleetWide:
    async def test_another_process_uses_the_token_one_process_re_minted(
        self, wix_emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        target = PermissionRefused("httpx2")
        with (
            make_broker(wix_emulator, sqlite_url, clock) as one,
            make_broker(wix_emulator, sqlite_url, clock) as two,
        ):
            first = one.token(INSTANCE).access_token
            assert two.token(INSTANCE).access_token == first  # from the store
            await call("httpx2.Client", target, one.auth(INSTANCE))
            new = one.token(INSTANCE).access_token
            assert target.sent == [first, new]
            # the other process got its 401 with the old token: it retries with the
            # new one from the store and asks for no token of its own
            await call("httpx2.Client", target, two.auth(INSTANCE))
            await call("httpx2.Client", target, two.auth(INSTANCE))
            assert target.sent[2:] == [first, new, new]
            assert wix_emulator.token_requests == 2

    async def test_a_revoked_token_is_replaced_once_for_the_fleet(
        self, wix_emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        with (
            make_broker(wix_emulator, sqlite_url, clock) as one,
            make_broker(wix_emulator, sqlite_url, clock) as two,
        ):
            old = one.token(INSTANCE)
            two.token(INSTANCE)
            wix_emulator.revoke(old.access_token)
            for broker in (one, two):
                response = await call_emulator(
                    "httpx.Client", wix_emulator.url, broker.auth(INSTANCE)
                )
                assert response.status_code == 200
            assert wix_emulator.token_requests == 2

    def test_the_grace_is_a_lease_on_a_reserved_key(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        key = RemintGuard.lease_key(broker.key(INSTANCE))
        assert key.instance_id == INSTANCE
        assert key.app_id == APP_ID
        assert key != broker.key(INSTANCE)
        with PermissionRefused("httpx2").client("httpx2.Client", broker.auth(INSTANCE)) as c:
            c.get("/x")
        assert broker.store.acquire_lease(key, 1.0) is None  # held for the grace


class TestTheLog:
    async def test_a_refused_401_is_logged_once_per_grace_with_the_request_id(
        self, broker: TokenBroker, caplog: pytest.LogCaptureFixture, clock: ManualClock
    ) -> None:
        target = PermissionRefused("httpx2")
        auth = broker.auth(INSTANCE)
        with caplog.at_level(logging.DEBUG, logger="tokenbroker.auth"):
            for _ in range(3):
                await call("httpx2.Client", target, auth)
            clock.advance(30)
            await call("httpx2.Client", target, auth)
        ours = [r for r in caplog.records if r.name == "tokenbroker.auth"]
        warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
        # req-1: the old token, re-minted; req-2: refused (WARNING); req-3, req-4:
        # refused (DEBUG); after the grace req-5 re-mints and req-6 is refused (WARNING)
        assert len(warnings) == 2
        assert "request id req-2" in warnings[0]
        assert "request id req-6" in warnings[1]
        assert INSTANCE in warnings[0]
        assert "GET /stores/v1/products" in warnings[0]
        infos = [r.getMessage() for r in ours if r.levelno == logging.INFO]
        assert len(infos) == 2
        assert "request id req-1" in infos[0]
        assert "request id req-5" in infos[1]
        for record in ours:
            for token in set(target.sent):
                assert token not in record.getMessage()


class TestTheGraceIsChecked:
    @pytest.mark.parametrize("bad", [-1, -0.5, math.nan, math.inf, "30", True])
    def test_a_bad_grace_is_refused(self, bad: Any, broker: TokenBroker) -> None:
        with pytest.raises(ConfigError, match="grace"):
            broker.auth(INSTANCE, grace=bad)

    def test_the_default_grace_is_30_seconds(self, broker: TokenBroker) -> None:
        assert broker.auth(INSTANCE).grace == 30.0
        assert broker.auth(INSTANCE, grace=None).grace == 30.0

    def test_the_broker_default_is_checked_and_used(
        self, wix_emulator: WixEmulator, tmp_path: Path, clock: ManualClock
    ) -> None:
        url = f"sqlite:///{tmp_path / 'other.db'}"
        with pytest.raises(ConfigError, match="auth_grace"):
            make_broker(wix_emulator, url, clock, auth_grace=-1)
        with make_broker(wix_emulator, url, clock, auth_grace=5) as b:
            assert b.auth(INSTANCE).grace == 5.0
            assert b.auth(INSTANCE, grace=0).grace == 0.0
