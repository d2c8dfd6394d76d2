"""The plugin manager: built-ins through entry points, registration, filtering."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from tokenbroker import ConfigError, hookimpl, store_from_url
from tokenbroker.backends.memory import MemoryStore
from tokenbroker.plugins import backends, loaded_plugins, plugin_manager, providers, reset_plugins
from tokenbroker.plugins.registry import RegisterBackend
from tokenbroker.plugins.resolve import provider_factory

from .workers import worker_env


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TOKENBROKER_PLUGINS", raising=False)
    monkeypatch.delenv("TOKENBROKER_DISABLE_PLUGINS", raising=False)
    reset_plugins()
    yield
    reset_plugins()


def backend_plugin(scheme: str) -> object:
    @hookimpl
    def tokenbroker_register_backends(register: RegisterBackend) -> None:
        register(scheme, lambda url: MemoryStore(url=url), description="test backend")

    return SimpleNamespace(tokenbroker_register_backends=tokenbroker_register_backends)


class TestBuiltins:
    def test_builtins_are_loaded_through_the_entry_point_group(self) -> None:
        found = {p.name: p for p in loaded_plugins()}
        assert found["wix"].distribution == "tokenbroker"
        assert found["builtin_backends"].module == "tokenbroker.plugins.builtin_backends"

    def test_builtin_backends_and_provider_are_registered_by_their_plugins(self) -> None:
        assert backends.entries()["sqlite"].plugin == "builtin_backends"
        assert providers.entries()["wix"].plugin == "wix"


class TestRegistration:
    def test_a_registered_plugin_adds_a_url_scheme(self) -> None:
        plugin_manager().register(backend_plugin("custom"), name="my_plugin")
        store = store_from_url("custom://anything")
        assert store.url == "custom://anything"
        assert backends.entries()["custom"].plugin == "my_plugin"

    def test_two_plugins_claiming_one_scheme_is_a_config_error_naming_both(self) -> None:
        plugin_manager().register(backend_plugin("sqlite"), name="usurper")
        with pytest.raises(
            ConfigError, match=r"both plugin 'builtin_backends' and plugin 'usurper'"
        ):
            backends.entries()

    def test_a_driver_suffix_falls_back_to_the_base_scheme(self) -> None:
        plugin_manager().register(backend_plugin("custom"), name="my_plugin")
        assert store_from_url("custom+driver://x").url == "custom+driver://x"


class TestProviders:
    def test_a_plugin_can_register_a_provider_used_by_name(self) -> None:
        from tokenbroker import ProviderConfig, TokenBroker
        from tokenbroker.plugins.registry import RegisterProvider
        from tokenbroker.wix.provider import WixProvider

        made: list[ProviderConfig] = []

        def factory(config: ProviderConfig) -> WixProvider:
            made.append(config)
            return WixProvider(config)

        @hookimpl
        def tokenbroker_register_providers(register: RegisterProvider) -> None:
            register("wix-eu", factory, description="Wix through another gateway")

        plugin_manager().register(
            SimpleNamespace(tokenbroker_register_providers=tokenbroker_register_providers),
            name="gateway",
        )
        with TokenBroker(app_id="a", app_secret="s", store="memory://", provider="wix-eu"):
            pass
        assert [c.app_id for c in made] == ["a"]
        assert providers.entries()["wix-eu"].plugin == "gateway"


class TestFiltering:
    def test_the_allow_list_loads_only_named_plugins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TOKENBROKER_PLUGINS", "wix")
        reset_plugins()
        assert [p.name for p in loaded_plugins()] == ["wix"]
        with pytest.raises(ConfigError, match="registered schemes: none"):
            store_from_url("memory://")

    def test_disabled_plugins_are_not_loaded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TOKENBROKER_DISABLE_PLUGINS", "wix, other")
        reset_plugins()
        assert "wix" not in {p.name for p in loaded_plugins()}
        with pytest.raises(ConfigError, match="unknown token provider 'wix'"):
            provider_factory("wix")


BROKEN_MODULE = "tokenbroker_broken_plugin_for_tests"


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution on ``sys.path`` whose ``tokenbroker`` entry point raises on import.

    ``importlib.metadata`` finds distributions as ``*.dist-info`` directories on
    ``sys.path``: this is what ``pip install`` of a broken plugin leaves behind.
    """
    site = tmp_path / "site"
    info = site / "tokenbroker_broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tokenbroker-broken-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[tokenbroker]\nbroken = {BROKEN_MODULE}\n")
    (site / f"{BROKEN_MODULE}.py").write_text(
        'raise RuntimeError("this plugin is broken on purpose\\nand says more on a second line")\n'
    )
    monkeypatch.syspath_prepend(str(site))
    reset_plugins()
    return site


class TestABrokenPlugin:
    def test_is_one_warning_line_without_a_traceback(
        self, broken_plugin: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="tokenbroker.plugins")
        loaded_plugins()
        records = [r for r in caplog.records if r.name == "tokenbroker.plugins"]
        assert [r.levelno for r in records] == [logging.WARNING]
        assert records[0].exc_info is None
        message = records[0].getMessage()
        assert "\n" not in message
        assert "'broken'" in message
        assert "RuntimeError: this plugin is broken on purpose" in message

    def test_is_listed_with_its_error_and_the_others_still_load(self, broken_plugin: Path) -> None:
        found = {p.name: p for p in loaded_plugins()}
        assert found["broken"].error == "RuntimeError: this plugin is broken on purpose"
        assert found["broken"].distribution == "tokenbroker-broken-plugin"
        assert found["wix"].error is None
        assert backends.entries()["sqlite"].plugin == "builtin_backends"

    def test_the_plugins_command_shows_it_failed_and_exits_1(self, broken_plugin: Path) -> None:
        from tokenbroker.cli import main

        result = CliRunner().invoke(main, ["plugins"], catch_exceptions=False)
        assert result.exit_code == 1
        (line,) = [line for line in result.stdout.splitlines() if line.startswith("broken\t")]
        assert line.endswith("FAILED: RuntimeError: this plugin is broken on purpose")

    def test_the_plugins_command_exits_0_when_all_load(self) -> None:
        from tokenbroker.cli import main

        assert CliRunner().invoke(main, ["plugins"], catch_exceptions=False).exit_code == 0

    def test_another_command_prints_one_warning_line_and_still_works(
        self, broken_plugin: Path
    ) -> None:
        env = worker_env()
        env["PYTHONPATH"] = f"{broken_plugin}:{env['PYTHONPATH']}"
        done = subprocess.run(
            [sys.executable, "-m", "tokenbroker.cli", "backends"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "sqlite" in done.stdout
        (line,) = done.stderr.splitlines()
        assert line.startswith("could not load tokenbroker plugin 'broken'")
        assert line.endswith("RuntimeError: this plugin is broken on purpose")
