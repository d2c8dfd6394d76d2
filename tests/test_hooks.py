"""Plugin hooks: token events, a real third-party plugin, and docs for every hookspec."""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from tokenbroker import ProviderError, Token, TokenBroker, TokenKey, hookimpl
from tokenbroker.cli import main
from tokenbroker.plugins import hookspecs, plugin_manager, reset_plugins
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.webhooks import make_key_pair, sign_webhook

from .conftest import APP_ID, APP_SECRET, INSTANCE

ROOT = Path(__file__).parents[1]
PRIVATE, PUBLIC = make_key_pair()


@pytest.fixture(autouse=True)
def fresh_plugins() -> Iterator[None]:
    reset_plugins()
    yield
    reset_plugins()


class TokenEvents:
    def __init__(self) -> None:
        self.acquired: list[tuple[TokenKey, str, str]] = []
        self.failed: list[tuple[TokenKey, str]] = []

    def plugin(self) -> object:
        @hookimpl
        def tokenbroker_token_acquired(key: TokenKey, token: Token, source: str) -> None:
            self.acquired.append((key, token.fingerprint, source))

        @hookimpl
        def tokenbroker_token_failed(key: TokenKey, error: BaseException) -> None:
            self.failed.append((key, type(error).__name__))

        return SimpleNamespace(
            tokenbroker_token_acquired=tokenbroker_token_acquired,
            tokenbroker_token_failed=tokenbroker_token_failed,
        )


@pytest.fixture
def token_events() -> TokenEvents:
    events = TokenEvents()
    plugin_manager().register(events.plugin(), name="token-events")
    return events


class TestTokenHooks:
    def test_token_acquired_says_provider_then_store(
        self, token_events: TokenEvents, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        def make() -> TokenBroker:
            return TokenBroker(
                app_id=APP_ID, app_secret=APP_SECRET, store=sqlite_url, api_url=wix_emulator.url
            )

        with make() as first:
            token = first.token(INSTANCE)
            first.token(INSTANCE)  # a near-cache hit: the hot path fires nothing
        with make() as second:  # another process would find it in the store
            second.token(INSTANCE)
        assert [source for _, _, source in token_events.acquired] == ["provider", "store"]
        assert {fp for _, fp, _ in token_events.acquired} == {token.fingerprint}

    def test_token_failed_fires_once_for_a_failed_flight(
        self, token_events: TokenEvents, memory_broker: TokenBroker
    ) -> None:
        with pytest.raises(ProviderError):
            memory_broker.token("never-installed")
        assert token_events.failed == [
            (memory_broker.key("never-installed"), "InstanceNotInstalled")
        ]

    def test_a_raising_token_hook_does_not_break_token_handling(
        self, memory_broker: TokenBroker, caplog: pytest.LogCaptureFixture
    ) -> None:
        @hookimpl
        def tokenbroker_token_acquired(key: TokenKey, token: Token, source: str) -> None:
            raise RuntimeError("observability is down")

        plugin_manager().register(
            SimpleNamespace(tokenbroker_token_acquired=tokenbroker_token_acquired), name="broken"
        )
        with caplog.at_level(logging.ERROR, logger="tokenbroker.plugins"):
            assert memory_broker.token(INSTANCE).access_token
        assert "'broken'" in caplog.text


class TestThirdPartyPlugin:
    """tests/plugins/sample_plugin is installed like any distribution (nox does it)."""

    def test_its_backend_is_found_through_the_entry_point_alone(self) -> None:
        result = CliRunner().invoke(main, ["backends"])
        rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
        assert rows["sample"] == "sample"
        from tokenbroker import store_from_url

        store = store_from_url("sample://x")
        assert type(store).__name__ == "SampleStore"

    def test_it_is_listed_with_its_distribution(self) -> None:
        result = CliRunner().invoke(main, ["plugins"])
        line = next(row for row in result.stdout.splitlines() if row.startswith("sample\t"))
        assert "tokenbroker-sample-plugin 1.0.0" in line
        assert "tokenbroker_sample_plugin" in line

    def test_its_install_hook_is_called_for_a_verified_webhook(
        self, wix_emulator: WixEmulator
    ) -> None:
        import tokenbroker_sample_plugin  # type: ignore[import-not-found]

        with TokenBroker(
            app_id=APP_ID,
            app_secret=APP_SECRET,
            store="sample://",
            api_url=wix_emulator.url,
            public_key=PUBLIC,
        ) as broker:
            body = sign_webhook(
                PRIVATE, event_type="AppInstalled", instance_id="inst-77", data={"appId": APP_ID}
            )
            broker.handle_webhook(body)
        assert ("installed", "inst-77") in tokenbroker_sample_plugin.SEEN

    def test_the_allow_list_can_keep_it_out(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TOKENBROKER_DISABLE_PLUGINS", "sample")
        reset_plugins()
        result = CliRunner().invoke(main, ["backends"])
        assert "sample" not in result.stdout


class TestEveryHookspecIsTestedAndDocumented:
    """A meta-test: adding a hookspec without a test and a docs entry fails here."""

    HOOKS = sorted(
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("tokenbroker_")
    )

    def test_there_are_hookspecs(self) -> None:
        assert "tokenbroker_app_installed" in self.HOOKS

    @pytest.mark.parametrize("hook", HOOKS)
    def test_the_hook_has_an_entry_in_the_hooks_reference(self, hook: str) -> None:
        """docs/hooks.md is generated from the hookspecs (mkdocstrings): the hook's
        docstring is its entry, and the page's member filters must keep it."""
        doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
        assert doc.strip(), f"{hook} has no docstring: the hooks reference is made of it"
        reference = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
        directive = re.search(
            r"^::: tokenbroker\.plugins\.hookspecs[ \t]*\n(?P<options>(?:[ \t]+.*\n?)*)",
            reference,
            re.MULTILINE,
        )
        assert directive, "docs/hooks.md does not render tokenbroker.plugins.hookspecs"
        filters = re.search(r"^\s*filters:\s*\[(?P<list>[^\]]*)\]", directive["options"], re.M)
        patterns = re.findall(r"\"([^\"]*)\"", filters["list"]) if filters else []
        # mkdocstrings' rule: the last filter that matches decides; when none matches,
        # the object is kept unless every filter is an inclusion ("^x", not "!^x").
        kept = {p.startswith("!") for p in patterns} != {False}
        for pattern in patterns:
            if re.search(pattern.removeprefix("!"), hook):
                kept = not pattern.startswith("!")
        assert kept, f"the filters {patterns} of docs/hooks.md leave {hook} out"

    @pytest.mark.parametrize("hook", HOOKS)
    def test_the_hook_has_a_test_that_implements_it(self, hook: str) -> None:
        tests = [
            p
            for p in (ROOT / "tests").rglob("*.py")
            if f"def {hook}(" in p.read_text(encoding="utf-8")
        ]
        assert tests, f"no test implements {hook}"
