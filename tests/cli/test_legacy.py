"""``tokenbroker legacy exchange``: an install's code from standard input, never argv."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tokenbroker import TokenBroker
from tokenbroker.cli import main
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.wix.legacy import refresh_key

from ..conftest import APP_ID, APP_SECRET

INSTANCE = "inst-legacy"


@pytest.fixture
def emulator() -> Iterator[WixEmulator]:
    with WixEmulator(APP_ID, APP_SECRET) as emu:
        yield emu


def write_config(path: Path, emulator: WixEmulator, *, with_wix_app: bool = False) -> Path:
    store = f"sqlite:///{path.parent / 'tokens.db'}"
    text = (
        f'store = "{store}"\n\n[apps.legacy]\n'
        f'app_id = "{APP_ID}"\napp_secret = "{APP_SECRET}"\n'
        f'provider = "wix-legacy"\napi_url = "{emulator.url}"\n'
    )
    if with_wix_app:
        text += (
            f'\n[apps.shop]\napp_id = "shop-app"\napp_secret = "shop-secret"\n'
            f'api_url = "{emulator.url}"\n'
        )
    path.write_text(text)
    return path


@pytest.fixture
def config(tmp_path: Path, emulator: WixEmulator) -> Path:
    return write_config(tmp_path / "tokenbroker.toml", emulator)


def run(config: Path, *args: str, stdin: str = "") -> Result:
    unset = dict.fromkeys(("TOKENBROKER_CONFIG", "TOKENBROKER_APP_SECRET"))
    return CliRunner().invoke(
        main,
        ["--config", str(config), "legacy", "exchange", *args],
        input=stdin,
        env=unset,
        catch_exceptions=False,
        prog_name="tokenbroker",
    )


def broker_on(config: Path, emulator: WixEmulator) -> TokenBroker:
    store = f"sqlite:///{config.parent / 'tokens.db'}"
    return TokenBroker(
        app_id=APP_ID,
        app_secret=APP_SECRET,
        store=store,
        api_url=emulator.url,
        provider="wix-legacy",
    )


class TestExchange:
    def test_a_code_on_stdin_completes_the_install(
        self, config: Path, emulator: WixEmulator
    ) -> None:
        result = run(config, "--instance", INSTANCE, stdin=emulator.authorization_code(INSTANCE))
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"exchanged the authorization code for {INSTANCE}:")
        assert result.stderr == ""
        with broker_on(config, emulator) as broker:
            record = broker.store.get_token(refresh_key(broker.key(INSTANCE)))
            assert record is not None
            assert emulator.live_refresh_tokens(INSTANCE) == [record.access_token]
            assert broker.installations.get(INSTANCE) is not None
            token = broker.token(INSTANCE)  # the first access token, stored: no request
        assert emulator.access_requests == 1
        assert token.access_token not in result.output
        assert token.fingerprint in result.stdout

    def test_the_whole_redirect_url_may_be_given(self, config: Path, emulator: WixEmulator) -> None:
        code = emulator.authorization_code(INSTANCE)
        url = f"https://app.example.com/oauth?code={code}&instanceId={INSTANCE}&state=s"
        result = run(config, "--instance", INSTANCE, stdin=url + "\n")
        assert result.exit_code == 0, result.output
        assert emulator.live_refresh_tokens(INSTANCE)

    def test_a_redirect_url_for_another_instance_is_refused_before_anything_is_sent(
        self, config: Path, emulator: WixEmulator
    ) -> None:
        code = emulator.authorization_code("inst-other")
        url = f"https://app.example.com/oauth?code={code}&instanceId=inst-other"
        result = run(config, "--instance", INSTANCE, stdin=url)
        assert result.exit_code == 2
        assert "for instance 'inst-other', not --instance 'inst-legacy'" in result.stderr
        assert code not in result.output
        assert emulator.access_requests == 0

    def test_close_window_url_prints_where_wix_expects_the_browser(
        self, config: Path, emulator: WixEmulator
    ) -> None:
        result = run(
            config,
            "--instance",
            INSTANCE,
            "--close-window-url",
            stdin=emulator.authorization_code(INSTANCE),
        )
        assert result.exit_code == 0, result.output
        prefix = "https://www.wix.com/installer/close-window?access_token="
        assert result.stdout.startswith(prefix)
        access_token = result.stdout.strip().removeprefix(prefix)
        assert access_token in emulator.issued_tokens_for(INSTANCE)

    @pytest.mark.parametrize(
        ("stdin", "message"),
        [
            ("", "no authorization code on standard input"),
            ("  \n", "no authorization code on standard input"),
            ("two words", "found whitespace inside it"),
            ("https://app.example.com/oauth?instanceId=x", "carries no code"),
        ],
    )
    def test_no_usable_code_is_a_usage_error(
        self, config: Path, emulator: WixEmulator, stdin: str, message: str
    ) -> None:
        result = run(config, "--instance", INSTANCE, stdin=stdin)
        assert result.exit_code == 2
        assert message in result.stderr
        assert emulator.access_requests == 0

    def test_the_code_is_never_taken_from_argv(self, config: Path, emulator: WixEmulator) -> None:
        code = emulator.authorization_code(INSTANCE)
        result = run(config, "--instance", INSTANCE, code)
        assert result.exit_code == 2
        assert emulator.access_requests == 0

    def test_a_refused_code_is_one_line_exit_1_without_the_code(
        self, config: Path, emulator: WixEmulator
    ) -> None:
        code = emulator.authorization_code(INSTANCE)
        assert run(config, "--instance", INSTANCE, stdin=code).exit_code == 0
        again = run(config, "--instance", INSTANCE, stdin=code)
        assert again.exit_code == 1
        lines = again.stderr.splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("tokenbroker: error: Request an Access Token: Wix answered 400")
        assert code not in again.output


class TestApps:
    def test_with_several_apps_the_legacy_one_is_chosen_with_app(
        self, tmp_path: Path, emulator: WixEmulator
    ) -> None:
        config = write_config(tmp_path / "two.toml", emulator, with_wix_app=True)
        code = emulator.authorization_code(INSTANCE)
        unnamed = run(config, "--instance", INSTANCE, stdin=code)
        assert unnamed.exit_code == 2
        assert "apps: legacy, shop" in unnamed.stderr
        named = run(config, "--instance", INSTANCE, "--app", "legacy", stdin=code)
        assert named.exit_code == 0, named.output
        assert emulator.live_refresh_tokens(INSTANCE)

    def test_an_app_on_another_provider_has_no_code_to_exchange(
        self, tmp_path: Path, emulator: WixEmulator
    ) -> None:
        config = write_config(tmp_path / "two.toml", emulator, with_wix_app=True)
        result = run(config, "--instance", INSTANCE, "--app", "shop", stdin="some-code")
        assert result.exit_code == 2
        assert "uses the 'wix' provider" in result.stderr
        assert emulator.access_requests == 0
