"""Leases kept through a long fetch, and a fetch that lost its lease writes nothing.

The engine runs against the Wix emulator, whose paused answers hold a fetch in
flight for as long as the test needs; the lease TTL is short so that its
renewals (every third of it) are what keeps the lease.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tokenbroker import ManualClock, RefreshPolicy, Token, TokenBroker, TokenKey
from tokenbroker.backends.memory import MemoryStore
from tokenbroker.backends.sql import SQLStore
from tokenbroker.core.clock import SystemClock
from tokenbroker.core.engine import TokenEngine
from tokenbroker.core.protocols import TokenProvider, TokenStore
from tokenbroker.core.watchdog import LoopWatch, ThreadWatchdog
from tokenbroker.testing.emulator import WixEmulator

from .conftest import APP_ID, APP_SECRET, INSTANCE
from .polling import wait_until

TTL = 0.6
KEY = TokenKey("wix", APP_ID, INSTANCE)


@pytest.fixture
def provider(wix_emulator: WixEmulator) -> Iterator[TokenProvider]:
    with TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store="memory://", api_url=wix_emulator.url
    ) as broker:
        yield broker.provider


def engine_on(provider: TokenProvider, store: TokenStore) -> TokenEngine:
    return TokenEngine(
        provider=provider,
        store=store,
        policy=RefreshPolicy(jitter=0.0),
        clock=SystemClock(),
        lease_ttl=TTL,
        wait_timeout=30.0,
    )


@pytest.fixture
def sql_store(tmp_path: Path) -> Iterator[SQLStore]:
    store = SQLStore(f"sqlite:///{tmp_path / 'fencing.db'}")
    yield store
    store.close()


def a_token(access_token: str) -> Token:
    now = datetime.now(UTC)
    return Token(
        key=KEY,
        access_token=access_token,
        token_type="Bearer",
        obtained_at=now,
        expires_at=now + timedelta(hours=4),
    )


def stays_held(store: TokenStore, seconds: float) -> int:
    """Try to take the lease on ``KEY`` for ``seconds``; how often it was refused
    (every try fails the test if one succeeds)."""
    until = time.monotonic() + seconds
    tries = 0
    while time.monotonic() < until:
        assert store.acquire_lease(KEY, 30) is None, "a second holder got the lease"
        tries += 1
        time.sleep(0.05)  # checking the whole span: a duration, not an event
    return tries


class TestTheWatchdog:
    def test_a_fetch_longer_than_the_ttl_keeps_its_lease_and_writes(
        self, wix_emulator: WixEmulator, provider: TokenProvider, sql_store: SQLStore
    ) -> None:
        engine = engine_on(provider, sql_store)
        wix_emulator.pause()
        got: list[Token] = []
        fetch = threading.Thread(target=lambda: got.append(engine.get(KEY)))
        fetch.start()
        try:
            assert wix_emulator.wait_for_in_flight(1, timeout=15)
            assert stays_held(sql_store, 4 * TTL) > 0
        finally:
            wix_emulator.resume()
            fetch.join(30)
        assert len(got) == 1
        assert sql_store.get_token(KEY) == got[0]
        assert wix_emulator.token_requests == 1
        assert sql_store.acquire_lease(KEY, 30) is not None  # released after the write

    def test_an_async_fetch_longer_than_the_ttl_keeps_its_lease_and_writes(
        self, wix_emulator: WixEmulator, provider: TokenProvider, sql_store: SQLStore
    ) -> None:
        engine = engine_on(provider, sql_store)
        wix_emulator.pause()

        async def main() -> Token:
            fetch = asyncio.create_task(engine.aget(KEY))
            try:
                assert await asyncio.to_thread(wix_emulator.wait_for_in_flight, 1, 15)
                until = time.monotonic() + 4 * TTL
                while time.monotonic() < until:
                    assert await sql_store.aacquire_lease(KEY, 30) is None
                    await asyncio.sleep(0.05)
            finally:
                wix_emulator.resume()
            return await fetch

        token = asyncio.run(main())
        assert sql_store.get_token(KEY) == token
        assert wix_emulator.token_requests == 1

    @pytest.mark.parametrize("mode", ["sync", "async"])
    def test_a_fetch_that_lost_its_lease_writes_nothing_and_serves_the_new_holders_token(
        self,
        wix_emulator: WixEmulator,
        provider: TokenProvider,
        caplog: pytest.LogCaptureFixture,
        mode: str,
    ) -> None:
        leases = ManualClock()  # the store's clock: the test makes the lease lapse
        store = MemoryStore(clock=leases)
        engine = engine_on(provider, store)
        wix_emulator.pause()
        got: list[Token] = []

        def fetch() -> None:
            got.append(engine.get(KEY) if mode == "sync" else asyncio.run(engine.aget(KEY)))

        worker = threading.Thread(target=fetch)
        with caplog.at_level(logging.WARNING, logger="tokenbroker"):
            worker.start()
            try:
                assert wix_emulator.wait_for_in_flight(1, timeout=15)
                leases.advance(10 * TTL)  # the holder's lease lapsed: it stalled
                taker = store.acquire_lease(KEY, 30)
                assert taker is not None
                newer = a_token("newer-holder")
                assert store.put_token(newer, fence=taker.fence) is True
                wait_until(lambda: "lost the lease" in caplog.text, "the watchdog to find it lost")
            finally:
                wix_emulator.resume()
                worker.join(30)
        assert got == [newer]
        assert store.get_token(KEY) == newer
        assert "not writing the new token" in caplog.text
        fetched = wix_emulator.issued_tokens_for(INSTANCE)
        assert len(fetched) == 1
        assert fetched[0] not in caplog.text  # the warnings name no token


class TestWatchdogs:
    def test_one_thread_renews_every_watched_lease_until_stopped_or_lost(self) -> None:
        store = MemoryStore()
        watchdog = ThreadWatchdog(name=f"watchdog-{uuid.uuid4().hex}")
        keys = [TokenKey("wix", "app", f"inst-{i}") for i in range(5)]
        leases = [store.acquire_lease(key, 0.3) for key in keys]
        watches = [watchdog.watch(lease, 0.3, store.renew_lease) for lease in leases if lease]
        assert len(watches) == 5
        wait_until(lambda: all(w.renewals >= 2 for w in watches), "two renewals of each")
        named = [t for t in threading.enumerate() if t.name == watchdog._name]
        assert len(named) == 1
        # one lease taken over behind the watch's back: its next renewal finds it lost
        taken = watches[0].lease
        assert store.release_lease(taken) is True
        assert store.acquire_lease(taken.key, 30) is not None
        wait_until(lambda: watches[0].lost, "the watch to find its lease lost")
        for watch in watches[1:]:
            watchdog.stop(watch)
        assert not any(w.lost for w in watches[1:])
        assert all(store.acquire_lease(key, 30) is None for key in keys[1:])

    def test_a_loop_watch_renews_on_the_loop_and_stops_with_its_fetch(self) -> None:
        store = MemoryStore()

        async def main() -> tuple[int, bool]:
            lease = await store.aacquire_lease(KEY, 0.3)
            assert lease is not None
            watch = LoopWatch(lease, 0.3, store.arenew_lease)
            while watch.watch.renewals < 3:
                await asyncio.sleep(0.02)  # polling what the renewals show
            watch.stop()
            assert await store.aacquire_lease(KEY, 30) is None
            return watch.watch.renewals, watch.lost

        renewals, lost = asyncio.run(asyncio.wait_for(main(), 15))
        assert renewals >= 3
        assert lost is False
