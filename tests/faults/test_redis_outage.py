"""A private ``redis-server`` SIGKILLed under the broker, then started again.

While it is down the broker is degraded: near-cache tokens keep being served, a
miss is fetched from the emulator directly (one request for many threads), the
registry refuses with ``StoreUnavailable`` (a webhook would get 503 and Wix would
retry), and the degraded hook fires once. The first store call after the
restart ends it. The server keeps nothing on disk, so the registry is not
expected to survive the restart; what the broker wrote afterwards must be there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from tokenbroker import StoreUnavailable, TokenBroker
from tokenbroker.testing.emulator import WixEmulator

from .conftest import (
    APP_ID,
    APP_SECRET,
    HookRecorder,
    Invariants,
    RedisServer,
    Requests,
    held_until_first_request,
    in_threads,
    stored_token,
)

pytestmark = pytest.mark.backend("redis")

WARM = "inst-1"  # fetched before the kill: in the near cache
MISS = "inst-2"  # first asked for while the store is down
AFTER = "inst-3"  # first asked for after the restart
CALLERS = 12


def make_broker(emulator: WixEmulator, server: RedisServer) -> TokenBroker:
    return TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store=server.store_url(), api_url=emulator.url
    )


@pytest.fixture
def emulator(wix_emulator: WixEmulator) -> WixEmulator:
    for instance in (MISS, AFTER):
        wix_emulator.install(instance)
    return wix_emulator


@pytest.fixture
def guard(emulator: WixEmulator, redis_server: RedisServer) -> Iterator[Invariants]:
    with make_broker(emulator, redis_server) as broker:
        yield Invariants(broker, emulator)


class TestRedisKilledMidRun:
    def test_the_broker_serves_degraded_while_redis_is_down_and_recovers_after_restart(
        self,
        guard: Invariants,
        emulator: WixEmulator,
        redis_server: RedisServer,
        hooks: HookRecorder,
    ) -> None:
        broker = guard.broker
        broker.add_installations([WARM, MISS])
        guard.record_registry()
        warm = guard.token(WARM)
        assert stored_token(broker, WARM) == warm
        assert broker.engine.degraded is None

        redis_server.kill()

        # cached tokens keep being served, without a request
        requests = Requests(emulator)
        assert guard.token(WARM) == warm
        assert requests.count == 0

        # a miss is fetched directly: many threads, one request
        with held_until_first_request(emulator):
            outcomes = in_threads(CALLERS, lambda: guard.token(MISS))
        assert outcomes.errors == [], outcomes.errors
        assert len({t.access_token for t in outcomes.results}) == 1
        assert requests.count == 1
        assert isinstance(broker.engine.degraded, StoreUnavailable)
        assert len(hooks.degraded) == 1
        assert hooks.degraded[0][0] == broker.store.url
        assert isinstance(hooks.degraded[0][1], StoreUnavailable)
        assert hooks.recovered == []

        # the registry refuses rather than pretends: a webhook gets 503, Wix retries
        with pytest.raises(StoreUnavailable):
            broker.installations()
        with pytest.raises(StoreUnavailable):
            broker.add_installation(AFTER)
        with pytest.raises(StoreUnavailable):
            broker.get_installation(WARM)

        # served from the near cache all along, still one degraded report
        assert guard.token(MISS) == outcomes.results[0]
        assert len(hooks.degraded) == 1

        redis_server.start()

        # the first call that reaches the store ends degraded mode
        fresh = guard.token(AFTER)
        assert broker.engine.degraded is None
        assert hooks.recovered == [broker.store.url]
        assert len(hooks.degraded) == 1
        assert stored_token(broker, AFTER) == fresh
        assert requests.count == 2

        # and the registry works again (empty: the server kept nothing on disk)
        broker.add_installations([WARM, MISS, AFTER])
        assert guard.installed() == {WARM, MISS, AFTER}
        guard.assert_nothing_foreign_kept([WARM, MISS, AFTER])

    def test_a_second_outage_is_reported_again(
        self,
        guard: Invariants,
        emulator: WixEmulator,
        redis_server: RedisServer,
        hooks: HookRecorder,
    ) -> None:
        broker = guard.broker
        near = broker.engine.near
        assert near is not None
        for _ in range(2):
            redis_server.kill()
            with pytest.raises(StoreUnavailable):
                broker.installations()
            guard.token(MISS)  # first miss: degrades
            near.clear()
            redis_server.start()
            guard.token(WARM)  # a miss that reaches the store: recovers
            near.clear()
        assert len(hooks.degraded) == 2
        assert len(hooks.recovered) == 2
        assert broker.engine.degraded is None
        guard.assert_nothing_foreign_kept([WARM, MISS])


@pytest.fixture
async def abroker(emulator: WixEmulator, redis_server: RedisServer) -> AsyncIterator[TokenBroker]:
    async with make_broker(emulator, redis_server) as broker:
        yield broker


class TestRedisKilledUnderAsyncCallers:
    async def test_an_async_miss_is_fetched_directly_once_while_redis_is_down(
        self,
        abroker: TokenBroker,
        emulator: WixEmulator,
        redis_server: RedisServer,
        hooks: HookRecorder,
    ) -> None:
        guard = Invariants(abroker, emulator)
        warm = await guard.atoken(WARM)
        redis_server.kill()
        requests = Requests(emulator)
        tokens = await asyncio.gather(*(guard.atoken(MISS) for _ in range(CALLERS)))
        assert len({t.access_token for t in tokens}) == 1
        assert await guard.atoken(WARM) == warm
        assert requests.count == 1
        assert abroker.engine.degraded is not None
        assert len(hooks.degraded) == 1

        redis_server.start()
        await guard.atoken(AFTER)
        assert abroker.engine.degraded is None
        assert len(hooks.recovered) == 1
        assert await abroker.store.aget_token(abroker.key(AFTER)) is not None
