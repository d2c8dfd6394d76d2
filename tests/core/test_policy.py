from __future__ import annotations

import pytest

from tokenbroker import ConfigError, ManualClock, RefreshPolicy, Token, TokenKey, TokenState
from tokenbroker.core.clock import to_datetime

KEY = TokenKey("wix", "app", "inst")
T0 = 1_800_000_000.0
FOUR_HOURS = 4 * 3600


def make_token(lifetime: float = FOUR_HOURS, obtained: float = T0) -> Token:
    return Token(
        key=KEY,
        access_token="tok",
        token_type="Bearer",
        expires_at=to_datetime(obtained + lifetime),
        obtained_at=to_datetime(obtained),
    )


class TestWindowsForAFourHourToken:
    def test_without_jitter_advisory_opens_30_minutes_before_expiry(self) -> None:
        policy = RefreshPolicy(jitter=0.0)
        token = policy.stamp(make_token())
        assert token.refresh_at == to_datetime(T0 + FOUR_HOURS - 30 * 60)

    def test_mandatory_window_opens_12_minutes_before_expiry(self) -> None:
        token = RefreshPolicy().stamp(make_token())
        assert token.must_refresh_at == to_datetime(T0 + FOUR_HOURS - 12 * 60)

    @pytest.mark.parametrize(
        ("elapsed", "state"),
        [
            (0, TokenState.FRESH),
            (3 * 3600 + 29 * 60, TokenState.FRESH),
            (3 * 3600 + 31 * 60, TokenState.ADVISORY),
            (3 * 3600 + 48 * 60 + 1, TokenState.MANDATORY),
            (FOUR_HOURS, TokenState.EXPIRED),
            (FOUR_HOURS + 1, TokenState.EXPIRED),
        ],
    )
    def test_state_follows_the_injected_clock(self, elapsed: float, state: TokenState) -> None:
        clock = ManualClock(start=T0)
        policy = RefreshPolicy(jitter=0.0)
        token = policy.stamp(make_token())
        clock.advance(elapsed)
        assert policy.state(token, clock.time()) is state

    def test_only_fresh_and_advisory_tokens_are_servable(self) -> None:
        assert [s for s in TokenState if s.servable] == [TokenState.FRESH, TokenState.ADVISORY]


class TestJitter:
    def test_jitter_pulls_the_advisory_start_earlier_never_later(self) -> None:
        starts = {
            RefreshPolicy(random=lambda d=draw: d).stamp(make_token()).refresh_at
            for draw in (0.0, 0.5, 0.999)
        }
        latest = to_datetime(T0 + FOUR_HOURS - 30 * 60)
        earliest = to_datetime(T0 + FOUR_HOURS - 45 * 60)
        assert len(starts) == 3
        assert all(earliest <= s <= latest for s in starts if s is not None)

    def test_jitter_leaves_the_mandatory_window_alone(self) -> None:
        musts = {
            RefreshPolicy(random=lambda d=draw: d).stamp(make_token()).must_refresh_at
            for draw in (0.0, 0.9)
        }
        assert len(musts) == 1


class TestScalesWithLifetime:
    def test_a_five_minute_legacy_token_gets_short_windows(self) -> None:
        token = RefreshPolicy(jitter=0.0).stamp(make_token(lifetime=300))
        assert token.refresh_at == to_datetime(T0 + 300 - 37.5)
        assert token.must_refresh_at == to_datetime(T0 + 300 - 15)

    def test_a_tiny_lifetime_is_mandatory_from_the_start_but_never_before_it(self) -> None:
        token = RefreshPolicy().stamp(make_token(lifetime=5))
        assert token.must_refresh_at == to_datetime(T0)
        assert RefreshPolicy().state(token, T0) is TokenState.MANDATORY

    def test_unstamped_tokens_get_windows_without_jitter(self) -> None:
        policy = RefreshPolicy()
        assert policy.state(make_token(), T0 + FOUR_HOURS - 31 * 60) is TokenState.FRESH
        assert policy.state(make_token(), T0 + FOUR_HOURS - 29 * 60) is TokenState.ADVISORY


class TestBadPolicies:
    @pytest.mark.parametrize("field", ["advisory_fraction", "mandatory_fraction", "jitter"])
    def test_fractions_outside_zero_to_one_are_config_errors(self, field: str) -> None:
        with pytest.raises(ConfigError, match=field):
            RefreshPolicy(**{field: 1.5})  # type: ignore[arg-type]

    def test_mandatory_window_larger_than_advisory_is_refused(self) -> None:
        with pytest.raises(ConfigError, match="must not exceed"):
            RefreshPolicy(advisory_fraction=0.1, mandatory_fraction=0.2)


class TestMinMandatorySecondsIsValidated:
    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, "10", True])
    def test_anything_but_a_finite_non_negative_number_is_a_config_error(self, bad: object) -> None:
        with pytest.raises(ConfigError, match="min_mandatory_seconds"):
            RefreshPolicy(min_mandatory_seconds=bad)  # type: ignore[arg-type]
