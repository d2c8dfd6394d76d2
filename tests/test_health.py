"""Installation health against the emulator: back-off, dead installations, the hook.

Time is a ``ManualClock``; Wix is the emulator, whose token requests are counted: a
back-off or a dead installation must cost no request at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import attrs
import pytest

from tokenbroker import (
    InstanceNotInstalled,
    InvalidCredentials,
    ManualClock,
    ProviderError,
    RateLimited,
    TokenBroker,
    TransientProviderError,
    hookimpl,
)
from tokenbroker.core.clock import to_datetime, to_timestamp
from tokenbroker.core.flow import run_sync
from tokenbroker.core.health import InstallationHealth
from tokenbroker.plugins import plugin_manager, reset_plugins
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.webhooks import make_key_pair, sign_webhook

from .conftest import APP_ID, APP_SECRET, INSTANCE

PRIVATE, PUBLIC = make_key_pair()
BASE, CAP = 30.0, 3600.0  # the default back-off
SLACK = 1e-3  # times are kept to the microsecond; the clock is a float


class HealthEvents:
    """Records ``tokenbroker_installation_health_changed`` calls."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str, str, str]] = []

    def plugin(self) -> object:
        @hookimpl
        def tokenbroker_installation_health_changed(
            app_id: str, instance_id: str, old: InstallationHealth, new: InstallationHealth
        ) -> None:
            self.changes.append((app_id, instance_id, old.state.value, new.state.value))

        return SimpleNamespace(
            tokenbroker_installation_health_changed=tokenbroker_installation_health_changed
        )

    def states(self, instance_id: str = INSTANCE) -> list[tuple[str, str]]:
        return [(old, new) for _, inst, old, new in self.changes if inst == instance_id]


@pytest.fixture
def events() -> Iterator[HealthEvents]:
    reset_plugins()
    recorder = HealthEvents()
    plugin_manager().register(recorder.plugin(), name="health-events")
    yield recorder
    reset_plugins()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make_broker(
    emulator: WixEmulator, store: str, clock: ManualClock, secret: str = APP_SECRET
) -> TokenBroker:
    return TokenBroker(
        app_id=APP_ID,
        app_secret=secret,
        store=store,
        api_url=emulator.url,
        clock=clock,
        public_key=PUBLIC,
    )


@pytest.fixture
def broker(wix_emulator: WixEmulator, sqlite_url: str, clock: ManualClock) -> Iterator[TokenBroker]:
    with make_broker(wix_emulator, sqlite_url, clock) as b:
        b.installations.add(INSTANCE)
        yield b


def until(moment: datetime | None) -> float:
    assert moment is not None
    return to_timestamp(moment)


def wait_out(clock: ManualClock, health: InstallationHealth) -> None:
    """Move the clock to the moment the back-off ends."""
    clock.set(until(health.next_attempt))


class TestBackOff:
    def test_no_request_reaches_wix_while_a_failing_installation_backs_off(
        self,
        broker: TokenBroker,
        wix_emulator: WixEmulator,
        clock: ManualClock,
        events: HealthEvents,
    ) -> None:
        wix_emulator.fail_next(400)
        with pytest.raises(ProviderError, match="400") as first:
            broker.token(INSTANCE)
        assert wix_emulator.token_requests == 1
        health = broker.installations.health(INSTANCE)
        assert health.failing
        assert health.failures == 1
        assert health.failing_since is not None
        assert until(health.failing_since) == pytest.approx(clock.time(), abs=1e-3)
        assert health.error is not None
        assert health.error.kind == "ProviderError"
        assert health.error.request_id == first.value.request_id == wix_emulator.last_request_id
        wait = until(health.next_attempt) - clock.time()
        assert BASE - SLACK <= wait <= 3 * BASE + SLACK

        for _ in range(3):  # neither the token path ...
            with pytest.raises(ProviderError, match="remembered error") as again:
                broker.token(INSTANCE)
            assert type(again.value) is ProviderError
            assert str(first.value) in str(again.value)
            assert again.value.request_id == first.value.request_id
        report = broker.refresh_due()  # ... nor the bulk refresher asks Wix
        assert [i for i, _ in report.skipped] == [INSTANCE]
        assert "backing off" in report.skipped[0][1]
        clock.set(until(health.next_attempt) - 1)
        with pytest.raises(ProviderError, match="remembered error"):
            broker.token(INSTANCE)
        assert wix_emulator.token_requests == 1

        wix_emulator.fail_next(400)
        wait_out(clock, health)  # the back-off is over: one request, failing again
        with pytest.raises(ProviderError, match="400"):
            broker.token(INSTANCE)
        assert wix_emulator.token_requests == 2
        second = broker.installations.health(INSTANCE)
        assert second.failures == 2
        assert second.failing_since == health.failing_since
        wait = until(second.next_attempt) - clock.time()
        assert BASE - SLACK <= wait <= min(3 * health.backoff, CAP) + SLACK

        wait_out(clock, second)
        assert broker.token(INSTANCE).access_token
        assert wix_emulator.token_requests == 3
        healed = broker.installations.health(INSTANCE)
        assert healed.healthy
        assert (healed.failures, healed.error, healed.next_attempt) == (0, None, None)
        # one change of state each way, not one per failure
        assert events.states() == [("healthy", "failing"), ("failing", "healthy")]

    def test_installations_failing_together_back_off_by_different_jittered_waits(
        self, broker: TokenBroker, wix_emulator: WixEmulator, clock: ManualClock
    ) -> None:
        ids = [INSTANCE, *(f"inst-j{n}" for n in range(5))]
        broker.installations.add_many(ids)
        for instance in ids:
            wix_emulator.install(instance)
        wix_emulator.fail_next(404, times=len(ids))
        report = broker.refresh_due(concurrency=1)
        assert sorted(i for i, _ in report.failed) == ids
        waits = [until(broker.installations.health(i).next_attempt) - clock.time() for i in ids]
        assert all(BASE - SLACK <= w <= 3 * BASE + SLACK for w in waits), waits
        assert len(set(waits)) == len(waits), waits  # jitter: no two retry at once
        assert wix_emulator.token_requests == len(ids)
        report = broker.refresh_due()
        assert sorted(i for i, _ in report.skipped) == ids
        assert wix_emulator.token_requests == len(ids)

    def test_a_rate_limit_backs_off_for_at_least_its_retry_after(
        self, broker: TokenBroker, wix_emulator: WixEmulator, clock: ManualClock
    ) -> None:
        wix_emulator.rate_limit_next(retry_after=600)
        with pytest.raises(RateLimited):
            broker.token(INSTANCE)
        health = broker.installations.health(INSTANCE)
        assert until(health.next_attempt) - clock.time() >= 600 - SLACK
        clock.advance(500)
        with pytest.raises(RateLimited, match="remembered error") as again:
            broker.token(INSTANCE)
        assert again.value.retry_after == pytest.approx(100, abs=1)
        assert wix_emulator.token_requests == 1

    def test_transient_errors_past_the_retry_budget_leave_the_installation_healthy(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        # A 5xx is Wix failing as a whole (the circuit breaker's business): the next
        # call asks Wix again at once, and recovers as soon as Wix does.
        wix_emulator.fail_next(503, times=3)
        with pytest.raises(TransientProviderError):
            broker.token(INSTANCE)
        assert broker.installations.health(INSTANCE).healthy
        requests = wix_emulator.token_requests
        assert broker.token(INSTANCE).access_token
        assert wix_emulator.token_requests == requests + 1

    def test_a_still_valid_token_is_served_while_its_early_refresh_backs_off(
        self, broker: TokenBroker, wix_emulator: WixEmulator, clock: ManualClock
    ) -> None:
        old = broker.token(INSTANCE)
        clock.set((until(old.refresh_at) + until(old.must_refresh_at)) / 2)  # advisory
        wix_emulator.fail_next(400)
        assert broker.token(INSTANCE) == old  # the early refresh failed: served as it is
        assert broker.installations.health(INSTANCE).failing
        requests = wix_emulator.token_requests
        assert broker.token(INSTANCE) == old  # backing off: no request, the old one
        assert wix_emulator.token_requests == requests

    async def test_the_async_path_backs_off_too(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.fail_next(400)
        with pytest.raises(ProviderError, match="400"):
            await broker.atoken(INSTANCE)
        with pytest.raises(ProviderError, match="remembered error"):
            await broker.atoken(INSTANCE)
        report = await broker.arefresh_due()
        assert [i for i, _ in report.skipped] == [INSTANCE]
        assert wix_emulator.token_requests == 1
        assert (await broker.installations.ahealth(INSTANCE)).failing

    def test_a_reset_lets_the_next_call_ask_wix_at_once(
        self, broker: TokenBroker, wix_emulator: WixEmulator, events: HealthEvents
    ) -> None:
        wix_emulator.fail_next(400)
        with pytest.raises(ProviderError):
            broker.token(INSTANCE)
        assert broker.installations.reset_health(INSTANCE).healthy
        assert broker.token(INSTANCE).access_token
        assert wix_emulator.token_requests == 2
        assert events.states() == [("healthy", "failing"), ("failing", "healthy")]


class TestDead:
    def test_not_installed_is_dead_and_never_fetched_until_installed_again(
        self,
        broker: TokenBroker,
        wix_emulator: WixEmulator,
        clock: ManualClock,
        events: HealthEvents,
    ) -> None:
        broker.token(INSTANCE)
        wix_emulator.uninstall(INSTANCE)
        clock.advance(4 * 3600)  # the token is gone; so is the installation
        with pytest.raises(InstanceNotInstalled):
            broker.token(INSTANCE)
        requests = wix_emulator.token_requests
        health = broker.installations.health(INSTANCE)
        assert health.dead
        assert health.dead_reason == "not_installed"
        assert health.next_attempt is None
        for hours in (1, 24, 24 * 30):  # never, however long
            clock.advance(hours * 3600)
            with pytest.raises(InstanceNotInstalled, match="is dead since"):
                broker.token(INSTANCE)
            report = broker.refresh_due()
            assert "dead" in dict(report.skipped)[INSTANCE]
        assert wix_emulator.token_requests == requests
        wix_emulator.install(INSTANCE)  # Wix alone knowing is not enough ...
        with pytest.raises(InstanceNotInstalled):
            broker.token(INSTANCE)
        assert wix_emulator.token_requests == requests

        assert broker.installations.add(INSTANCE).active  # ... re-adding it is
        assert broker.installations.health(INSTANCE).healthy
        assert broker.token(INSTANCE).access_token
        assert wix_emulator.token_requests == requests + 1
        assert events.states() == [("healthy", "dead"), ("dead", "healthy")]

    def test_an_app_installed_webhook_brings_a_dead_installation_back(
        self,
        broker: TokenBroker,
        wix_emulator: WixEmulator,
        clock: ManualClock,
        events: HealthEvents,
    ) -> None:
        wix_emulator.uninstall(INSTANCE)
        with pytest.raises(InstanceNotInstalled):
            broker.token(INSTANCE)
        clock.advance(60)
        wix_emulator.install(INSTANCE)
        body = sign_webhook(
            PRIVATE,
            event_type="AppInstalled",
            instance_id=INSTANCE,
            data={"appId": APP_ID},
            iat=clock.time(),
        )
        broker.handle_webhook(body)
        assert broker.installations.health(INSTANCE).healthy
        assert broker.token(INSTANCE).access_token
        assert wix_emulator.token_requests == 2
        assert events.states() == [("healthy", "dead"), ("dead", "healthy")]

    def test_only_an_install_newer_than_the_death_revives_from_a_webhook(
        self,
        broker: TokenBroker,
        wix_emulator: WixEmulator,
        clock: ManualClock,
        events: HealthEvents,
    ) -> None:
        """What the webhook path asks (``revive_flow`` with the record it wrote)."""
        installations = broker.installations
        record = installations.get(INSTANCE)
        assert record is not None
        wix_emulator.uninstall(INSTANCE)
        with pytest.raises(InstanceNotInstalled):
            broker.token(INSTANCE)
        assert run_sync(installations.revive_flow(INSTANCE, record), installations).dead
        newer = attrs.evolve(record, updated_at=to_datetime(clock.time() + 1))
        assert run_sync(installations.revive_flow(INSTANCE, newer), installations).healthy
        assert events.states() == [("healthy", "dead"), ("dead", "healthy")]

    def test_a_removal_is_dead_until_the_installation_is_added_again(
        self, broker: TokenBroker, wix_emulator: WixEmulator, events: HealthEvents
    ) -> None:
        broker.token(INSTANCE)
        broker.installations.remove(INSTANCE)
        health = broker.installations.health(INSTANCE)
        assert (health.state.value, health.dead_reason) == ("dead", "removed")
        assert [h.instance_id for _, h in broker.installations.list_with_health()] == []
        dead = broker.installations.list_with_health(include_removed=True, state="dead")
        assert [i.instance_id for i, _ in dead] == [INSTANCE]
        with pytest.raises(InstanceNotInstalled):
            broker.token(INSTANCE)
        broker.installations.add(INSTANCE)
        assert broker.token(INSTANCE).access_token
        assert wix_emulator.token_requests == 2
        assert events.states() == [("healthy", "dead"), ("dead", "healthy")]


class TestSharedAndScoped:
    def test_two_brokers_on_one_store_see_the_same_health(
        self, wix_emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        with (
            make_broker(wix_emulator, sqlite_url, clock) as first,
            make_broker(wix_emulator, sqlite_url, clock) as second,
        ):
            first.installations.add(INSTANCE)
            wix_emulator.fail_next(400)
            with pytest.raises(ProviderError, match="400"):
                first.token(INSTANCE)
            seen = second.installations.health(INSTANCE)
            assert seen == first.installations.health(INSTANCE)
            assert seen.failing
            with pytest.raises(ProviderError, match="remembered error"):
                second.token(INSTANCE)  # the other replica does not ask Wix either
            assert second.refresh_due().skipped[0][0] == INSTANCE
            assert wix_emulator.token_requests == 1
            wait_out(clock, seen)
            assert second.token(INSTANCE).access_token
            assert first.installations.health(INSTANCE).healthy

    def test_a_bad_secret_marks_no_installation_failing(
        self,
        wix_emulator: WixEmulator,
        sqlite_url: str,
        clock: ManualClock,
        events: HealthEvents,
    ) -> None:
        ids = [INSTANCE, "inst-2", "inst-3"]
        for instance in ids:
            wix_emulator.install(instance)
        with make_broker(wix_emulator, sqlite_url, clock, secret="wrong") as bad:
            bad.installations.add_many(ids)
            for instance in ids:
                with pytest.raises(InvalidCredentials):
                    bad.token(instance)
            bad.refresh_due()
            assert [h.state.value for _, h in bad.installations.list_with_health()] == [
                "healthy"
            ] * 3
            assert bad.installations.list_with_health(state="failing") == []
        assert events.changes == []
        with make_broker(wix_emulator, sqlite_url, clock) as good:  # the secret fixed
            assert good.token(INSTANCE).access_token  # nothing to wait out

    def test_webhook_writes_to_the_record_leave_health_alone(
        self, broker: TokenBroker, wix_emulator: WixEmulator, clock: ManualClock
    ) -> None:
        wix_emulator.fail_next(400)
        with pytest.raises(ProviderError):
            broker.token(INSTANCE)
        before = broker.installations.health(INSTANCE)
        body = sign_webhook(
            PRIVATE,
            event_type="AppInstalled",
            instance_id=INSTANCE,
            data={"appId": APP_ID},
            iat=clock.time() + 1,
        )
        assert broker.handle_webhook(body).news
        assert broker.installations.health(INSTANCE) == before
        record = broker.installations.get(INSTANCE)
        assert record is not None
        assert "health" not in record.extra

    def test_health_records_are_not_installations(
        self, broker: TokenBroker, wix_emulator: WixEmulator, tmp_path: Path
    ) -> None:
        wix_emulator.fail_next(400)
        with pytest.raises(ProviderError):
            broker.token(INSTANCE)
        assert [i.instance_id for i in broker.installations.list(include_removed=True)] == [
            INSTANCE
        ]
        with pytest.raises(ValueError, match="reserved"):
            TokenBroker(
                app_id="tokenbroker~health~x",
                app_secret=APP_SECRET,
                store=f"sqlite:///{tmp_path / 'other.db'}",
            )


class TestTheHook:
    def test_fires_exactly_once_per_change_of_state(
        self,
        broker: TokenBroker,
        wix_emulator: WixEmulator,
        clock: ManualClock,
        events: HealthEvents,
    ) -> None:
        broker.token(INSTANCE)  # healthy from the start: no change
        clock.advance(4 * 3600)
        wix_emulator.fail_next(400, times=2)
        with pytest.raises(ProviderError):
            broker.token(INSTANCE)  # healthy -> failing
        with pytest.raises(ProviderError, match="remembered error"):
            broker.token(INSTANCE)  # remembered: no change
        wait_out(clock, broker.installations.health(INSTANCE))
        with pytest.raises(ProviderError, match="400"):
            broker.token(INSTANCE)  # still failing: no change
        wait_out(clock, broker.installations.health(INSTANCE))
        wix_emulator.uninstall(INSTANCE)
        with pytest.raises(InstanceNotInstalled):
            broker.token(INSTANCE)  # failing -> dead
        with pytest.raises(InstanceNotInstalled):
            broker.token(INSTANCE)  # remembered: no change
        wix_emulator.install(INSTANCE)
        broker.installations.add(INSTANCE)  # dead -> healthy
        broker.installations.add(INSTANCE)  # healthy already: no change
        wix_emulator.rate_limit_next(retry_after=120)
        with pytest.raises(RateLimited):
            broker.token(INSTANCE)  # healthy -> failing
        wait_out(clock, broker.installations.health(INSTANCE))
        broker.token(INSTANCE)  # failing -> healthy
        broker.token(INSTANCE)  # a near-cache hit: nothing at all
        assert events.states() == [
            ("healthy", "failing"),
            ("failing", "dead"),
            ("dead", "healthy"),
            ("healthy", "failing"),
            ("failing", "healthy"),
        ]
        assert {(app, inst) for app, inst, _, _ in events.changes} == {(APP_ID, INSTANCE)}

    def test_a_raising_hook_breaks_neither_the_fetch_nor_the_record(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        reset_plugins()

        @hookimpl
        def tokenbroker_installation_health_changed(
            app_id: str, instance_id: str, old: InstallationHealth, new: InstallationHealth
        ) -> None:
            raise RuntimeError("the pager is down")

        plugin_manager().register(
            SimpleNamespace(
                tokenbroker_installation_health_changed=tokenbroker_installation_health_changed
            ),
            name="broken-health",
        )
        try:
            wix_emulator.fail_next(400)
            with pytest.raises(ProviderError, match="400"):
                broker.token(INSTANCE)
            assert broker.installations.health(INSTANCE).failing
        finally:
            reset_plugins()
