"""``tokenbroker token-info``: the token comes from standard input, never argv."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from tokenbroker.cli import main
from tokenbroker.testing.emulator import TOKEN_INFO_ENDPOINT, WixEmulator

from ..conftest import APP_ID, INSTANCE


def token_info(env: dict[str, str], stdin: str | None, *args: str) -> Result:
    return CliRunner().invoke(
        main,
        ["token-info", *args],
        input=stdin,
        env=env,
        catch_exceptions=False,
        prog_name="tokenbroker",
    )


class TestTokenInfo:
    def test_an_active_token_read_from_stdin(
        self, env: dict[str, str], wix_emulator: WixEmulator
    ) -> None:
        user = wix_emulator.issue_token(INSTANCE)
        result = token_info(env, user + "\n")
        assert result.exit_code == 0, result.stderr
        lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
        assert lines["active"].strip() == "yes"
        assert lines["instance"].strip() == INSTANCE
        assert lines["app"].strip() == f"{APP_ID} (this app)"
        assert lines["subject"].strip().startswith("USER ")
        assert user not in result.output
        assert wix_emulator.calls[TOKEN_INFO_ENDPOINT] == 1

    def test_json_for_scripts(self, env: dict[str, str], wix_emulator: WixEmulator) -> None:
        other = wix_emulator.issue_token(INSTANCE, client_id="another-app")
        result = token_info(env, other, "--json")
        assert result.exit_code == 0
        answer = json.loads(result.stdout)
        assert answer["active"] is True
        assert answer["client_id"] == "another-app"
        assert answer["this_app"] is False
        assert answer["instance_id"] == INSTANCE

    def test_an_inactive_token_exits_1(
        self, env: dict[str, str], wix_emulator: WixEmulator
    ) -> None:
        user = wix_emulator.issue_token(INSTANCE)
        wix_emulator.revoke(user)
        result = token_info(env, user, "--json")
        assert result.exit_code == 1
        assert json.loads(result.stdout)["active"] is False
        plain = token_info(env, user)
        assert (plain.exit_code, plain.stdout.split()) == (1, ["active:", "no"])

    def test_a_refusal_by_wix_is_one_line_and_exit_1(
        self, env: dict[str, str], wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.fail_next(400, endpoint=TOKEN_INFO_ENDPOINT)
        result = token_info(env, "OauthNG.JWS.whatever")
        assert result.exit_code == 1
        assert result.stderr == "tokenbroker: error: identity rejected: token refused by Wix\n"

    @pytest.mark.parametrize(
        ("stdin", "message"),
        [
            ("", "no token on standard input"),
            ("  \n", "no token on standard input"),
            ("two tokens\n", "found whitespace inside it"),
            ("x" * 20_000, "over 16384 characters"),
        ],
    )
    def test_no_usable_token_is_a_usage_error(
        self, env: dict[str, str], wix_emulator: WixEmulator, stdin: str, message: str
    ) -> None:
        result = token_info(env, stdin)
        assert result.exit_code == 2
        assert message in result.stderr
        assert wix_emulator.calls[TOKEN_INFO_ENDPOINT] == 0

    def test_the_token_is_no_argument(self, env: dict[str, str], wix_emulator: WixEmulator) -> None:
        result = token_info(env, "", "OauthNG.JWS.on-the-command-line")
        assert result.exit_code == 2
        assert "unexpected extra argument" in result.stderr
        assert wix_emulator.calls[TOKEN_INFO_ENDPOINT] == 0
