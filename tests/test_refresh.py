"""The bulk refresher and ``tokenbroker refresh``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from tokenbroker import ManualClock, TokenBroker
from tokenbroker.broker.refresh import RefreshResult
from tokenbroker.cli import main, parse_duration
from tokenbroker.testing.emulator import WixEmulator

from .conftest import APP_ID, APP_SECRET

INSTANCES = [f"inst-{n:03d}" for n in range(20)]


@pytest.fixture
def fleet(wix_emulator: WixEmulator, sqlite_url: str) -> Iterator[TokenBroker]:
    for instance in INSTANCES:
        wix_emulator.install(instance)
    with TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store=sqlite_url, api_url=wix_emulator.url
    ) as broker:
        broker.add_installations(INSTANCES)
        yield broker


class TestRefreshDue:
    def test_every_missing_token_is_fetched_with_bounded_concurrency(
        self, fleet: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.latency = 0.05
        seen: list[RefreshResult] = []
        totals: list[int] = []
        report = fleet.refresh_due(
            within=1800, concurrency=4, progress=seen.append, on_start=totals.append
        )
        assert sorted(report.refreshed) == INSTANCES
        assert report.failed == []
        assert totals == [20]
        assert len(seen) == 20
        assert wix_emulator.token_requests == 20
        assert 1 < wix_emulator.peak_concurrency <= 4
        for instance in INSTANCES:
            assert fleet.store.get_token(fleet.key(instance)) is not None

    def test_fresh_tokens_are_left_alone(
        self, fleet: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        fleet.refresh_due(within=1800)
        report = fleet.refresh_due(within=1800)
        assert sorted(report.fresh) == INSTANCES
        assert report.refreshed == []
        assert wix_emulator.token_requests == 20

    def test_due_tokens_are_refreshed(self, wix_emulator: WixEmulator, sqlite_url: str) -> None:
        for instance in INSTANCES[:3]:
            wix_emulator.install(instance)
        clock = ManualClock()
        with TokenBroker(
            app_id=APP_ID,
            app_secret=APP_SECRET,
            store=sqlite_url,
            api_url=wix_emulator.url,
            clock=clock,
        ) as broker:
            broker.add_installations(INSTANCES[:3])
            broker.refresh_due(within=1800)
            clock.advance(4 * 3600 - 20 * 60)  # every token now expires within 30 minutes
            report = broker.refresh_due(within=1800)
        assert sorted(report.refreshed) == INSTANCES[:3], report
        assert wix_emulator.token_requests == 6

    def test_removed_installations_are_never_refreshed(
        self, fleet: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        fleet.remove_installation(INSTANCES[0])
        report = fleet.refresh_due(within=1800)
        assert INSTANCES[0] not in report.refreshed
        assert report.total == 19
        assert wix_emulator.issued_tokens_for(INSTANCES[0]) == []

    def test_the_rate_guard_stops_a_second_run_from_asking_again_at_once(
        self, fleet: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        fleet.refresh_due(within=5 * 3600)  # longer than a token lives: always due
        report = fleet.refresh_due(within=5 * 3600)
        assert len(report.skipped) == 20
        assert all("rate guard" in reason for _, reason in report.skipped)
        assert wix_emulator.token_requests == 20

    def test_failures_are_reported_with_reasons_and_the_rest_go_on(
        self, fleet: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.uninstall(INSTANCES[5])
        report = fleet.refresh_due(within=1800)
        assert [instance for instance, _ in report.failed] == [INSTANCES[5]]
        assert "not installed" in report.failed[0][1]
        assert len(report.refreshed) == 19
        assert "1 failed" in report.summary()

    async def test_the_async_twin_refreshes_too(
        self, fleet: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        report = await fleet.arefresh_due(within=1800, concurrency=8)
        assert len(report.refreshed) == 20

    def test_the_sync_twin_runs_on_worker_threads_without_an_event_loop(
        self, fleet: TokenBroker
    ) -> None:
        import asyncio
        import threading

        seen: list[tuple[str, bool]] = []

        def progress(result: RefreshResult) -> None:
            try:
                asyncio.get_running_loop()
                looped = True
            except RuntimeError:
                looped = False
            seen.append((threading.current_thread().name, looped))

        fleet.refresh_due(within=1800, concurrency=4, progress=progress)
        assert len(seen) == 20
        assert all(name.startswith("tokenbroker-refresh") for name, _ in seen)
        assert not any(looped for _, looped in seen)

    @pytest.mark.parametrize(
        ("kwargs", "match"), [({"within": -1}, "within"), ({"concurrency": 0}, "concurrency")]
    )
    def test_bad_arguments_are_config_errors(
        self, fleet: TokenBroker, kwargs: dict[str, float], match: str
    ) -> None:
        from tokenbroker import ConfigError

        with pytest.raises(ConfigError, match=match):
            fleet.refresh_due(**kwargs)  # type: ignore[arg-type]


class TestRefreshCommand:
    @pytest.fixture
    def env(self, fleet: TokenBroker, wix_emulator: WixEmulator, sqlite_url: str) -> dict[str, str]:
        return {
            "TOKENBROKER_APP_ID": APP_ID,
            "TOKENBROKER_APP_SECRET": APP_SECRET,
            "TOKENBROKER_STORE": sqlite_url,
            "TOKENBROKER_API_URL": wix_emulator.url,
        }

    def test_prints_a_summary(self, env: dict[str, str], wix_emulator: WixEmulator) -> None:
        result = CliRunner().invoke(
            main, ["refresh", "--within", "30m", "--concurrency", "4", "--no-progress"], env=env
        )
        assert result.exit_code == 0, result.output
        assert "20 installation(s)" in result.stdout
        assert "20 refreshed" in result.stdout
        assert wix_emulator.token_requests == 20

    def test_shows_progress_when_asked_and_exits_1_on_failures(
        self, env: dict[str, str], wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.uninstall(INSTANCES[0])
        result = CliRunner().invoke(main, ["refresh", "--progress"], env=env)
        assert result.exit_code == 1
        assert f"failed {INSTANCES[0]}" in result.stderr
        assert "19 refreshed" in result.stdout

    def test_a_bad_duration_is_a_usage_error(self, env: dict[str, str]) -> None:
        result = CliRunner().invoke(main, ["refresh", "--within", "soon"], env=env)
        assert result.exit_code == 2
        assert "duration" in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
