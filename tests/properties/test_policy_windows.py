"""Refresh windows, for any token and any policy the constructor accepts.

A token is handed out only while it is FRESH or ADVISORY; these properties pin
down the thresholds that decide it, and that the engine respects them.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbroker import (
    ConfigError,
    ManualClock,
    ProviderError,
    RefreshPolicy,
    Token,
    TokenBroker,
    TokenKey,
    TokenState,
)
from tokenbroker.backends.codec import token_fields, token_from_fields
from tokenbroker.core.clock import to_datetime, to_timestamp
from tokenbroker.plugins import reset_plugins

KEY = TokenKey("wix", "app", "inst")
DAY = 86_400.0
# Stamps are datetimes (microseconds); arithmetic is in float seconds. 2 us covers
# both roundings at any time in this century.
EPS = 2e-6
FIRST = datetime(2000, 1, 1, tzinfo=UTC)
LAST = datetime(2100, 1, 1, tzinfo=UTC)

CHEAP = settings(max_examples=150, database=None)
# The engine runs touch a (manual) clock and a store: no deadline.
ENGINE = settings(max_examples=120, deadline=None, database=None)


# ------------------------------------------------------------------ strategies
lifetimes = st.one_of(
    st.floats(min_value=1.0, max_value=30 * DAY),
    st.sampled_from([1.0, 5.0, 10.0, 10.000001, 60.0, 300.0, 4 * 3600.0, 7 * DAY]),
)
# the defaults and the extremes (a window covering the whole life) come up often
fractions = st.floats(min_value=0.0, max_value=1.0, exclude_max=True) | st.sampled_from(
    [0.0, 0.05, 0.125, 0.5, 0.9, 0.999]
)
# random() is [0, 1); an injected one may give 1
draws = st.floats(min_value=0.0, max_value=1.0) | st.sampled_from([0.0, 0.5, 1.0])


@st.composite
def policies(draw: st.DrawFn, *, random: float | None = None) -> RefreshPolicy:
    advisory = draw(fractions)
    up_to_advisory = st.floats(min_value=0.0, max_value=advisory)
    mandatory = draw(up_to_advisory | st.sampled_from([0.0, advisory]))
    jitter = draw(fractions)
    minimum = draw(st.one_of(st.just(10.0), st.floats(min_value=0.0, max_value=2 * DAY)))
    pick = draw(draws) if random is None else random
    return RefreshPolicy(
        advisory_fraction=advisory,
        mandatory_fraction=mandatory,
        min_mandatory_seconds=minimum,
        jitter=jitter,
        random=lambda: pick,
    )


@st.composite
def tokens(draw: st.DrawFn) -> Token:
    # drawn as microseconds: st.datetimes is several times slower
    micros = draw(st.integers(0, (LAST - FIRST) // timedelta(microseconds=1)))
    obtained_at = FIRST + timedelta(microseconds=micros)
    lifetime = draw(lifetimes)
    return Token(
        key=KEY,
        access_token="tok",
        token_type="Bearer",
        expires_at=to_datetime(to_timestamp(obtained_at) + lifetime),
        obtained_at=obtained_at,
    )


def moments_around(thresholds: tuple[float, ...], lifetime: float) -> st.SearchStrategy[float]:
    """Clock readings: exactly on a threshold, a hair either side, or anywhere."""
    exact = st.sampled_from(thresholds)
    nudged = st.tuples(exact, st.sampled_from([-1e-3, -1e-6, 1e-6, 1e-3])).map(sum)
    low, high = min(thresholds) - lifetime, max(thresholds) + lifetime
    anywhere = st.floats(min_value=low, max_value=high)
    return st.one_of(exact, nudged, anywhere)


def stamps(token: Token) -> tuple[float, float, float]:
    assert token.refresh_at is not None
    assert token.must_refresh_at is not None
    return (
        to_timestamp(token.refresh_at),
        to_timestamp(token.must_refresh_at),
        to_timestamp(token.expires_at),
    )


# ------------------------------------------------------------------ the policy
candidate_fractions = st.floats(min_value=-2, max_value=3) | st.sampled_from(
    [0.0, -0.0, 1.0, 0.9999999, -1e-9, 1e-300, 0.125, 0.05]
)


class TestPolicyValidation:
    @given(
        advisory=candidate_fractions,
        mandatory=candidate_fractions,
        jitter=candidate_fractions,
        minimum=st.floats(min_value=-100, max_value=100) | st.sampled_from([0.0, -0.0, -1e-9]),
    )
    @CHEAP
    def test_a_policy_is_accepted_exactly_when_its_fractions_are_usable(
        self, advisory: float, mandatory: float, jitter: float, minimum: float
    ) -> None:
        usable = (
            all(0.0 <= f < 1.0 for f in (advisory, mandatory, jitter))
            and mandatory <= advisory
            and minimum >= 0
        )
        fields: dict[str, Any] = {
            "advisory_fraction": advisory,
            "mandatory_fraction": mandatory,
            "jitter": jitter,
            "min_mandatory_seconds": minimum,
        }
        if usable:
            RefreshPolicy(**fields)
        else:
            with pytest.raises(ConfigError):
                RefreshPolicy(**fields)


class TestThresholds:
    @given(policy=policies(), token=tokens())
    @CHEAP
    def test_obtained_then_refresh_then_mandatory_then_expiry(
        self, policy: RefreshPolicy, token: Token
    ) -> None:
        refresh_at, must_refresh_at, expires_at = policy.thresholds(policy.stamp(token))
        assert to_timestamp(token.obtained_at) <= refresh_at <= must_refresh_at <= expires_at

    @given(policy=policies(), token=tokens())
    @CHEAP
    def test_the_mandatory_window_is_the_mandatory_share_of_the_life_and_at_least_the_minimum(
        self, policy: RefreshPolicy, token: Token
    ) -> None:
        _, must_refresh_at, expires_at = stamps(policy.stamp(token))
        life = token.lifetime
        # capped by the whole life: never mandatory before it was obtained
        window = min(max(life * policy.mandatory_fraction, policy.min_mandatory_seconds), life)
        assert expires_at - must_refresh_at == pytest.approx(window, abs=EPS)

    @given(policy=policies(), token=tokens())
    @CHEAP
    def test_jitter_moves_the_advisory_start_only_within_its_documented_window(
        self, policy: RefreshPolicy, token: Token
    ) -> None:
        refresh_at, must_refresh_at, expires_at = stamps(policy.stamp(token))
        obtained = to_timestamp(token.obtained_at)
        advisory = token.lifetime * policy.advisory_fraction
        # without jitter: advisory_fraction of the life before expiry; jitter pulls it
        # earlier by up to `jitter` times that; never before obtained, never after must
        latest = min(max(expires_at - advisory, obtained), must_refresh_at)
        earliest = min(max(expires_at - advisory * (1 + policy.jitter), obtained), must_refresh_at)
        assert earliest - EPS <= refresh_at <= latest + EPS

    @given(policy=policies(random=0.0), token=tokens(), a=draws, b=draws)
    @CHEAP
    def test_a_bigger_draw_never_moves_refresh_later_and_never_moves_the_mandatory_start(
        self, policy: RefreshPolicy, token: Token, a: float, b: float
    ) -> None:
        low, high = sorted((a, b))
        early = RefreshPolicy(
            advisory_fraction=policy.advisory_fraction,
            mandatory_fraction=policy.mandatory_fraction,
            min_mandatory_seconds=policy.min_mandatory_seconds,
            jitter=policy.jitter,
            random=lambda: high,
        ).stamp(token)
        late = RefreshPolicy(
            advisory_fraction=policy.advisory_fraction,
            mandatory_fraction=policy.mandatory_fraction,
            min_mandatory_seconds=policy.min_mandatory_seconds,
            jitter=policy.jitter,
            random=lambda: low,
        ).stamp(token)
        assert early.refresh_at is not None
        assert late.refresh_at is not None
        assert early.refresh_at <= late.refresh_at
        assert early.must_refresh_at == late.must_refresh_at


class TestStamping:
    @given(policy=policies(), token=tokens())
    @CHEAP
    def test_stamping_the_same_token_with_the_same_draw_gives_the_same_stamps(
        self, policy: RefreshPolicy, token: Token
    ) -> None:
        assert policy.stamp(token) == policy.stamp(token)

    @given(policy=policies(), other=policies(), token=tokens())
    @CHEAP
    def test_the_stamps_travel_with_the_token_so_every_process_agrees(
        self, policy: RefreshPolicy, other: RefreshPolicy, token: Token
    ) -> None:
        stamped = policy.stamp(token)
        stored = token_from_fields(KEY, token_fields(stamped))  # what another process reads
        assert stored == stamped
        # another process, with another policy and another draw, reads the stored stamps
        assert other.thresholds(stored) == policy.thresholds(stamped) == stamps(stamped)

    @given(policy=policies(), token=tokens())
    @CHEAP
    def test_an_unstamped_token_gets_the_windows_of_a_zero_draw(
        self, policy: RefreshPolicy, token: Token
    ) -> None:
        no_jitter = RefreshPolicy(
            advisory_fraction=policy.advisory_fraction,
            mandatory_fraction=policy.mandatory_fraction,
            min_mandatory_seconds=policy.min_mandatory_seconds,
            jitter=policy.jitter,
            random=lambda: 0.0,
        )
        got = policy.thresholds(token)
        want = stamps(no_jitter.stamp(token))
        assert got == pytest.approx(want, abs=EPS)
        assert got[0] <= got[1] <= got[2]


class TestStates:
    @given(data=st.data(), policy=policies(), token=tokens(), stamped=st.booleans())
    @CHEAP
    def test_the_state_is_decided_by_the_thresholds_and_never_serves_past_mandatory(
        self, data: st.DataObject, policy: RefreshPolicy, token: Token, stamped: bool
    ) -> None:
        if stamped:
            token = policy.stamp(token)
        refresh_at, must_refresh_at, expires_at = policy.thresholds(token)
        now = data.draw(
            moments_around((refresh_at, must_refresh_at, expires_at), token.lifetime), "now"
        )
        state = policy.state(token, now)
        assert (state is TokenState.FRESH) == (now < refresh_at)
        assert (state is TokenState.ADVISORY) == (refresh_at <= now < must_refresh_at)
        assert (state is TokenState.EXPIRED) == token.expired(now)
        if state.servable:
            assert now < must_refresh_at
            assert now < expires_at
            assert not token.expired(now)


# ------------------------------------------------------------ the engine and near cache
class CountingProvider:
    """A provider (no server): each token lives the next of ``lifetimes`` seconds from
    the manual clock's now; ``issued`` keeps every token it gave out."""

    name = "wix"

    def __init__(self, clock: ManualClock, lifetimes: list[float]) -> None:
        self.clock = clock
        self._lifetimes = itertools.cycle(lifetimes)
        self._serial = itertools.count(1)
        self.issued: list[Token] = []

    @property
    def calls(self) -> int:
        return len(self.issued)

    def acquire(self, key: TokenKey) -> Token:
        now = self.clock.time()
        token = Token(
            key=key,
            access_token=f"tok-{next(self._serial)}",
            token_type="Bearer",
            expires_at=to_datetime(now + next(self._lifetimes)),
            obtained_at=to_datetime(now),
        )
        self.issued.append(token)
        return token

    async def aacquire(self, key: TokenKey) -> Token:
        return self.acquire(key)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


INSTANCES = ["inst-a", "inst-b"]
Step = tuple[str, float] | tuple[str, int] | tuple[str, str, float]
which = st.integers(0, len(INSTANCES) - 1)
steps: st.SearchStrategy[Step] = st.one_of(
    st.tuples(
        st.just("advance"),
        st.one_of(
            st.floats(min_value=0.0, max_value=DAY),
            st.floats(min_value=0.0, max_value=120.0),
            st.sampled_from([1e-6, 1.0, 59.0, 61.0, 600.0, 1800.0, 3600.0]),
            st.floats(min_value=-600.0, max_value=0.0),  # the wall clock stepped back
        ),
    ),
    # to a point in the life of the last token handed out, or next to one of its
    # thresholds: lands in every window, however narrow
    st.tuples(st.just("jump"), st.floats(min_value=0.0, max_value=1.2)),
    st.tuples(
        st.just("to"),
        st.sampled_from(["refresh", "must", "expires"]),
        st.sampled_from([-1.0, -1e-3, 0.0, 1e-3, 1.0]),
    ),
    # the same, then ask again for that token's instance: the boundary cases
    st.tuples(
        st.just("ask at"),
        st.sampled_from(["refresh", "must", "expires"]),
        st.sampled_from([-1e-3, 0.0, 1e-3]),
    ),
    st.tuples(st.just("token"), which),
    st.tuples(st.just("token"), which),
    # another process: an uninstall purged the stored token / it wrote a newer one
    st.tuples(st.just("purge"), which),
    st.tuples(st.just("other"), which),
)
scripts = st.lists(steps, min_size=2, max_size=40)


@pytest.fixture(scope="module", autouse=True)
def fresh_plugins() -> Iterator[None]:
    reset_plugins()
    yield
    reset_plugins()


class World:
    """A broker on memory:// with a manual clock and a counting provider, and the
    steps of a script that do not ask for a token."""

    def __init__(
        self, policy: RefreshPolicy, lives: list[float], near_cache: bool, max_age: float
    ) -> None:
        self.policy = policy
        self.clock = ManualClock(start=1_800_000_000.0)
        self.provider = CountingProvider(self.clock, lives)
        self.broker = TokenBroker(
            app_id="app",
            app_secret="secret",
            store="memory://",
            provider=self.provider,
            policy=policy,
            clock=self.clock,
            near_cache=near_cache,
            near_cache_max_age=max_age,
        )
        self.last: Token | None = None
        self._calls = 0

    def step(self, step: Step) -> int | None:
        """Do ``step``; return the instance index when it is a token call."""
        match step:
            case ("advance", float(seconds)):
                self.clock.advance(seconds)
            case ("jump", float(fraction)) if self.last is not None:
                obtained = to_timestamp(self.last.obtained_at)
                self.clock.set(obtained + fraction * self.last.lifetime)
            case ("to" | "ask at", str(name), float(offset)) if self.last is not None:
                refresh_at, must_refresh_at, expires_at = stamps(self.last)
                at = {"refresh": refresh_at, "must": must_refresh_at, "expires": expires_at}
                self.clock.set(at[name] + offset)
                if step[0] == "ask at":
                    self._calls = self.provider.calls
                    return INSTANCES.index(self.last.instance_id)
            case ("purge", int(i)):
                self.broker.store.delete_token(self.broker.key(INSTANCES[i]))
            case ("other", int(i)):
                other = RefreshPolicy(random=lambda: 0.3).stamp(
                    self.provider.acquire(self.broker.key(INSTANCES[i]))
                )
                self.broker.store.put_token(other)
            case ("token", int(i)):
                self._calls = self.provider.calls
                return i
        return None

    def check(self, i: int, token: Token) -> None:
        """The token handed out now: for the instance asked, never expired, never at or
        past its mandatory threshold."""
        now = self.clock.time()
        assert token.key == self.broker.key(INSTANCES[i])
        _, must_refresh_at, expires_at = stamps(token)
        assert not token.expired(now), f"{token.access_token} expired {now - expires_at}s ago"
        assert now < must_refresh_at, f"{token.access_token} is {now - must_refresh_at}s due"
        assert self.policy.state(token, now).servable
        self.last = token

    def refused(self, exc: ProviderError) -> None:
        """A refusal is allowed only when every token the provider just gave was
        already due on arrival (a life shorter than the mandatory window)."""
        fetched = self.provider.issued[self._calls :]
        assert fetched, f"refused without asking the provider: {exc}"
        now = self.clock.time()
        for token in fetched:
            assert not self.policy.state(self.policy.stamp(token), now).servable, exc


engine_runs = {
    "policy": policies(),
    "lives": st.lists(lifetimes, min_size=1, max_size=4),
    "max_age": st.sampled_from([0.0, 1.0, 60.0, 3600.0]),
    "script": scripts,
}


class TestEngineNeverHandsOutADueToken:
    @given(**engine_runs)
    @ENGINE
    def test_any_sequence_of_clock_moves_and_token_calls(
        self, policy: RefreshPolicy, lives: list[float], max_age: float, script: list[Step]
    ) -> None:
        self.run_sync(World(policy, lives, True, max_age), script)

    @given(**engine_runs)
    @settings(ENGINE, max_examples=60)
    def test_without_a_near_cache_too(
        self, policy: RefreshPolicy, lives: list[float], max_age: float, script: list[Step]
    ) -> None:
        self.run_sync(World(policy, lives, False, max_age), script)

    @staticmethod
    def run_sync(world: World, script: list[Step]) -> None:
        with world.broker:
            for step in script:
                if (i := world.step(step)) is None:
                    continue
                try:
                    token = world.broker.token(INSTANCES[i])
                except ProviderError as exc:
                    world.refused(exc)
                else:
                    world.check(i, token)

    @given(**engine_runs)
    @ENGINE
    def test_async_callers_and_background_refreshes_too(
        self, policy: RefreshPolicy, lives: list[float], max_age: float, script: list[Step]
    ) -> None:
        async def run() -> None:
            world = World(policy, lives, True, max_age)
            async with world.broker:
                for step in script:
                    if (i := world.step(step)) is None:
                        await asyncio.sleep(0)  # let background refreshes run
                        continue
                    try:
                        token = await world.broker.atoken(INSTANCES[i])
                    except ProviderError as exc:
                        world.refused(exc)
                    else:
                        world.check(i, token)

        asyncio.run(run())


class TestTolerance:
    def test_float_seconds_resolve_microseconds_in_the_tested_range(self) -> None:
        """EPS is sound only if a float timestamp holds a microsecond exactly here."""
        assert math.ulp(to_timestamp(LAST)) < 1e-6 / 2
