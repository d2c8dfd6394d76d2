"""The get-or-refresh engine, with a scripted provider and the real memory store."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable

import pytest

from tokenbroker import (
    InvalidCredentials,
    ManualClock,
    RefreshPolicy,
    Token,
    TokenKey,
    TransientProviderError,
)
from tokenbroker.backends.memory import MemoryStore
from tokenbroker.core.clock import to_datetime
from tokenbroker.core.engine import TokenEngine
from tokenbroker.core.nearcache import NearCache

KEY = TokenKey("wix", "app", "inst")
T0 = 1_800_000_000.0
LIFE = 4 * 3600


class ScriptedProvider:
    """A provider whose answers the test decides; counts calls."""

    name = "wix"

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.calls = 0
        self.error: Exception | None = None
        self.gate: threading.Event | None = None
        self.agate: asyncio.Event | None = None
        self.during: Callable[[], None] | None = None
        self._serial = itertools.count(1)
        self._lock = threading.Lock()

    def _issue(self, key: TokenKey) -> Token:
        with self._lock:
            self.calls += 1
        if self.during is not None:
            self.during()
        if self.error is not None:
            raise self.error
        now = self.clock.time()
        return Token(
            key=key,
            access_token=f"tok-{next(self._serial)}",
            token_type="Bearer",
            expires_at=to_datetime(now + LIFE),
            obtained_at=to_datetime(now),
        )

    def acquire(self, key: TokenKey) -> Token:
        if self.gate is not None:
            assert self.gate.wait(10)
        return self._issue(key)

    async def aacquire(self, key: TokenKey) -> Token:
        if self.agate is not None:
            await asyncio.wait_for(self.agate.wait(), 10)
        return self._issue(key)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=T0)


@pytest.fixture
def provider(clock: ManualClock) -> ScriptedProvider:
    return ScriptedProvider(clock)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def engine(provider: ScriptedProvider, store: MemoryStore, clock: ManualClock) -> TokenEngine:
    return TokenEngine(
        provider=provider,
        store=store,
        policy=RefreshPolicy(jitter=0.0),
        clock=clock,
        near_cache=NearCache(),
        lease_ttl=5.0,
        wait_timeout=10.0,
    )


def run_threads(count: int, target: Callable[[], object]) -> list[object]:
    results: list[object] = []
    barrier = threading.Barrier(count)

    def work() -> None:
        barrier.wait()
        try:
            results.append(target())
        except Exception as exc:  # collected for the assertion
            results.append(exc)

    threads = [threading.Thread(target=work) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


class TestSingleFlight:
    def test_fifty_threads_on_a_cold_cache_make_one_upstream_request(
        self, engine: TokenEngine, provider: ScriptedProvider
    ) -> None:
        provider.gate = threading.Event()
        threading.Timer(0.2, provider.gate.set).start()  # let the herd pile up behind the leader
        results = run_threads(50, lambda: engine.get(KEY))
        assert provider.calls == 1
        assert {r.access_token for r in results if isinstance(r, Token)} == {"tok-1"}
        assert len(results) == 50

    async def test_five_hundred_tasks_on_a_cold_cache_make_one_upstream_request(
        self, engine: TokenEngine, provider: ScriptedProvider
    ) -> None:
        provider.agate = asyncio.Event()
        tasks = [asyncio.create_task(engine.aget(KEY)) for _ in range(500)]
        await asyncio.sleep(0)  # let every task start and join the flight
        provider.agate.set()
        tokens = await asyncio.gather(*tasks)
        assert provider.calls == 1
        assert {t.access_token for t in tokens} == {"tok-1"}

    def test_an_upstream_error_reaches_every_waiting_thread_once(
        self, engine: TokenEngine, provider: ScriptedProvider
    ) -> None:
        provider.error = InvalidCredentials("refused", status=401)
        provider.gate = threading.Event()
        threading.Timer(0.2, provider.gate.set).start()
        results = run_threads(20, lambda: engine.get(KEY))
        assert all(isinstance(r, InvalidCredentials) for r in results)
        assert provider.calls == 1

    async def test_an_upstream_error_reaches_every_waiting_task(
        self, engine: TokenEngine, provider: ScriptedProvider
    ) -> None:
        provider.error = InvalidCredentials("refused", status=401)
        provider.agate = asyncio.Event()
        tasks = [asyncio.create_task(engine.aget(KEY)) for _ in range(20)]
        await asyncio.sleep(0)
        provider.agate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, InvalidCredentials) for r in results)
        assert provider.calls == 1

    async def test_a_cancelled_waiter_does_not_cancel_the_shared_flight(
        self, engine: TokenEngine, provider: ScriptedProvider
    ) -> None:
        provider.agate = asyncio.Event()
        leader = asyncio.create_task(engine.aget(KEY))
        follower = asyncio.create_task(engine.aget(KEY))
        await asyncio.sleep(0)
        follower.cancel()
        provider.agate.set()
        assert (await leader).access_token == "tok-1"
        assert follower.cancelled()


class TestFreshness:
    def test_a_fresh_token_is_served_from_the_near_cache_without_touching_the_store(
        self, engine: TokenEngine, store: MemoryStore
    ) -> None:
        first = engine.get(KEY)
        store.delete_token(KEY)
        assert engine.get(KEY) is first

    def test_a_token_written_by_another_process_is_used_without_an_upstream_call(
        self,
        engine: TokenEngine,
        store: MemoryStore,
        provider: ScriptedProvider,
        clock: ManualClock,
    ) -> None:
        other = RefreshPolicy().stamp(provider._issue(KEY))
        store.put_token(other)
        provider.calls = 0
        assert engine.get(KEY).access_token == other.access_token
        assert provider.calls == 0

    def test_in_the_mandatory_window_a_new_token_is_fetched(
        self, engine: TokenEngine, provider: ScriptedProvider, clock: ManualClock
    ) -> None:
        first = engine.get(KEY)
        clock.advance(LIFE - 5 * 60)
        second = engine.get(KEY)
        assert second.access_token != first.access_token
        assert provider.calls == 2

    def test_in_the_mandatory_window_errors_raise_and_the_old_token_is_not_served(
        self, engine: TokenEngine, provider: ScriptedProvider, clock: ManualClock
    ) -> None:
        engine.get(KEY)
        clock.advance(LIFE - 5 * 60)
        provider.error = TransientProviderError("Wix is down", status=503)
        with pytest.raises(TransientProviderError):
            engine.get(KEY)

    def test_an_expired_token_is_never_handed_out(
        self, engine: TokenEngine, provider: ScriptedProvider, clock: ManualClock
    ) -> None:
        engine.get(KEY)
        clock.advance(LIFE + 1)
        provider.error = TransientProviderError("Wix is down", status=503)
        with pytest.raises(TransientProviderError):
            engine.get(KEY)

    def test_in_the_advisory_window_a_failed_refresh_serves_the_valid_token_and_logs(
        self,
        engine: TokenEngine,
        provider: ScriptedProvider,
        clock: ManualClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        first = engine.get(KEY)
        clock.advance(LIFE - 20 * 60)
        provider.error = TransientProviderError("Wix is down", status=503)
        with caplog.at_level(logging.WARNING, logger="tokenbroker"):
            assert engine.get(KEY).access_token == first.access_token
        assert "early refresh" in caplog.text
        assert provider.calls == 2

    def test_in_the_advisory_window_one_caller_refreshes_early(
        self, engine: TokenEngine, provider: ScriptedProvider, clock: ManualClock
    ) -> None:
        engine.get(KEY)
        clock.advance(LIFE - 20 * 60)
        assert engine.get(KEY).access_token == "tok-2"
        assert engine.get(KEY).access_token == "tok-2"
        assert provider.calls == 2

    async def test_async_callers_in_the_advisory_window_get_the_valid_token_at_once(
        self, engine: TokenEngine, provider: ScriptedProvider, clock: ManualClock
    ) -> None:
        first = await engine.aget(KEY)
        clock.advance(LIFE - 20 * 60)
        provider.agate = asyncio.Event()
        served = await asyncio.gather(*(engine.aget(KEY) for _ in range(10)))
        assert {t.access_token for t in served} == {first.access_token}
        provider.agate.set()
        await asyncio.gather(*engine._background)
        assert (await engine.aget(KEY)).access_token == "tok-2"
        assert provider.calls == 2


class TestNearCacheAge:
    def test_news_from_another_process_is_seen_within_the_max_age(
        self,
        engine: TokenEngine,
        store: MemoryStore,
        provider: ScriptedProvider,
        clock: ManualClock,
    ) -> None:
        engine.get(KEY)
        store.delete_token(KEY)  # another process purged it (an uninstall)
        clock.advance(30)
        assert engine.get(KEY).access_token == "tok-1"  # still within the near cache's age
        clock.advance(31)
        assert engine.get(KEY).access_token == "tok-2"  # the store was asked again
        assert provider.calls == 2

    def test_an_aged_entry_whose_token_is_still_stored_costs_no_upstream_call(
        self, engine: TokenEngine, provider: ScriptedProvider, clock: ManualClock
    ) -> None:
        engine.get(KEY)
        clock.advance(120)
        assert engine.get(KEY).access_token == "tok-1"
        assert provider.calls == 1

    def test_an_uninstalled_instance_loses_its_advisory_token_at_once(
        self, engine: TokenEngine, provider: ScriptedProvider, clock: ManualClock
    ) -> None:
        from tokenbroker import InstanceNotInstalled

        engine.get(KEY)
        clock.advance(LIFE - 20 * 60)  # advisory: a failure would normally serve the old one
        provider.error = InstanceNotInstalled("gone", status=400)
        with pytest.raises(InstanceNotInstalled):
            engine.get(KEY)
        assert engine.near is not None
        assert engine.near.get(KEY) is None


class TestFleetLease:
    def test_a_caller_waits_for_the_lease_holder_and_uses_its_token(
        self, engine: TokenEngine, store: MemoryStore, provider: ScriptedProvider
    ) -> None:
        lease = store.acquire_lease(KEY, ttl=30)
        assert lease is not None
        result: list[Token] = []
        waiter = threading.Thread(target=lambda: result.append(engine.get(KEY)))
        waiter.start()
        written = RefreshPolicy().stamp(provider._issue(KEY))
        store.put_token(written)
        store.release_lease(lease)
        waiter.join(10)
        assert result[0].access_token == written.access_token
        assert provider.calls == 1  # the one the "other process" made

    def test_a_lease_whose_holder_died_lapses_and_the_waiter_takes_over(
        self, engine: TokenEngine, store: MemoryStore, provider: ScriptedProvider
    ) -> None:
        assert store.acquire_lease(KEY, ttl=0.3) is not None  # never released
        assert engine.get(KEY).access_token == "tok-1"
        assert provider.calls == 1

    def test_a_slow_writer_does_not_overwrite_a_newer_token(
        self,
        engine: TokenEngine,
        store: MemoryStore,
        provider: ScriptedProvider,
        clock: ManualClock,
    ) -> None:
        newer_holder: list[Token] = []

        def another_process_finishes_first() -> None:
            provider.during = None
            clock.advance(1)
            newer = RefreshPolicy().stamp(provider._issue(KEY))
            clock.advance(-1)
            store.put_token(newer)
            newer_holder.append(newer)

        provider.during = another_process_finishes_first
        got = engine.get(KEY)
        assert store.get_token(KEY) == newer_holder[0]
        assert got.access_token == newer_holder[0].access_token


class TestInvalidation:
    def test_invalidate_drops_the_refused_token_but_not_a_newer_one(
        self, engine: TokenEngine, store: MemoryStore, clock: ManualClock
    ) -> None:
        old = engine.get(KEY)
        engine.invalidate(old)
        new = engine.get(KEY)
        assert new.access_token != old.access_token
        engine.invalidate(old)  # a late second 401 for the old token
        assert store.get_token(KEY) == new
        assert engine.get(KEY) is new
