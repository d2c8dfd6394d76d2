"""The health decisions without I/O: the back-off, which errors count, the stored form."""

from __future__ import annotations

import logging
from datetime import timedelta

import attrs
import pytest

from tokenbroker import (
    ConfigError,
    InstanceNotInstalled,
    InvalidCredentials,
    ManualClock,
    ProviderError,
    RateLimited,
    StorageError,
    StoreUnavailable,
    Token,
    TokenKey,
    TransientProviderError,
)
from tokenbroker.backends.memory import MemoryStore
from tokenbroker.core.clock import to_datetime
from tokenbroker.core.health import (
    HealthState,
    InstallationHealth,
    from_record,
    health_app_id,
    is_reserved,
    to_record,
)
from tokenbroker.core.health_policy import (
    Backoff,
    after_failure,
    after_removal,
    after_success,
    effective,
    is_remembered,
    remembered,
    verdict,
)
from tokenbroker.core.installation import Installation, InstallationStatus

T0 = 1_800_000_000.0
INSTANCE = "inst-1"


def fixed(value: float) -> Backoff:
    return Backoff(random=lambda: value)


class TestBackoff:
    def test_the_first_wait_is_drawn_between_base_and_three_times_base(self) -> None:
        assert fixed(0.0).next_wait() == 30.0
        assert fixed(0.5).next_wait() == 60.0
        assert fixed(0.999).next_wait() == pytest.approx(89.94)

    def test_each_wait_is_drawn_up_to_three_times_the_last_and_never_past_the_cap(self) -> None:
        top = fixed(0.999999)
        waits, wait = [], None
        for _ in range(8):
            wait = top.next_wait(wait)
            waits.append(round(wait))
        assert waits == [90, 270, 810, 2430, 3600, 3600, 3600, 3600]
        assert fixed(0.0).next_wait(3600.0) == 30.0  # decorrelated: it can fall back

    def test_draws_spread_installations_that_failed_together(self) -> None:
        draws = iter([0.1, 0.4, 0.7, 0.9])
        backoff = Backoff(random=lambda: next(draws))
        waits = [backoff.next_wait() for _ in range(4)]
        assert waits == pytest.approx([36.0, 54.0, 72.0, 84.0])

    @pytest.mark.parametrize(
        ("base", "cap"), [(0, 10), (-1, 10), (float("nan"), 10), (10, float("inf")), (60, 30)]
    )
    def test_nonsense_is_a_config_error(self, base: float, cap: float) -> None:
        with pytest.raises(ConfigError, match="Backoff"):
            Backoff(base=base, cap=cap)


class TestVerdict:
    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            (InstanceNotInstalled("gone", status=400), "dead"),
            (ProviderError("bad request", status=400), "failing"),
            (ProviderError("no such thing", status=404), "failing"),
            (RateLimited("slow down", retry_after=5), "failing"),
            (TransientProviderError("down", status=503), None),
            (InvalidCredentials("wrong secret", status=401), None),
            (TransientProviderError("no answer", status=None), None),
            (ProviderError("a 200 that is no token", status=200), None),
            (StorageError("store"), None),
            (StoreUnavailable("store"), None),
            (ValueError("bug"), None),
        ],
    )
    def test_which_errors_say_something_about_the_installation(
        self, error: BaseException, expected: str | None
    ) -> None:
        assert verdict(error) == expected

    def test_a_remembered_error_is_no_news(self) -> None:
        health = after_failure(
            InstallationHealth(INSTANCE), ProviderError("x", status=400), T0, fixed(0.5)
        )
        assert health is not None
        again = remembered(health, T0 + 1)
        assert is_remembered(again)
        assert verdict(again) is None
        assert not is_remembered(ProviderError("x", status=400))


class TestTransitions:
    def test_failures_count_and_keep_when_they_began(self) -> None:
        error = ProviderError("bad", status=400, request_id="req-1")
        first = after_failure(InstallationHealth(INSTANCE), error, T0, fixed(0.5))
        assert first is not None
        assert (first.state, first.failures, first.since) == (
            HealthState.FAILING,
            1,
            to_datetime(T0),
        )
        assert first.next_attempt == to_datetime(T0 + 60.0)
        assert first.error is not None
        assert first.error.request_id == "req-1"
        second = after_failure(first, error, T0 + 60, fixed(0.5))
        assert second is not None
        assert (second.failures, second.since) == (2, first.since)
        assert second.backoff == pytest.approx(30 + 0.5 * (180 - 30))

    def test_a_longer_retry_after_wins_over_the_drawn_wait(self) -> None:
        health = after_failure(
            InstallationHealth(INSTANCE), RateLimited("429", retry_after=900), T0, fixed(0.0)
        )
        assert health is not None
        assert health.next_attempt == to_datetime(T0 + 900)

    def test_not_installed_is_dead_with_the_registry_version_it_saw(self) -> None:
        seen = to_datetime(T0 - 100)
        health = after_failure(
            InstallationHealth(INSTANCE), InstanceNotInstalled("no"), T0, fixed(0.5), seen
        )
        assert health is not None
        assert (health.state, health.dead_reason, health.registry_at) == (
            HealthState.DEAD,
            "not_installed",
            seen,
        )
        assert health.backing_off(T0 + 10 * 365 * 86400)
        older = Installation("app", INSTANCE, updated_at=seen)
        newer = attrs.evolve(older, updated_at=seen + timedelta(seconds=1))
        assert effective(health, older, INSTANCE).dead
        assert effective(health, newer, INSTANCE).healthy  # installed again since

    def test_a_success_heals_and_notes_the_token(self) -> None:
        failing = after_failure(
            InstallationHealth(INSTANCE), ProviderError("x", status=400), T0, fixed(0.5)
        )
        assert failing is not None
        token = Token(
            key=TokenKey("wix", "app", INSTANCE),
            access_token="secret-token",
            token_type="Bearer",
            obtained_at=to_datetime(T0 + 100),
            expires_at=to_datetime(T0 + 100 + 14400),
            refresh_at=to_datetime(T0 + 12000),
        )
        healthy = after_success(failing, token, T0 + 100)
        assert healthy.healthy
        assert (healthy.failures, healthy.error, healthy.next_attempt) == (0, None, None)
        assert (healthy.last_token_at, healthy.next_refresh_at) == (
            token.obtained_at,
            token.refresh_at,
        )
        assert "secret-token" not in repr(healthy.to_json())

    def test_each_write_is_newer_than_what_it_was_based_on(self) -> None:
        """Another replica's clock may be ahead: a write based on its record still wins."""
        ahead = attrs.evolve(InstallationHealth(INSTANCE), updated_at=to_datetime(T0 + 5))
        new = after_failure(ahead, ProviderError("x", status=400), T0, fixed(0.5))
        assert new is not None
        assert new.updated_at is not None
        assert ahead.updated_at is not None
        assert new.updated_at > ahead.updated_at

    def test_a_removed_record_is_dead_whatever_is_stored(self) -> None:
        record = Installation(
            "app",
            INSTANCE,
            status=InstallationStatus.REMOVED,
            removed_at=to_datetime(T0),
            updated_at=to_datetime(T0),
        )
        shown = effective(None, record, INSTANCE)
        assert (shown.state, shown.dead_reason, shown.since) == (
            HealthState.DEAD,
            "removed",
            to_datetime(T0),
        )
        stored = after_removal(InstallationHealth(INSTANCE), T0, record.updated_at)
        assert effective(stored, record, INSTANCE).dead
        added = attrs.evolve(record, status=InstallationStatus.INSTALLED, removed_at=None)
        assert effective(stored, added, INSTANCE).healthy  # installed again


class TestTheRememberedError:
    def test_keeps_the_class_and_says_when_wix_is_asked_again(self) -> None:
        clock = ManualClock(start=T0)
        error = RateLimited("Create Access Token: Wix answered 429", retry_after=120)
        health = after_failure(InstallationHealth(INSTANCE), error, clock.time(), fixed(0.0))
        assert health is not None
        clock.advance(20)
        again = remembered(health, clock.time())
        assert type(again) is RateLimited
        assert again.retry_after == pytest.approx(100)
        assert again.status == 429
        text = str(again)
        assert text.startswith("Create Access Token: Wix answered 429")
        assert "remembered error" in text
        assert "1 failed fetch(es)" in text
        assert (health.next_attempt or to_datetime(0)).isoformat(timespec="seconds") in text
        assert "in 100s" in text

    def test_a_dead_installation_is_instance_not_installed(self) -> None:
        health = after_failure(
            InstallationHealth(INSTANCE), InstanceNotInstalled("not installed"), T0, fixed(0.5)
        )
        assert health is not None
        again = remembered(health, T0 + 3600)
        assert type(again) is InstanceNotInstalled
        assert "is dead since" in str(again)
        assert "until it is installed again" in str(again)


class TestTheStoredRecord:
    def test_round_trips_through_a_store(self) -> None:
        store = MemoryStore()
        health = after_failure(
            InstallationHealth(INSTANCE),
            RateLimited("429", retry_after=3.5, request_id="req-9"),
            T0,
            fixed(0.25),
        )
        assert health is not None
        assert store.put_installation(to_record("app", health))
        assert from_record(store.get_installation(health_app_id("app"), INSTANCE)) == health
        assert list(store.iter_installations("app")) == []  # not one of the app's

    def test_a_damaged_record_reads_as_none_with_a_warning(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        record = Installation(health_app_id("app"), INSTANCE, extra={"health": {"state": "ill"}})
        with caplog.at_level(logging.WARNING, logger="tokenbroker"):
            assert from_record(record) is None
        assert "damaged health record" in caplog.text

    def test_reserved_app_ids_fit_the_narrowest_column(self) -> None:
        assert health_app_id("app") == "tokenbroker~health~app"
        long = "a" * 200
        assert len(health_app_id(long)) <= 128
        assert health_app_id(long) != health_app_id("b" * 200)
        assert is_reserved(health_app_id(long))
        assert not is_reserved("app")

    def test_to_json_names_what_the_cli_shows(self) -> None:
        health = after_failure(
            InstallationHealth(INSTANCE), ProviderError("bad", status=400), T0, fixed(0.5)
        )
        assert health is not None
        shown = health.to_json()
        assert shown["state"] == "failing"
        assert shown["failing_since"] == to_datetime(T0).isoformat()
        assert shown["failures"] == 1
        assert shown["last_error"]["class"] == "ProviderError"
        assert shown["next_attempt"] == to_datetime(T0 + 60).isoformat()
