"""The CLI with many apps: ``--config``, the ``--app`` rules, ``tokenbroker apps``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from tokenbroker.cli import main
from tokenbroker.cli.app import configured_broker, configured_brokers, scrub, state_of
from tokenbroker.testing.emulator import WixEmulator

from ..conftest import APP_ID, APP_SECRET

SHOP_ID, SHOP_SECRET = "cli-shop-app", "cli-shop-secret-0123456789"
CRM_ID, CRM_SECRET = "cli-crm-app", "cli-crm-secret-0123456789"


@pytest.fixture
def shop_wix() -> Iterator[WixEmulator]:
    with WixEmulator(SHOP_ID, SHOP_SECRET) as emulator:
        emulator.install("inst-1")
        yield emulator


@pytest.fixture
def crm_wix() -> Iterator[WixEmulator]:
    with WixEmulator(CRM_ID, CRM_SECRET) as emulator:
        emulator.install("inst-1")
        yield emulator


@pytest.fixture
def config_file(tmp_path: Path, shop_wix: WixEmulator, crm_wix: WixEmulator) -> Path:
    (tmp_path / "crm-secret").write_text(CRM_SECRET)
    path = tmp_path / "tokenbroker.toml"
    path.write_text(
        f'store = "sqlite:///{tmp_path / "tokens.db"}"\n\n'
        f'[apps.shop]\napp_id = "{SHOP_ID}"\napp_secret = "{SHOP_SECRET}"\n'
        f'api_url = "{shop_wix.url}"\n\n'
        f'[apps.crm]\napp_id = "{CRM_ID}"\napp_secret_file = "crm-secret"\n'
        f'api_url = "{crm_wix.url}"\n'
    )
    return path


# the single-app variables, set too: a config file must win over them
ENV = {
    "TOKENBROKER_APP_ID": APP_ID,
    "TOKENBROKER_APP_SECRET": APP_SECRET,
    "TOKENBROKER_STORE": "memory://",
    "TOKENBROKER_CONFIG": None,
}


def cli(*args: str, stdin: str | None = None, **env: str | None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, env={**ENV, **env})


def with_config(config_file: Path, *args: str, **env: str | None) -> Result:
    return cli("--config", str(config_file), *args, **env)


class TestTheAppRules:
    def test_several_apps_without_app_is_a_usage_error_listing_them(
        self, config_file: Path
    ) -> None:
        for args in (
            ["token", "inst-1"],
            ["finish-setup", "inst-1"],
            ["token-info"],
            ["installations", "list"],
            ["installations", "add", "inst-1"],
            ["doctor", "--instance", "inst-1"],
        ):
            result = with_config(config_file, *args)
            assert result.exit_code == 2, (args, result.output)
            assert "2 apps are configured: choose one with --app NAME (apps: shop, crm)" in (
                result.stderr
            ), args

    def test_an_unknown_app_is_a_usage_error_listing_them(self, config_file: Path) -> None:
        for args in (["token", "inst-1"], ["installations", "list"], ["refresh"], ["db", "status"]):
            result = with_config(config_file, *args, "--app", "nope")
            assert result.exit_code == 2, (args, result.output)
            assert "unknown app 'nope' for --app (apps: shop, crm)" in result.stderr, args

    def test_the_app_named_is_the_one_used(
        self, config_file: Path, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        result = with_config(config_file, "token", "inst-1", "--app", "crm")
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() in crm_wix.issued_tokens_for("inst-1")
        assert shop_wix.token_requests == 0

    def test_one_app_may_be_left_out_and_the_environment_s_is_default(
        self, wix_emulator: WixEmulator
    ) -> None:
        url = wix_emulator.url
        assert cli("token", "inst-1", TOKENBROKER_API_URL=url).exit_code == 0
        assert cli("token", "inst-1", "--app", "default", TOKENBROKER_API_URL=url).exit_code == 0
        result = cli("token", "inst-1", "--app", "shop", TOKENBROKER_API_URL=url)
        assert result.exit_code == 2
        assert "unknown app 'shop' for --app (apps: default)" in result.stderr

    def test_tokenbroker_config_names_the_file(self, config_file: Path) -> None:
        result = cli("apps", TOKENBROKER_CONFIG=str(config_file))
        assert result.exit_code == 0, result.output
        assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["shop", "crm"]

    def test_a_bad_config_file_is_one_line_naming_file_and_key(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.toml"
        path.write_text('[apps.shop]\napp_id = "x"\napp_secret_file = "missing"\n')
        result = cli("--config", str(path), "token", "inst-1")
        assert result.exit_code == 2
        assert result.stderr == (
            f"tokenbroker: error: {path}: apps.shop.app_secret_file: cannot read 'missing': "
            "No such file or directory\n"
        )
        missing = cli("--config", str(tmp_path / "none.toml"), "apps")
        assert missing.exit_code == 2
        assert "none.toml: cannot read the config file" in missing.stderr
        assert cli("--config", "", "apps").exit_code == 2


class TestApps:
    def test_lists_name_app_id_provider_and_api_url_never_a_secret(
        self, config_file: Path, crm_wix: WixEmulator
    ) -> None:
        result = with_config(config_file, "apps", "--json")
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert rows[1] == {
            "name": "crm",
            "app_id": CRM_ID,
            "provider": "wix",
            "api_url": crm_wix.url,
        }
        assert [row["name"] for row in rows] == ["shop", "crm"]
        text = with_config(config_file, "apps")
        for shown in (result.stdout, text.stdout):
            assert SHOP_SECRET not in shown
            assert CRM_SECRET not in shown

    def test_the_environment_s_single_app(self) -> None:
        result = cli("apps")
        assert result.stdout == f"default\t{APP_ID}\twix\thttps://www.wixapis.com\n"


class TestCommands:
    def test_installations_are_per_app(self, config_file: Path) -> None:
        added = with_config(config_file, "installations", "add", "--app", "crm", "inst-9")
        assert added.exit_code == 0, added.output
        crm = with_config(config_file, "installations", "list", "--app", "crm", "--json")
        shop = with_config(config_file, "installations", "list", "--app", "shop", "--json")
        assert [row["instance_id"] for row in json.loads(crm.stdout)] == ["inst-9"]
        assert json.loads(shop.stdout) == []

    def test_refresh_without_app_refreshes_every_app_with_a_line_each(
        self, config_file: Path, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        with_config(config_file, "installations", "add", "--app", "shop", "inst-1")
        with_config(config_file, "installations", "add", "--app", "crm", "inst-1")
        result = with_config(config_file, "refresh", "--no-progress")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert [line.split(":")[0] for line in lines] == ["shop", "crm"]
        assert all("1 refreshed" in line for line in lines)
        assert (shop_wix.token_requests, crm_wix.token_requests) == (1, 1)

    def test_refresh_exits_1_naming_the_app_that_failed(
        self, config_file: Path, crm_wix: WixEmulator
    ) -> None:
        with_config(config_file, "installations", "add", "--app", "shop", "inst-1")
        with_config(config_file, "installations", "add", "--app", "crm", "never-installed")
        result = with_config(config_file, "refresh", "--no-progress")
        assert result.exit_code == 1
        assert "shop: 1 installation(s)" in result.stdout
        assert "crm: failed never-installed: " in result.stderr

    def test_refresh_json_is_a_line_an_app_with_counts_and_reasons(
        self, config_file: Path, crm_wix: WixEmulator
    ) -> None:
        with_config(config_file, "installations", "add", "--app", "shop", "inst-1")
        with_config(config_file, "installations", "add", "--app", "crm", "never-installed")
        result = with_config(config_file, "refresh", "--no-progress", "--json")
        assert result.exit_code == 1
        shop, crm = (json.loads(line) for line in result.stdout.splitlines())
        assert (shop["app"], shop["total"], shop["refreshed"], shop["failed"]) == (
            "shop",
            1,
            1,
            [],
        )
        assert crm["app"] == "crm"
        assert [row["instance_id"] for row in crm["failed"]] == ["never-installed"]
        assert crm["failed"][0]["reason"]
        assert result.stderr == ""

    def test_refresh_json_of_one_app_names_it(self, config_file: Path) -> None:
        with_config(config_file, "installations", "add", "--app", "shop", "inst-1")
        result = with_config(config_file, "refresh", "--app", "shop", "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert (report["app"], report["refreshed"], report["error"]) == ("shop", 1, None)
        again = json.loads(with_config(config_file, "refresh", "--app", "shop", "--json").stdout)
        assert (again["refreshed"], again["fresh"]) == (0, 1)

    def test_refresh_with_progress_shows_each_app(self, config_file: Path) -> None:
        with_config(config_file, "installations", "add", "--app", "shop", "inst-1")
        result = with_config(config_file, "refresh", "--progress")
        assert result.exit_code == 0, result.output
        assert "shop:" in result.stdout
        assert "crm:" in result.stdout

    def test_finish_setup_goes_to_the_app_named(
        self, config_file: Path, shop_wix: WixEmulator, crm_wix: WixEmulator
    ) -> None:
        result = with_config(config_file, "finish-setup", "inst-1", "--app", "shop")
        assert result.exit_code == 0, result.output
        assert [event for _, event in shop_wix.bi_events] == ["APP_FINISHED_CONFIGURATION"]
        assert crm_wix.bi_events == []

    def test_token_info_asks_the_app_named(self, config_file: Path, crm_wix: WixEmulator) -> None:
        token = with_config(config_file, "token", "inst-1", "--app", "crm").stdout.strip()
        result = with_config(config_file, "token-info", "--app", "crm", "--json", stdin=token)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["this_app"] is True

    def test_doctor_checks_every_app(self, config_file: Path) -> None:
        result = with_config(config_file, "doctor")
        assert result.exit_code == 0, result.output
        assert f"✓ settings: {config_file}: 2 app(s): shop ({SHOP_ID}, wix), crm" in result.stdout
        assert "✓ webhooks shop: off (apps.shop: no public_key)" in result.stdout
        assert "✓ webhooks crm:" in result.stdout
        one = with_config(config_file, "doctor", "--app", "crm", "--instance", "inst-1")
        assert one.exit_code == 0, one.output
        assert "✓ token: inst-1" in one.stdout
        assert "webhooks shop" not in one.stdout

    def test_db_works_on_the_shared_store(self, config_file: Path) -> None:
        result = with_config(config_file, "db", "upgrade")
        assert result.exit_code == 0, result.output
        status = with_config(config_file, "db", "status", "--app", "crm")
        assert status.exit_code == 0, status.output
        assert "schema: version" in status.stdout


class TestHelpers:
    def test_configured_brokers_and_configured_broker(self, config_file: Path) -> None:
        ctx = click.Context(main)
        state_of(ctx).config_path = str(config_file)
        with configured_brokers(ctx) as brokers:
            assert brokers.names == ("shop", "crm")
        with configured_broker(ctx, "crm") as broker:
            assert broker.app_id == CRM_ID
        with pytest.raises(click.UsageError, match=r"choose one with --app NAME"):
            configured_broker(ctx, None)

    def test_every_secret_of_the_config_is_scrubbed(self, config_file: Path) -> None:
        ctx = click.Context(main)
        state_of(ctx).config_path = str(config_file)
        configured_brokers(ctx).close()
        assert scrub(f"refused {CRM_SECRET} and {SHOP_SECRET}") == "refused *** and ***"
