"""The tokenbroker command: output, exit statuses, and no leaks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import tokenbroker
from tokenbroker.cli import main
from tokenbroker.testing.emulator import WixEmulator

from .conftest import APP_ID, APP_SECRET, INSTANCE


@pytest.fixture
def env(wix_emulator: WixEmulator, sqlite_url: str) -> dict[str, str]:
    return {
        "TOKENBROKER_APP_ID": APP_ID,
        "TOKENBROKER_APP_SECRET": APP_SECRET,
        "TOKENBROKER_STORE": sqlite_url,
        "TOKENBROKER_API_URL": wix_emulator.url,
    }


Invoke = Callable[..., Result]


@pytest.fixture
def run(env: dict[str, str]) -> Invoke:
    runner = CliRunner()

    def invoke(*args: str, **extra_env: str) -> Result:
        return runner.invoke(main, list(args), env={**env, **extra_env}, catch_exceptions=False)

    return invoke


class TestToken:
    def test_token_prints_the_raw_token_alone(self, run: Invoke, wix_emulator: WixEmulator) -> None:
        result = run("token", INSTANCE)
        assert result.exit_code == 0
        assert result.stdout.strip() in wix_emulator.issued_tokens_for(INSTANCE)
        assert result.stdout.count("\n") == 1

    def test_token_json_has_the_documented_fields(self, run: Invoke) -> None:
        result = run("token", INSTANCE, "--json")
        body = json.loads(result.stdout)
        assert set(body) == {"access_token", "token_type", "expires_at", "instance_id"}
        assert body["instance_id"] == INSTANCE

    def test_a_second_invocation_is_served_from_the_store(
        self, run: Invoke, wix_emulator: WixEmulator
    ) -> None:
        first = run("token", INSTANCE).stdout
        second = run("token", INSTANCE).stdout
        assert first == second
        assert wix_emulator.token_requests == 1


class TestErrors:
    def test_a_provider_error_is_one_line_and_exit_1(self, run: Invoke) -> None:
        result = run("token", "never-installed")
        assert result.exit_code == 1
        assert result.stderr.startswith("tokenbroker: error: ")
        assert result.stderr.count("\n") == 1
        assert "Traceback" not in result.output

    def test_a_wrong_secret_never_shows_the_secret(self, run: Invoke) -> None:
        result = run("token", INSTANCE, TOKENBROKER_APP_SECRET="the-wrong-one")
        assert result.exit_code == 1
        assert "the-wrong-one" not in result.output
        assert "401" in result.stderr

    def test_a_missing_setting_is_exit_2_naming_it(self, run: Invoke) -> None:
        result = run("token", INSTANCE, TOKENBROKER_APP_ID="")
        assert result.exit_code == 2
        assert "TOKENBROKER_APP_ID" in result.stderr

    def test_a_bad_instance_id_is_exit_2(self, run: Invoke) -> None:
        result = run("token", "x" * 300)
        assert result.exit_code == 2
        assert "256" in result.stderr

    def test_an_unknown_store_scheme_is_exit_2_listing_schemes(self, run: Invoke) -> None:
        result = run("installations", "list", TOKENBROKER_STORE="nosql://h")
        assert result.exit_code == 2
        assert "sqlite" in result.stderr

    def test_an_unwritable_store_is_exit_1(self, run: Invoke, tmp_path: Path) -> None:
        blocker = tmp_path / "f"
        blocker.write_text("x")
        result = run("installations", "list", TOKENBROKER_STORE=f"sqlite:///{blocker}/db.sqlite")
        assert result.exit_code == 1
        assert "Traceback" not in result.output

    def test_usage_errors_are_exit_2(self, run: Invoke) -> None:
        assert run("token").exit_code == 2


class TestInstallationsAndSetup:
    def test_add_list_remove(self, run: Invoke) -> None:
        assert run("installations", "add", "a", "b").exit_code == 0
        listed = json.loads(run("installations", "list", "--json").stdout)
        assert [i["instance_id"] for i in listed] == ["a", "b"]
        assert {i["status"] for i in listed} == {"installed"}
        assert run("installations", "remove", "a").exit_code == 0
        plain = run("installations", "list").stdout
        assert plain.startswith("b\tinstalled")
        everything = json.loads(run("installations", "list", "--json", "--all").stdout)
        assert [i["status"] for i in everything] == ["removed", "installed"]

    def test_add_validates_every_id_before_writing_any(self, run: Invoke) -> None:
        result = run("installations", "add", "good", "bad\x01id")
        assert result.exit_code == 2
        listed = json.loads(run("installations", "list", "--json").stdout)
        assert listed == []

    def test_installation_commands_need_no_secret(self, run: Invoke) -> None:
        result = run("installations", "add", "a", TOKENBROKER_APP_SECRET="")
        assert result.exit_code == 0

    def test_finish_setup_sends_the_event(self, run: Invoke, wix_emulator: WixEmulator) -> None:
        result = run("finish-setup", INSTANCE)
        assert result.exit_code == 0
        assert wix_emulator.bi_events == [(INSTANCE, "APP_FINISHED_CONFIGURATION")]


class TestBackendsCommand:
    def test_lists_each_scheme_with_its_plugin(self, run: Invoke) -> None:
        lines = run("backends").stdout.splitlines()
        schemes = {line.split()[0]: line.split()[1] for line in lines}
        assert schemes["sqlite"] == "builtin_backends"
        assert schemes["memory"] == "builtin_backends"


def run_real(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, PYTHONPATH=str(Path(tokenbroker.__file__).parents[1]), **env)
    return subprocess.run(
        [sys.executable, "-m", "tokenbroker.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )


class TestRealProcess:
    def test_the_demo_walks_every_step(self, tmp_path: Path) -> None:
        result = run_real("demo", env={"XDG_DATA_HOME": str(tmp_path)})
        assert result.returncode == 0, result.stderr
        for step in range(1, 8):
            assert f"\n{step}. " in result.stdout
        assert "upstream token requests still 1" in result.stdout
        assert "upstream token requests now 2" in result.stdout
        assert "demo-app-secret" not in result.stdout
        assert not list(tmp_path.iterdir())  # the default store was not touched

    def test_an_error_exits_without_a_traceback(self, env: dict[str, str]) -> None:
        result = run_real("token", "never-installed", env=env)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert APP_SECRET not in result.stderr
