"""Refresh tokens under contention: rotation is never lost, and one cold key costs one
refresh however many threads, brokers and processes ask for it.

Two brokers on one SQLite file stand for two processes: each has its own near cache,
single-flight and provider, and only the store (its leases and compare-and-set) joins
them. Where a test needs two refreshes to overlap, which the fleet lease prevents, it
calls the providers directly or makes one read stale on purpose.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tokenbroker import InstanceNotInstalled, Token, TokenBroker, store_from_url
from tokenbroker.backends.wrapper import StoreWrapper
from tokenbroker.core.clock import ManualClock, OffsetClock
from tokenbroker.core.protocols import Store
from tokenbroker.core.token import TokenKey
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.wix.legacy import LegacyProvider

from ..workers import collect, go, start
from .test_legacy import (
    APP_ID,
    APP_SECRET,
    DUE,
    INSTANCE,
    assert_newest_kept,
    install,
    issued,
    legacy_broker,
    stored_refresh,
    stored_refresh_token,
)

FOREVER = 10.0**12
"""A ``want_until`` no token outlives: ``engine.refresh`` then always asks Wix."""


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[WixEmulator]:
    with WixEmulator(APP_ID, APP_SECRET, clock=clock.time) as emu:
        yield emu


def provider_of(broker: TokenBroker) -> LegacyProvider:
    provider = broker.provider
    assert isinstance(provider, LegacyProvider)
    return provider


def threads(count: int, work: Callable[[int], None]) -> None:
    pool = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    assert not any(thread.is_alive() for thread in pool)


class StaleRead(StoreWrapper):
    """A store whose first read of a refresh token runs ``meanwhile`` after reading:
    another process's refresh lands between this one's read and its request."""

    def __init__(self, inner: Store, meanwhile: Callable[[], None]) -> None:
        super().__init__(inner)
        self._meanwhile: Callable[[], None] | None = meanwhile

    def get_token(self, key: TokenKey) -> Token | None:
        found = self.inner.get_token(key)
        hook, self._meanwhile = self._meanwhile, None
        if hook is not None and key.provider == "wix-legacy~refresh":
            hook()
        return found


class TestTwoBrokersOnOneStore:
    def test_threads_of_two_brokers_refreshing_at_once_lose_no_rotation(
        self, emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        with (
            legacy_broker(emulator, sqlite_url, clock) as one,
            legacy_broker(emulator, sqlite_url, clock) as two,
        ):
            install(one, emulator)
            errors: list[BaseException] = []
            got: list[Token] = []

            def work(n: int) -> None:
                broker = (one, two)[n % 2]
                try:
                    key = broker.key(INSTANCE)
                    got.extend(broker.engine.refresh(key, want_until=FOREVER) for _ in range(2))
                except BaseException as exc:
                    errors.append(exc)

            threads(6, work)
            assert errors == []
            assert len(got) == 12
            assert all(issued(emulator, token) for token in got)
            assert emulator.access_requests == 1 + 12  # the lease serialised them all
            assert_newest_kept(one, emulator)
            assert len(emulator.refresh_tokens_for(INSTANCE)) == 13

    def test_overlapping_refreshes_never_store_an_older_refresh_token(
        self, emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        """No lease at all (the providers are called directly): some calls find their
        refresh token swapped and refused, but the store ends with the newest one."""
        with (
            legacy_broker(emulator, sqlite_url, clock) as one,
            legacy_broker(emulator, sqlite_url, clock) as two,
        ):
            install(one, emulator)
            providers = [provider_of(one), provider_of(two)]
            key = one.key(INSTANCE)
            outcomes: list[str] = []

            def work(n: int) -> None:
                for _ in range(3):
                    try:
                        providers[n % 2].acquire(key)
                    except InstanceNotInstalled:
                        outcomes.append("refused")
                    else:
                        outcomes.append("ok")

            threads(8, work)
            assert "ok" in outcomes
            assert_newest_kept(one, emulator)

    def test_a_refresh_token_swapped_by_another_process_is_read_again_and_tried_once(
        self, emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        with legacy_broker(emulator, sqlite_url, clock) as other:
            install(other, emulator)
            first = stored_refresh_token(other)

            def other_process_refreshes() -> None:
                other.engine.refresh(other.key(INSTANCE), want_until=FOREVER)

            store = StaleRead(store_from_url(sqlite_url), other_process_refreshes)
            with legacy_broker(emulator, store, clock) as late:
                token = provider_of(late).acquire(late.key(INSTANCE))
            assert issued(emulator, token)
            # install, the other's refresh, the refused stale one, the retry
            assert emulator.access_requests == 4
            assert first not in emulator.live_refresh_tokens(INSTANCE)
            assert_newest_kept(other, emulator)

    def test_refused_again_after_the_retry_the_grant_is_gone(
        self, emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        with legacy_broker(emulator, sqlite_url, clock) as other:
            install(other, emulator)

            def swapped_then_revoked() -> None:
                other.engine.refresh(other.key(INSTANCE), want_until=FOREVER)
                emulator.revoke_grants(INSTANCE)

            store = StaleRead(store_from_url(sqlite_url), swapped_then_revoked)
            with (
                legacy_broker(emulator, store, clock) as late,
                pytest.raises(InstanceNotInstalled, match="grant is gone"),
            ):
                provider_of(late).acquire(late.key(INSTANCE))
            assert emulator.access_requests == 4  # tried once more, not again

    def test_a_host_whose_clock_runs_behind_still_stores_the_newer_token(
        self, emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        ahead = OffsetClock(clock, 120.0)
        with (
            legacy_broker(emulator, sqlite_url, ahead) as fast,
            legacy_broker(emulator, sqlite_url, clock) as slow,
        ):
            install(fast, emulator)
            fast.engine.refresh(fast.key(INSTANCE), want_until=FOREVER)
            version = stored_refresh(fast)
            assert version is not None
            slow.engine.refresh(slow.key(INSTANCE), want_until=FOREVER)
            newer = stored_refresh(slow)
            assert newer is not None
            assert newer.obtained_at > version.obtained_at  # later than the one swapped
            assert_newest_kept(slow, emulator)


class TestTheHerd:
    def test_forty_threads_of_two_brokers_on_a_due_token_make_one_refresh(
        self, emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        with (
            legacy_broker(emulator, sqlite_url, clock) as one,
            legacy_broker(emulator, sqlite_url, clock) as two,
        ):
            install(one, emulator)
            clock.advance(DUE)
            emulator.latency = 0.2  # the leader's request stays in flight while the herd asks
            seen: set[str] = set()
            errors: list[BaseException] = []

            def work(n: int) -> None:
                broker = (one, two)[n % 2]
                try:
                    seen.add(broker.token(INSTANCE).access_token)
                except BaseException as exc:
                    errors.append(exc)

            threads(40, work)
            assert errors == []
            assert len(seen) == 1
            assert emulator.access_requests == 2  # the install, then one refresh
            assert_newest_kept(one, emulator)

    async def test_a_hundred_tasks_on_a_due_token_make_one_refresh(
        self, emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        async with legacy_broker(emulator, sqlite_url, clock) as broker:
            install(broker, emulator)
            clock.advance(DUE)
            emulator.latency = 0.1
            tokens = await asyncio.gather(*(broker.atoken(INSTANCE) for _ in range(100)))
            assert len({t.access_token for t in tokens}) == 1
            assert emulator.access_requests == 2
            assert_newest_kept(broker, emulator)


RACER = f"""
import json, sys
from tokenbroker import TokenBroker
url, store, instance, rounds = sys.argv[1:5]
broker = TokenBroker(app_id={APP_ID!r}, app_secret={APP_SECRET!r}, store=store, api_url=url,
                     provider="wix-legacy")
key = broker.key(instance)
broker.installations()  # connect before the start signal
print("ready", flush=True)
sys.stdin.readline()
errors = []
for _ in range(int(rounds)):
    try:
        broker.engine.refresh(key, want_until=1e12)
    except Exception as exc:
        errors.append(repr(exc))
broker.close()
print(json.dumps({{"errors": errors}}), flush=True)
"""


class TestTwoProcesses:
    def test_processes_refreshing_at_once_lose_no_rotation(
        self, emulator: WixEmulator, tmp_path: Path
    ) -> None:
        store = f"sqlite:///{tmp_path / 'race.db'}"
        with TokenBroker(
            app_id=APP_ID,
            app_secret=APP_SECRET,
            store=store,
            api_url=emulator.url,
            provider="wix-legacy",
        ) as broker:
            install(broker, emulator)
            workers = [start(RACER, [emulator.url, store, INSTANCE, "4"]) for _ in range(2)]
            go(*workers)
            results = collect(workers, timeout=120)
            assert [r["errors"] for r in results] == [[], []]
            assert emulator.access_requests == 1 + 8
            assert_newest_kept(broker, emulator)
