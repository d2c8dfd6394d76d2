"""Extending the assumed "not installed" rules: ``NotInstalledRules``, the
``TOKENBROKER_WIX_NOT_INSTALLED`` setting and ``ProviderConfig.not_installed``."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from tokenbroker import (
    ConfigError,
    InstanceNotInstalled,
    InvalidCredentials,
    ManualClock,
    ProviderConfig,
    ProviderError,
    Secret,
    TokenKey,
)
from tokenbroker.settings import Settings
from tokenbroker.wix import RetryBudget, WixProvider
from tokenbroker.wix.errors import DEFAULT_RULES, NotInstalledRules

KEY = TokenKey("wix", "app-1", "inst-1")
ENV = {"TOKENBROKER_APP_ID": "app-1", "TOKENBROKER_APP_SECRET": "s3cret"}


def provider_answering(
    answer: httpx2.Response,
    *,
    entries: tuple[str, ...] = (),
    rules: NotInstalledRules | None = None,
) -> WixProvider:
    config = ProviderConfig(
        app_id="app-1",
        app_secret=Secret("s3cret"),
        api_url="https://wix.example",
        clock=ManualClock(start=1_800_000_000.0),
        transport=httpx2.MockTransport(lambda request: answer),
        not_installed=entries,
    )
    return WixProvider(config, retry=RetryBudget(max_attempts=1), not_installed=rules)


def raised(provider: WixProvider) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        provider.acquire(KEY)
    provider.close()
    return info.value


def wix(status: int, message: str, code: str = "SOMETHING") -> httpx2.Response:
    return httpx2.Response(
        status, json={"message": message, "details": {"applicationError": {"code": code}}}
    )


GONE = wix(400, "Site is gone", "APP_GONE")
DELETED = wix(403, "The site was DELETED by its owner")


class TestTheSetting:
    def test_unset_or_blank_adds_nothing(self) -> None:
        assert Settings.from_env(ENV).wix_not_installed == ()
        blank = Settings.from_env(ENV | {"TOKENBROKER_WIX_NOT_INSTALLED": "  "})
        assert blank.wix_not_installed == ()

    def test_codes_and_phrases_are_read_and_normalised(self) -> None:
        value = " app_gone ,text:Site   Was Deleted, invalid_grant,APP_GONE"
        settings = Settings.from_env(ENV | {"TOKENBROKER_WIX_NOT_INSTALLED": value})
        assert settings.wix_not_installed == ("APP_GONE", "text:site was deleted", "INVALID_GRANT")

    @pytest.mark.parametrize(
        ("value", "said"),
        [
            ("APP_GONE,,X", "an entry is empty"),
            ("APP_GONE,", "an entry is empty"),
            ("APP GONE", "'APP GONE' is neither an error code"),
            ("1ABC", "'1ABC' is neither"),
            ("text:", "is neither"),
            ("text:   ", "is neither"),
            ("text:" + "x" * 101, "1 to 100 characters"),
            ("C" * 101, "at most 100"),
        ],
    )
    def test_a_bad_entry_is_a_one_line_config_error(self, value: str, said: str) -> None:
        with pytest.raises(ConfigError, match=said) as info:
            Settings.from_env(ENV | {"TOKENBROKER_WIX_NOT_INSTALLED": value})
        message = str(info.value)
        assert message.startswith("TOKENBROKER_WIX_NOT_INSTALLED: ")
        assert "\n" not in message

    def test_the_settings_entries_reach_the_provider_through_its_config(self) -> None:
        value = "APP_GONE,text:site was deleted"
        settings = Settings.from_env(ENV | {"TOKENBROKER_WIX_NOT_INSTALLED": value})
        for answer in (GONE, DELETED):
            provider = provider_answering(answer, entries=settings.wix_not_installed)
            assert type(raised(provider)) is InstanceNotInstalled


class TestProviderConfig:
    def test_without_entries_the_extra_signs_mean_nothing(self) -> None:
        assert type(raised(provider_answering(GONE))) is ProviderError
        assert type(raised(provider_answering(DELETED))) is InvalidCredentials

    def test_entries_add_to_the_built_in_rules(self) -> None:
        provider = provider_answering(
            wix(400, "x", "APP_NOT_INSTALLED"), entries=("APP_GONE", "text:site was deleted")
        )
        assert type(raised(provider)) is InstanceNotInstalled

    @pytest.mark.parametrize("entries", [("bad code",), ("",), ("text:",)])
    def test_a_bad_entry_fails_when_the_provider_is_built(self, entries: tuple[str, ...]) -> None:
        with pytest.raises(ConfigError, match=r"^ProviderConfig\.not_installed: "):
            provider_answering(GONE, entries=entries)

    def test_a_lone_string_is_refused_not_read_letter_by_letter(self) -> None:
        loose: Any = "APP_GONE"
        with pytest.raises(ConfigError, match="not one string"):
            provider_answering(GONE, entries=loose)

    def test_invalid_client_stays_invalid_credentials_whatever_is_added(self) -> None:
        answer = httpx2.Response(
            401, json={"error": "invalid_client", "error_description": "site was deleted"}
        )
        provider = provider_answering(answer, entries=("INVALID_CLIENT", "text:site was deleted"))
        assert type(raised(provider)) is InvalidCredentials


class TestNotInstalledRules:
    def test_the_defaults(self) -> None:
        assert NotInstalledRules() == DEFAULT_RULES
        assert "APP_NOT_INSTALLED" in DEFAULT_RULES.codes
        assert DEFAULT_RULES.text_matches(["App is not installed on this instance"])
        assert not DEFAULT_RULES.text_matches(["The app is installed"])

    def test_extend_returns_new_rules_and_leaves_these_alone(self) -> None:
        more = DEFAULT_RULES.extend(codes=["app_gone"], phrases=["Site  Was\tDeleted"])
        assert more.code_matches("APP_GONE")
        assert more.code_matches("app_gone")
        assert more.text_matches(["the site was\n deleted"])
        assert more.code_matches("APP_NOT_INSTALLED")
        assert not DEFAULT_RULES.code_matches("APP_GONE")
        assert not DEFAULT_RULES.text_matches(["the site was deleted"])

    def test_a_phrase_matches_whole_words_only(self) -> None:
        rules = NotInstalledRules(codes=[], phrases=["installed"])
        assert rules.text_matches(["not installed"])
        assert not rules.text_matches(["uninstalled"])
        assert not rules.text_matches(["installedness"])

    def test_no_phrases_match_nothing(self) -> None:
        rules = NotInstalledRules(phrases=[])
        assert not rules.text_matches(["App is not installed", ""])

    def test_phrases_are_literal_text_not_patterns(self) -> None:
        rules = NotInstalledRules(phrases=["gone (for good)"])
        assert rules.text_matches(["the app is GONE (for good)."])
        assert not rules.text_matches(["gone for good"])

    @pytest.mark.parametrize(
        "options",
        [{"codes": ["has space"]}, {"codes": "APP_GONE"}, {"phrases": [""]}, {"phrases": [3]}],
    )
    def test_bad_codes_or_phrases_are_config_errors(self, options: dict[str, Any]) -> None:
        with pytest.raises(ConfigError, match="NotInstalledRules"):
            DEFAULT_RULES.extend(**options)

    def test_the_provider_takes_rules_programmatically(self) -> None:
        rules = NotInstalledRules(codes=["APP_GONE"], phrases=[])
        assert type(raised(provider_answering(GONE, rules=rules))) is InstanceNotInstalled
        # the built-in phrase was dropped from these rules
        text = wix(400, "App is not installed on this instance")
        assert type(raised(provider_answering(text, rules=rules))) is ProviderError
        # and config entries still extend them
        both = provider_answering(DELETED, rules=rules, entries=("text:site was deleted",))
        assert type(raised(both)) is InstanceNotInstalled
