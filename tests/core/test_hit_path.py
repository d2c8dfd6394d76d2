"""The cache-hit path ``TokenBroker.token``/``atoken`` inline: what it may serve.

The broker answers a near-cache hit itself (one lookup on the caller's id, one clock
read) and hands everything else to the engine. These prove that the shortcut keeps
every guarantee the engine's own hit check gives: never an expired token, nothing
past ``refresh_at`` unless the advisory rules say so, nothing in the mandatory
window, the near cache's max age, hits counted only with metrics on, the same
errors for ids that are not valid, and the broker's clock, whatever it is.

The policy has no jitter, so a 1,000 s token's windows are known: it is due at
875 s (advisory, 12.5 %) and must be refreshed at 950 s (mandatory, 5 %).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx2
import pytest

from tokenbroker import ManualClock, TokenBroker
from tokenbroker.core.clock import OffsetClock, SystemClock
from tokenbroker.core.errors import ConfigError, InstanceNotInstalled
from tokenbroker.core.metrics import REGISTRY
from tokenbroker.core.nearcache import Entry, NearCache
from tokenbroker.core.policy import RefreshPolicy, TokenState
from tokenbroker.core.token import Token, TokenKey

LIFETIME = 1_000.0
DUE = 875.0  # refresh_at, after obtained_at
MUST = 950.0  # must_refresh_at
START = 1_750_000_000.0
INSTANCE = "inst-1"


class Wix:
    """A provider transport that counts and names each token it issues, optionally
    holding each answer until ``release`` is set (a refresh kept in flight)."""

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.clock = clock
        self.sent: list[str] = []
        self.hold = False
        self.arrived = threading.Event()
        self.release = threading.Event()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        instance = json.loads(request.content)["instance_id"]
        self.sent.append(instance)
        if self.hold:
            self.arrived.set()
            assert self.release.wait(15), "the test never released the held answer"
        return httpx2.Response(
            200,
            json={"access_token": f"tok-{instance}-{len(self.sent)}", "expires_in": LIFETIME},
        )


def make(
    wix: Wix,
    clock: object = None,
    *,
    app_id: str | None = None,
    near: NearCache | bool = True,
    **options: object,
) -> TokenBroker:
    return TokenBroker(
        app_id=app_id or f"hit-{uuid.uuid4().hex[:8]}",
        app_secret="s3cret",
        store="memory://",
        clock=clock,  # type: ignore[arg-type]
        policy=RefreshPolicy(jitter=0.0),
        transport=httpx2.MockTransport(wix),
        api_url="http://wix.test",
        near_cache=near,
        **options,  # type: ignore[arg-type]
    )


def near_hits(broker: TokenBroker) -> float:
    return REGISTRY.value("tokenbroker_token_requests_total", (broker.app_id, "near", "ok"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def wix() -> Wix:
    return Wix()


@pytest.fixture
def broker(wix: Wix, clock: ManualClock) -> Iterator[TokenBroker]:
    with make(wix, clock) as b:
        yield b


def servable(broker: TokenBroker, token: Token) -> bool:
    return broker.policy.state(token, broker.clock.time()).servable


class TestFreshHits:
    def test_a_fresh_token_is_served_from_the_near_cache_and_counted(
        self, broker: TokenBroker, wix: Wix
    ) -> None:
        first = broker.token(INSTANCE)
        before = near_hits(broker)
        assert all(broker.token(INSTANCE) is first for _ in range(5))
        assert wix.sent == [INSTANCE]
        assert near_hits(broker) - before == 5

    async def test_the_async_hit_too(self, broker: TokenBroker, wix: Wix) -> None:
        first = await broker.atoken(INSTANCE)
        before = near_hits(broker)
        for _ in range(4):
            assert await broker.atoken(INSTANCE) is first
        assert wix.sent == [INSTANCE]
        assert near_hits(broker) - before == 4

    def test_just_before_refresh_at_it_is_still_a_hit(
        self, broker: TokenBroker, clock: ManualClock, wix: Wix
    ) -> None:
        first = broker.token(INSTANCE)
        clock.advance(DUE - 0.001)
        assert broker.token(INSTANCE) is first
        assert wix.sent == [INSTANCE]


class TestWindows:
    def test_past_refresh_at_with_nothing_in_flight_the_sync_path_refreshes(
        self, broker: TokenBroker, clock: ManualClock, wix: Wix
    ) -> None:
        first = broker.token(INSTANCE)
        clock.advance(DUE)
        second = broker.token(INSTANCE)
        assert second.access_token != first.access_token
        assert len(wix.sent) == 2
        assert broker.token(INSTANCE) is second  # and the new one is a hit

    def test_in_the_advisory_window_a_refresh_in_flight_serves_the_current_token(
        self, broker: TokenBroker, clock: ManualClock, wix: Wix
    ) -> None:
        first = broker.token(INSTANCE)
        clock.advance(DUE + 10)
        wix.hold = True
        results: list[Token] = []
        refresher = threading.Thread(target=lambda: results.append(broker.token(INSTANCE)))
        refresher.start()
        try:
            assert wix.arrived.wait(15)
            before = near_hits(broker)
            assert broker.token(INSTANCE) is first  # not blocked on the refresh
            assert near_hits(broker) - before == 1
        finally:
            wix.release.set()
            refresher.join(15)
        assert results[0].access_token != first.access_token
        assert broker.token(INSTANCE) is results[0]

    async def test_in_the_advisory_window_atoken_serves_now_and_refreshes_behind(
        self, broker: TokenBroker, clock: ManualClock, wix: Wix
    ) -> None:
        first = await broker.atoken(INSTANCE)
        clock.advance(DUE + 10)
        before = near_hits(broker)
        assert await broker.atoken(INSTANCE) is first
        assert near_hits(broker) - before == 1
        near = broker.engine.near
        assert near is not None
        for _ in range(3_000):  # a bounded poll: the background refresh lands in a few turns
            entry = near.get(first.key)
            if entry is not None and entry.token is not first:
                break
            await asyncio.sleep(0.005)
        newer = await broker.atoken(INSTANCE)
        assert newer.access_token != first.access_token
        assert len(wix.sent) == 2

    def test_in_the_mandatory_window_the_near_token_is_never_served(
        self, broker: TokenBroker, clock: ManualClock, wix: Wix
    ) -> None:
        first = broker.token(INSTANCE)
        clock.advance(MUST)
        second = broker.token(INSTANCE)
        assert second.access_token != first.access_token
        assert broker.policy.state(second, clock.time()) is TokenState.FRESH

    async def test_in_the_mandatory_window_atoken_waits_for_a_new_one(
        self, broker: TokenBroker, clock: ManualClock
    ) -> None:
        first = await broker.atoken(INSTANCE)
        clock.advance(MUST + 1)
        second = await broker.atoken(INSTANCE)
        assert second.access_token != first.access_token
        assert servable(broker, second)

    @pytest.mark.parametrize("step", [7.0, 61.0, 149.0])
    def test_walking_through_many_lifetimes_no_token_served_is_due(
        self, broker: TokenBroker, clock: ManualClock, step: float
    ) -> None:
        for _ in range(int(3 * LIFETIME / step)):
            token = broker.token(INSTANCE)
            assert servable(broker, token)
            assert not token.expired(clock.time())
            clock.advance(step)

    async def test_walking_async_no_token_served_is_due(
        self, broker: TokenBroker, clock: ManualClock
    ) -> None:
        for _ in range(60):
            token = await broker.atoken(INSTANCE)
            assert servable(broker, token)
            clock.advance(53.0)


class TestMaxAge:
    def test_after_max_age_the_store_is_asked_again(self, wix: Wix, clock: ManualClock) -> None:
        with make(wix, clock, near_cache_max_age=30.0) as broker:
            first = broker.token(INSTANCE)
            # another process stored a newer token: this one only sees it past max age
            newer = broker.policy.stamp(
                Token(
                    key=first.key,
                    access_token="tok-from-another-process",
                    token_type="Bearer",
                    expires_at=first.expires_at + timedelta(seconds=20),
                    obtained_at=first.obtained_at + timedelta(seconds=20),
                )
            )
            clock.advance(20)
            broker.store.put_token(newer)
            clock.advance(9.9)
            assert broker.token(INSTANCE) is first
            clock.advance(0.1)
            assert broker.token(INSTANCE).access_token == "tok-from-another-process"
            assert wix.sent == [INSTANCE]

    async def test_the_async_path_asks_again_behind_the_caller(
        self, wix: Wix, clock: ManualClock
    ) -> None:
        with make(wix, clock, near_cache_max_age=30.0) as broker:
            first = await broker.atoken(INSTANCE)
            broker.store.delete_token(first.key)  # purged elsewhere (an uninstall)
            clock.advance(29.9)
            assert await broker.atoken(INSTANCE) is first
            assert wix.sent == [INSTANCE]
            clock.advance(0.1)
            # past max age, still valid: as the engine does, served once more while
            # the store (here: the provider) is asked in the background
            assert await broker.atoken(INSTANCE) is first
            near = broker.engine.near
            assert near is not None
            for _ in range(3_000):  # a bounded poll
                entry = near.get(first.key)
                if entry is not None and entry.token is not first:
                    break
                await asyncio.sleep(0.005)
            second = await broker.atoken(INSTANCE)
            assert second.access_token != first.access_token
            assert len(wix.sent) == 2


class TestForgetting:
    def test_an_invalidated_token_is_not_served_again(self, broker: TokenBroker) -> None:
        first = broker.token(INSTANCE)
        broker.invalidate(first)
        assert broker.token(INSTANCE).access_token != first.access_token

    def test_a_removed_installation_leaves_the_near_cache(
        self, broker: TokenBroker, wix: Wix
    ) -> None:
        broker.add_installation(INSTANCE)
        first = broker.token(INSTANCE)
        broker.remove_installation(INSTANCE)
        with pytest.raises(InstanceNotInstalled, match="recorded as removed"):
            broker.token(INSTANCE)
        assert wix.sent == [INSTANCE]
        assert broker.engine.near is not None
        assert broker.engine.near.get(first.key) is None

    def test_apps_sharing_one_near_cache_never_see_each_others_tokens(
        self, wix: Wix, clock: ManualClock
    ) -> None:
        near = NearCache(100)
        with make(wix, clock, near=near) as one, make(wix, clock, near=near) as other:
            mine = one.token(INSTANCE)
            theirs = other.token(INSTANCE)
            assert mine.access_token != theirs.access_token
            assert one.token(INSTANCE) is mine
            assert other.token(INSTANCE) is theirs
            assert len(near) == 2

    def test_without_a_near_cache_every_call_goes_to_the_store(
        self, wix: Wix, clock: ManualClock
    ) -> None:
        with make(wix, clock, near=False) as broker:
            first = broker.token(INSTANCE)
            assert broker.token(INSTANCE) == first
            assert broker.engine.near is None
            assert (
                REGISTRY.value("tokenbroker_token_requests_total", (broker.app_id, "store", "ok"))
                == 1
            )


class TestIds:
    @pytest.mark.parametrize(
        ("bad", "message"),
        [
            ("", "instance id is empty"),
            (" inst-1", "leading or trailing whitespace"),
            ("a\x00b", "control characters"),
            ("x" * 257, "257 characters long"),
            (5, "must be a string, not int"),
            (["inst-1"], "must be a string, not list"),
            (None, "must be a string, not NoneType"),
        ],
    )
    async def test_an_invalid_id_raises_the_same_error_on_both_paths(
        self, broker: TokenBroker, bad: object, message: str
    ) -> None:
        broker.token(INSTANCE)  # the near cache is not empty
        with pytest.raises(ConfigError, match=message):
            broker.token(bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=message):
            await broker.atoken(bad)  # type: ignore[arg-type]

    def test_an_id_never_seen_is_validated_then_cached(self, broker: TokenBroker, wix: Wix) -> None:
        with pytest.raises(ConfigError):
            broker.token("inst-1\n")
        token = broker.token("inst-2")
        assert broker.token("inst-2") is token
        assert wix.sent == ["inst-2"]


class TestClocks:
    def test_an_injected_clock_decides_what_is_fresh(self, wix: Wix) -> None:
        clock = OffsetClock(SystemClock())
        with make(wix, clock) as broker:
            first = broker.token(INSTANCE)
            assert broker.token(INSTANCE) is first
            clock.offset = MUST  # the broker's time, not the system's, makes it due
            assert broker.token(INSTANCE).access_token != first.access_token

    def test_the_system_clock_serves_hits(self, wix: Wix) -> None:
        with make(wix) as broker:
            assert isinstance(broker.clock, SystemClock)
            first = broker.token(INSTANCE)
            assert broker.token(INSTANCE) is first
            assert wix.sent == [INSTANCE]


class TestMetricsOff:
    def test_hits_are_not_counted(self, wix: Wix, clock: ManualClock) -> None:
        with make(wix, clock, metrics=False) as broker:
            assert broker.metrics is False
            first = broker.token(INSTANCE)
            assert all(broker.token(INSTANCE) is first for _ in range(5))
            clock.advance(DUE + 1)  # the engine's own hit rules apply, uncounted too
            broker.token(INSTANCE)
            assert near_hits(broker) == 0
        assert near_hits(broker) == 0  # nothing settled on close either

    async def test_async_hits_are_not_counted(self, wix: Wix, clock: ManualClock) -> None:
        async with make(wix, clock, metrics=False) as broker:
            first = await broker.atoken(INSTANCE)
            for _ in range(3):
                assert await broker.atoken(INSTANCE) is first
            assert near_hits(broker) == 0


class TestNearCacheScope:
    """The by-instance view the hit path reads follows the engine's ``TokenKey`` view."""

    @staticmethod
    def token(instance: str, app: str = "app", at: float = START) -> Token:
        stamp = TokenKey("wix", app, instance)
        moment = ManualClock(at)
        return RefreshPolicy(jitter=0.0).stamp(
            Token(
                key=stamp,
                access_token=f"tok-{app}-{instance}-{at}",
                token_type="Bearer",
                expires_at=_when(moment.time() + LIFETIME),
                obtained_at=_when(moment.time()),
            )
        )

    @staticmethod
    def put(near: NearCache, token: Token) -> None:
        near.put(token, RefreshPolicy(jitter=0.0).thresholds(token), START)

    def test_put_discard_and_clear_keep_both_views_alike(self) -> None:
        near = NearCache(10)
        scope = near.scope("wix", "app")
        one, two = self.token("one"), self.token("two")
        self.put(near, one)
        self.put(near, two)
        assert scope["one"] is near.get(one.key)
        assert scope["one"].token is one
        near.discard(one.key, only="not-this-token")
        assert "one" in scope
        near.discard(one.key)
        assert "one" not in scope
        assert near.get(one.key) is None
        near.clear()
        assert len(scope) == 0
        assert near.scope("wix", "app") is scope  # emptied, not replaced
        self.put(near, one)
        assert scope["one"].token is one

    def test_eviction_drops_the_oldest_from_both_views(self) -> None:
        near = NearCache(2)
        scope = near.scope("wix", "app")
        for name in ("a", "b", "c"):
            self.put(near, self.token(name))
        assert sorted(scope) == ["b", "c"]
        assert len(near) == 2

    def test_an_older_token_replaces_a_newer_one_in_neither_view(self) -> None:
        near = NearCache(10)
        newer, older = self.token("one", at=START + 60), self.token("one", at=START)
        self.put(near, newer)
        self.put(near, older)
        assert near.scope("wix", "app")["one"].token is newer
        assert near.get(newer.key) is not None
        assert near.get(newer.key).token is newer  # type: ignore[union-attr]

    def test_apps_and_providers_have_views_of_their_own(self) -> None:
        near = NearCache(10)
        self.put(near, self.token("one", app="a"))
        assert "one" in near.scope("wix", "a")
        assert "one" not in near.scope("wix", "b")
        assert "one" not in near.scope("other", "a")

    def test_serve_until_is_the_sooner_of_refresh_at_and_max_age(self) -> None:
        near = NearCache(10, max_age=30.0)
        token = self.token("one")
        self.put(near, token)
        assert near.scope("wix", "app")["one"].refresh_at == START + 30.0
        near = NearCache(10, max_age=10_000.0)
        self.put(near, token)
        assert near.scope("wix", "app")["one"].refresh_at == START + DUE


def _when(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class TestEntry:
    """An entry is its own serve-until time (the hit compares the clock with it)."""

    def test_an_entry_is_its_serve_until_time_and_keeps_its_fields(self) -> None:
        token = TestNearCacheScope.token("one")
        entry = Entry(token, START + 30.0, START + MUST, START + LIFETIME)
        assert entry == START + 30.0 == entry.refresh_at
        assert START + 29.9 < entry < START + 30.1
        assert entry.token is token
        assert (entry.must_refresh_at, entry.expires_at) == (START + MUST, START + LIFETIME)
        assert "***" in repr(entry)  # the token's own masked repr, never its value
        assert token.access_token not in repr(entry)

    def test_an_entry_is_read_only_and_always_truthy(self) -> None:
        entry = Entry(TestNearCacheScope.token("one"), 0.0, 0.0, 0.0)
        assert entry  # a serve-until of 0.0 is still an entry, not "none"
        with pytest.raises(AttributeError, match="read-only"):
            entry.refresh_at = 1e12
