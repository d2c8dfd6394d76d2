"""``tokenbroker doctor``: each check, and the exit status."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner

from tokenbroker.cli import main
from tokenbroker.settings import default_store_path
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.webhooks import make_key_pair

from .conftest import APP_ID, APP_SECRET, INSTANCE


def env_for(emulator: WixEmulator, store: str, **extra: str) -> dict[str, str]:
    return {
        "TOKENBROKER_APP_ID": APP_ID,
        "TOKENBROKER_APP_SECRET": APP_SECRET,
        "TOKENBROKER_STORE": store,
        "TOKENBROKER_API_URL": emulator.url,
        **extra,
    }


class TestDoctor:
    def test_all_well_exits_0_and_says_so(self, wix_emulator: WixEmulator, sqlite_url: str) -> None:
        _, public = make_key_pair()
        env = env_for(wix_emulator, sqlite_url, TOKENBROKER_APP_PUBLIC_KEY=public)
        result = CliRunner().invoke(main, ["doctor", "--instance", INSTANCE], env=env)
        assert result.exit_code == 0, result.output
        for name in ("settings", "plugins", "store", "schema", "encryption", "webhooks", "token"):
            assert f"✓ {name}:" in result.stdout
        assert APP_SECRET not in result.stdout

    def test_an_unreachable_store_fails(self, wix_emulator: WixEmulator, tmp_path: Path) -> None:
        blocker = tmp_path / "f"
        blocker.write_text("x")
        env = env_for(wix_emulator, f"sqlite:///{blocker}/db.sqlite")
        result = CliRunner().invoke(main, ["doctor"], env=env)
        assert result.exit_code == 1
        assert "✗ store:" in result.stdout

    def test_a_token_that_cannot_be_fetched_fails(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        env = env_for(wix_emulator, sqlite_url)
        result = CliRunner().invoke(main, ["doctor", "--instance", "never-installed"], env=env)
        assert result.exit_code == 1
        assert "✗ token: never-installed" in result.stdout

    def test_missing_settings_fail_first(self) -> None:
        result = CliRunner().invoke(main, ["doctor"], env={"TOKENBROKER_APP_ID": ""})
        assert result.exit_code == 1
        assert "✗ settings: TOKENBROKER_APP_ID" in result.stdout

    def test_a_bad_public_key_fails_the_webhook_check(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        env = env_for(wix_emulator, sqlite_url, TOKENBROKER_APP_PUBLIC_KEY="not a key")
        result = CliRunner().invoke(main, ["doctor"], env=env)
        assert result.exit_code == 1
        assert "✗ webhooks:" in result.stdout


class TestPrivateFiles:
    def test_a_new_default_store_is_private_and_passes(
        self, wix_emulator: WixEmulator, tmp_path: Path
    ) -> None:
        env: dict[str, str | None] = {
            **env_for(wix_emulator, ""),
            "TOKENBROKER_STORE": None,
            "XDG_DATA_HOME": str(tmp_path / "data"),
        }
        result = CliRunner().invoke(main, ["doctor"], env=env)
        assert result.exit_code == 0, result.output
        assert "✓ file permissions:" in result.stdout
        path = default_store_path({"XDG_DATA_HOME": str(tmp_path / "data")})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    def test_a_store_file_readable_by_others_fails_the_check(
        self, wix_emulator: WixEmulator, tmp_path: Path
    ) -> None:
        path = tmp_path / "tokens.db"
        env = env_for(wix_emulator, f"sqlite:///{path}")
        assert CliRunner().invoke(main, ["doctor"], env=env).exit_code == 0
        path.chmod(0o644)
        result = CliRunner().invoke(main, ["doctor"], env=env)
        assert result.exit_code == 1, result.output
        line = next(x for x in result.stdout.splitlines() if "file permissions" in x)
        assert line.startswith("✗ file permissions:")
        assert f"{path} is mode 0644" in line
        assert "chmod 600" in line
        assert "✓ store:" in result.stdout  # the store itself still works
