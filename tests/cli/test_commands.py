"""Commands that used to report success on failure, or fail on a closed pipe."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tokenbroker import TokenBroker
from tokenbroker.testing.emulator import WixEmulator

from ..conftest import APP_ID, APP_SECRET, INSTANCE
from ..workers import worker_env
from .conftest import Invoke


@pytest.fixture
def store_broker(wix_emulator: WixEmulator, sqlite_url: str) -> Iterator[TokenBroker]:
    """A broker on the store the CLI's ``env`` names, to set the scene."""
    with TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store=sqlite_url, api_url=wix_emulator.url
    ) as broker:
        yield broker


def pending(broker: TokenBroker, *instance_ids: str) -> None:
    for instance_id in instance_ids:
        broker.add_installation(instance_id)
        broker.mark_setup_pending(instance_id)


class TestFinishSetupPending:
    def test_exits_1_naming_how_many_are_still_failing(
        self, run: Invoke, store_broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        pending(store_broker, INSTANCE, "ghost-1", "ghost-2")  # the ghosts are not installed
        result = run("finish-setup", "--pending")
        assert result.exit_code == 1
        assert "for 1 pending installation(s)" in result.stdout
        assert result.stderr.splitlines() == [
            "tokenbroker: error: finish-setup still failing for 2 installation(s): ghost-1, ghost-2"
        ]
        assert wix_emulator.bi_events == [(INSTANCE, "APP_FINISHED_CONFIGURATION")]

    def test_exits_1_when_every_retry_failed(self, run: Invoke, store_broker: TokenBroker) -> None:
        pending(store_broker, "ghost-1")
        result = run("finish-setup", "--pending")
        assert result.exit_code == 1
        assert "for 0 pending installation(s)" in result.stdout
        assert "still failing for 1 installation(s)" in result.stderr

    def test_a_long_list_is_cut_short(self, run: Invoke, store_broker: TokenBroker) -> None:
        pending(store_broker, *(f"ghost-{n}" for n in range(7)))
        result = run("finish-setup", "--pending")
        assert result.exit_code == 1
        assert result.stderr.strip().endswith("ghost-4 and 2 more")

    def test_exits_0_when_every_pending_one_is_done(
        self, run: Invoke, store_broker: TokenBroker
    ) -> None:
        pending(store_broker, INSTANCE)
        result = run("finish-setup", "--pending")
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        assert "for 1 pending installation(s)" in result.stdout
        again = run("finish-setup", "--pending")
        assert again.exit_code == 0
        assert "for 0 pending installation(s)" in again.stdout


class TestAClosedStdout:
    def test_demo_piped_into_a_reader_that_stops_early_ends_quietly(self) -> None:
        with subprocess.Popen(
            [sys.executable, "-m", "tokenbroker.cli", "demo"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=worker_env(),
        ) as demo:
            assert demo.stdout is not None
            assert demo.stderr is not None
            first = demo.stdout.readline()  # what `head -n 1` does, then it exits
            demo.stdout.close()
            errors = demo.stderr.read()
            status = demo.wait(timeout=60)
        assert first.startswith("Wix emulator on ")
        assert errors == ""
        assert status == 141  # as for a process killed by SIGPIPE (`yes | head`)
