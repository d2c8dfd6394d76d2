"""The bulk refresher's batched path, against the emulator.

Bounds (requests in flight, the credential refusal, the rate guard), health kept
only when it changes, keys held elsewhere skipped, and two refreshers sharing a
store never asking Wix twice for one key (counted at the emulator).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tokenbroker import ConfigError, ManualClock, TokenBroker
from tokenbroker.broker.refresh import RateBudget, RateGuard, RefreshReport, RefreshResult
from tokenbroker.cli import main
from tokenbroker.core.clock import SystemClock
from tokenbroker.core.health import health_app_id
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.servers import delete_redis_keys

from .backends.conftest import find_redis
from .conftest import APP_ID, APP_SECRET

FLEET = [f"bulk-{n:03d}" for n in range(120)]


def make(emulator: WixEmulator, store: str, clock: ManualClock | None = None) -> TokenBroker:
    return TokenBroker(
        app_id=APP_ID,
        app_secret=APP_SECRET,
        store=store,
        api_url=emulator.url,
        clock=clock if clock is not None else SystemClock(),
    )


@pytest.fixture
def fleet(wix_emulator: WixEmulator, sqlite_url: str) -> Iterator[TokenBroker]:
    for instance in FLEET:
        wix_emulator.install(instance)
    with make(wix_emulator, sqlite_url) as broker:
        broker.add_installations(FLEET)
        yield broker


class TestBounds:
    def test_requests_in_flight_stay_within_the_concurrency(
        self, fleet: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.latency = 0.02
        report = fleet.refresh_due(concurrency=7)
        assert sorted(report.refreshed) == FLEET
        assert wix_emulator.token_requests == len(FLEET)
        assert 1 < wix_emulator.peak_concurrency <= 7

    async def test_the_async_twin_stays_within_it_too(
        self, fleet: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.latency = 0.02
        report = await fleet.arefresh_due(concurrency=6)
        assert sorted(report.refreshed) == FLEET
        assert wix_emulator.token_requests == len(FLEET)
        assert 1 < wix_emulator.peak_concurrency <= 6

    def test_a_credential_refusal_stops_the_run_across_batches(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        for instance in FLEET:
            wix_emulator.install(instance)
        with TokenBroker(
            app_id=APP_ID, app_secret="wrong", store=sqlite_url, api_url=wix_emulator.url
        ) as broker:
            broker.add_installations(FLEET)
            report = broker.refresh_due(concurrency=3)
        assert wix_emulator.token_requests <= 3
        assert len(report.failed) == 1
        assert "401" in report.failed[0][1]
        assert len(report.skipped) == len(FLEET) - 1
        assert report.refreshed == []

    def test_the_rate_guard_holds_a_second_run_and_forgets_what_passed(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        clock = ManualClock()
        for instance in FLEET:
            wix_emulator.install(instance)
        with make(wix_emulator, sqlite_url, clock) as broker:
            broker.add_installations(FLEET)
            broker.refresher.guard = RateGuard(min_interval=60)
            broker.refresh_due(within=5 * 3600)  # longer than a token lives: always due
            again = broker.refresh_due(within=5 * 3600)
            assert {reason[:10] for _, reason in again.skipped} == {"rate guard"}
            assert wix_emulator.token_requests == len(FLEET)
            clock.advance(61)
            guard = broker.refresher.guard
            for n in range(3000):  # enough notes to prune: the passed entries go
                guard.note(f"other-{n}", clock.time())
            assert len(guard) <= 3000
            third = broker.refresh_due(within=5 * 3600)
        assert len(third.refreshed) == len(FLEET)


class TestHealth:
    def test_a_failure_is_recorded_and_a_later_success_clears_it(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        clock = ManualClock()
        ids = FLEET[:10]
        for instance in ids:
            wix_emulator.install(instance)
        with make(wix_emulator, sqlite_url, clock) as broker:
            broker.add_installations(ids)
            wix_emulator.fail_next(404, times=1)
            first = broker.refresh_due(concurrency=1)
            (failed,) = (instance for instance, _ in first.failed)
            assert broker.installations.health(failed).failing
            # A success writes no health record: nothing changed.
            healthy = next(i for i in ids if i != failed)
            health_store = broker.store
            assert health_store.get_installation(health_app_id(APP_ID), healthy) is None
            skipped = broker.refresh_due()
            assert [i for i, _ in skipped.skipped] == [failed]
            clock.advance(3600)  # past any first back-off
            again = broker.refresh_due()
            assert again.refreshed == [failed]
            assert broker.installations.health(failed).healthy
        assert wix_emulator.token_requests == len(ids) + 1

    def test_an_uninstalled_instance_is_dead_after_the_run(
        self, fleet: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.uninstall(FLEET[7])
        report = fleet.refresh_due()
        assert [i for i, _ in report.failed] == [FLEET[7]]
        assert fleet.installations.health(FLEET[7]).dead
        again = fleet.refresh_due()
        assert [i for i, _ in again.skipped] == [FLEET[7]]
        assert wix_emulator.token_requests == len(FLEET)


class TestSharing:
    def test_a_key_whose_lease_is_held_elsewhere_is_skipped(
        self, fleet: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        lease = fleet.store.acquire_lease(fleet.key(FLEET[3]), 30)
        assert lease is not None
        report = fleet.refresh_due()
        assert [i for i, _ in report.skipped] == [FLEET[3]]
        assert "lease" in report.skipped[0][1]
        assert wix_emulator.issued_tokens_for(FLEET[3]) == []
        fleet.store.release_lease(lease)
        assert fleet.refresh_due().refreshed == [FLEET[3]]

    def test_progress_follows_a_first_total(self, fleet: TokenBroker) -> None:
        events: list[object] = []

        def progress(result: RefreshResult) -> None:
            events.append(result.outcome)

        fleet.refresh_due(progress=progress, on_start=events.append)
        assert events[0] == len(FLEET)
        assert events.count("refreshed") == len(FLEET)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_two_refreshers_in_parallel_never_fetch_one_key_twice(
    backend: str, wix_emulator: WixEmulator, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    prefix = f"tb_bulk_pair_{uuid.uuid4().hex[:8]}:"
    if backend == "sqlite":
        store = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        store = f"{find_redis()}?key_prefix={prefix}"
        request.addfinalizer(lambda: delete_redis_keys(find_redis(), prefix))
    for instance in FLEET:
        wix_emulator.install(instance)
    wix_emulator.latency = 0.01
    with make(wix_emulator, store) as one, make(wix_emulator, store) as two:
        one.add_installations(FLEET)
        reports: list[RefreshReport] = []
        start = threading.Barrier(2)

        def run(broker: TokenBroker) -> None:
            start.wait()
            reports.append(broker.refresh_due(concurrency=8))

        threads = [threading.Thread(target=run, args=(b,)) for b in (one, two)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert len(reports) == 2
    assert wix_emulator.token_requests == len(FLEET)  # each key asked for once
    for instance in FLEET:
        assert len(wix_emulator.issued_tokens_for(instance)) == 1
    refreshed = [i for report in reports for i in report.refreshed]
    assert sorted(refreshed) == FLEET
    assert all(report.failed == [] for report in reports)


def test_the_async_twin_and_the_sync_one_share_one_store_safely(
    wix_emulator: WixEmulator, sqlite_url: str
) -> None:
    for instance in FLEET:
        wix_emulator.install(instance)
    wix_emulator.latency = 0.01
    with make(wix_emulator, sqlite_url) as one, make(wix_emulator, sqlite_url) as two:
        one.add_installations(FLEET)
        done: list[RefreshReport] = []
        thread = threading.Thread(target=lambda: done.append(one.refresh_due(concurrency=5)))
        thread.start()
        second = asyncio.run(two.arefresh_due(concurrency=5))
        thread.join(120)
    assert wix_emulator.token_requests == len(FLEET)
    assert sorted(done[0].refreshed + second.refreshed) == FLEET


class TestTheRateBudget:
    def test_slots_are_spaced_by_the_rate_across_callers(self) -> None:
        clock = ManualClock(1000.0)
        budget = RateBudget(4.0, clock=clock.time)
        waits = [budget.reserve() for _ in range(5)]
        assert waits == [0.0, 0.25, 0.5, 0.75, 1.0]
        clock.advance(10)  # idle time is not saved up: the next slot is now
        assert budget.reserve() == 0.0

    @pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan"), True])
    def test_a_rate_must_be_a_positive_number(self, rate: float) -> None:
        with pytest.raises(ConfigError, match="rate"):
            RateBudget(rate)

    def test_every_request_of_a_run_takes_a_slot(
        self, fleet: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        taken: list[float] = []

        class Counting(RateBudget):
            def reserve(self) -> float:
                taken.append(super().reserve())
                return 0.0  # counted, not waited for: the spacing is the unit test's

        fleet.refresher.budget = Counting(10.0, clock=ManualClock(0.0).time)
        report = fleet.refresh_due(concurrency=4)
        assert len(report.refreshed) == len(FLEET)
        assert len(taken) == wix_emulator.token_requests == len(FLEET)
        assert max(taken) == pytest.approx((len(FLEET) - 1) / 10.0)  # one slot each

    def test_the_command_line_caps_the_rate(
        self, fleet: TokenBroker, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        env = {
            "TOKENBROKER_APP_ID": APP_ID,
            "TOKENBROKER_APP_SECRET": APP_SECRET,
            "TOKENBROKER_STORE": sqlite_url,
            "TOKENBROKER_API_URL": wix_emulator.url,
        }
        bad = CliRunner().invoke(main, ["refresh", "--rate", "0"], env=env)
        assert bad.exit_code == 2
        ok = CliRunner().invoke(main, ["refresh", "--rate", "1000", "--no-progress"], env=env)
        assert ok.exit_code == 0, ok.output
        assert f"{len(FLEET)} refreshed" in ok.stdout
