"""``tokenbroker installations list --health ...`` and ``installations reset-health``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tokenbroker import InstanceNotInstalled, ProviderError, TokenBroker
from tokenbroker.testing.emulator import WixEmulator

from ..conftest import APP_ID, APP_SECRET
from .conftest import Invoke

HEALTHY, FAILING, DEAD, REMOVED = "inst-ok", "inst-failing", "inst-dead", "inst-removed"


@pytest.fixture
def fleet(wix_emulator: WixEmulator, sqlite_url: str) -> Iterator[TokenBroker]:
    """One installation of each kind, made by a broker on the CLI's store."""
    for instance in (HEALTHY, FAILING, REMOVED):
        wix_emulator.install(instance)
    with TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store=sqlite_url, api_url=wix_emulator.url
    ) as broker:
        broker.installations.add_many([HEALTHY, FAILING, DEAD, REMOVED])
        broker.token(HEALTHY)
        wix_emulator.fail_next(400)
        with pytest.raises(ProviderError):
            broker.token(FAILING)
        with pytest.raises(InstanceNotInstalled):
            broker.token(DEAD)  # never installed on Wix
        broker.installations.remove(REMOVED)
        yield broker


def listed(run: Invoke, *args: str) -> list[dict[str, Any]]:
    result = run("installations", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert isinstance(parsed, list)
    return parsed


class TestList:
    def test_health_failing_json_shows_the_failure_in_full(
        self, run: Invoke, fleet: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        rows = listed(run, "--health", "failing")
        assert [row["instance_id"] for row in rows] == [FAILING]
        row = rows[0]
        assert row["status"] == "installed"  # the installation's own fields stay
        health = row["health"]
        assert health["state"] == "failing"
        assert health["failures"] == 1
        assert datetime.fromisoformat(health["failing_since"]) <= datetime.fromisoformat(
            health["next_attempt"]
        )
        error = health["last_error"]
        assert error["class"] == "ProviderError"
        assert error["status"] == 400
        assert "400" in error["message"]
        assert error["request_id"] in wix_emulator.request_ids
        assert health["last_token_at"] is None

    def test_every_state_can_be_picked(self, run: Invoke, fleet: TokenBroker) -> None:
        healthy = listed(run, "--health", "healthy")
        assert [row["instance_id"] for row in healthy] == [HEALTHY]
        noted = healthy[0]["health"]
        assert noted["last_token_at"] is not None
        assert noted["next_refresh_at"] is not None
        dead = {row["instance_id"]: row["health"] for row in listed(run, "--health", "dead")}
        assert set(dead) == {DEAD, REMOVED}  # a removed one is dead without --all
        assert {h["dead_reason"] for h in dead.values()} == {"not_installed", "removed"}
        assert {row["instance_id"] for row in listed(run)} == {HEALTHY, FAILING, DEAD}

    def test_the_plain_listing_has_health_columns(self, run: Invoke, fleet: TokenBroker) -> None:
        result = run("installations", "list")
        lines = dict(line.split("\t", 1) for line in result.stdout.splitlines())
        assert "\tfailing\tsince " in lines[FAILING]
        assert "1 failure(s)" in lines[FAILING]
        assert "last error ProviderError: " in lines[FAILING]
        assert "\tdead\tnot installed, since " in lines[DEAD]
        assert "\thealthy\tlast token " in lines[HEALTHY]
        empty = run("installations", "list", "--health", "failing", TOKENBROKER_STORE="memory://")
        assert empty.exit_code == 0
        assert "no failing installations" in empty.stderr

    def test_an_unknown_state_is_a_usage_error(self, run: Invoke) -> None:
        result = run("installations", "list", "--health", "poorly")
        assert result.exit_code == 2
        assert "poorly" in result.output


class TestResetHealth:
    def test_makes_failing_and_dead_installations_healthy(
        self, run: Invoke, fleet: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        result = run("installations", "reset-health", FAILING, DEAD, HEALTHY, REMOVED)
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == [
            f"reset {FAILING} (was failing)",
            f"reset {DEAD} (was dead)",
            f"{HEALTHY} was healthy",
            f"{REMOVED} is removed; add it again to fetch its tokens",
        ]
        assert listed(run, "--health", "failing") == []
        requests = wix_emulator.token_requests
        assert fleet.token(FAILING).access_token  # asked at once, no back-off left
        assert wix_emulator.token_requests == requests + 1
