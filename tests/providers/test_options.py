"""The oauth2 provider's options: defaults, and a one-line ConfigError for each bad one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tokenbroker import ConfigError
from tokenbroker.providers import OAuth2Options, OAuth2Provider

from .conftest import APP_ID, CLIENT_ID, SECRET, TOKEN_URL, config


def options(app_secret: str = "", **given: Any) -> OAuth2Options:
    return OAuth2Options.from_config(config(given, app_secret=app_secret))


def refused(match: str, app_secret: str = "", **given: Any) -> ConfigError:
    with pytest.raises(ConfigError, match=match) as raised:
        options(app_secret, **given)
    message = str(raised.value)
    assert "\n" not in message
    assert SECRET not in message
    return raised.value


class TestDefaults:
    def test_only_the_token_url_is_needed_beside_the_app_credentials(self) -> None:
        got = options(app_secret="app-secret", token_url=TOKEN_URL)
        assert got.client_id == APP_ID
        assert got.client_secret.reveal() == "app-secret"
        assert got.auth_method == "client_secret_basic"
        assert got.default_lifetime == 3600
        assert (got.scope, got.audience, got.tenant_param, got.extra) == (None, None, None, ())
        assert got.request_id_header == "x-request-id"
        assert (got.timeout, got.max_attempts) == (10.0, 3)

    def test_options_win_over_the_app_credentials(self) -> None:
        got = options(
            app_secret="app-secret", token_url=TOKEN_URL, client_id=CLIENT_ID, client_secret=SECRET
        )
        assert (got.client_id, got.client_secret.reveal()) == (CLIENT_ID, SECRET)

    def test_the_secret_is_in_no_repr(self) -> None:
        got = options(token_url=TOKEN_URL, client_secret=SECRET)
        provider = OAuth2Provider(config({"token_url": TOKEN_URL, "client_secret": SECRET}))
        assert SECRET not in repr(got)
        assert SECRET not in repr(provider)

    def test_scope_from_a_list_or_a_string_is_one_space_separated_string(self) -> None:
        assert (
            options(token_url=TOKEN_URL, client_secret=SECRET, scope=["a", "b:c"]).scope == "a b:c"
        )
        assert options(token_url=TOKEN_URL, client_secret=SECRET, scope="a  b a").scope == "a b"

    def test_extra_numbers_are_sent_as_written(self) -> None:
        got = options(token_url=TOKEN_URL, client_secret=SECRET, extra={"resource": "r", "v": 2})
        assert got.extra == (("resource", "r"), ("v", "2"))

    def test_the_secret_file_is_read_and_stripped(self, tmp_path: Path) -> None:
        path = tmp_path / "secret"
        path.write_text(f"  {SECRET}\n", encoding="utf-8")
        got = options(token_url=TOKEN_URL, client_secret_file=str(path))
        assert got.client_secret.reveal() == SECRET

    def test_http_is_allowed_on_loopback(self) -> None:
        for url in ("http://127.0.0.1:8080/t", "http://localhost/t", "http://[::1]:9/t"):
            assert options(token_url=url, client_secret=SECRET).token_url == url


class TestRefusals:
    def test_an_unknown_option_is_named(self) -> None:
        refused(
            r"unknown oauth2 provider option 'scopes' \(known: audience,",
            scopes="a",
            token_url=TOKEN_URL,
            client_secret=SECRET,
        )

    def test_the_token_url_is_required(self) -> None:
        refused("'token_url' is required", client_secret=SECRET)

    @pytest.mark.parametrize(
        ("url", "why"),
        [
            ("http://auth.example.com/token", "must use https"),
            ("ftp://auth.example.com/token", "absolute http"),
            ("/oauth/token", "absolute http"),
            ("https://user:pw@auth.example.com/token", "must not carry credentials"),
            ("https://auth.example.com/token#x", "fragment"),
            ("", "is empty"),
        ],
    )
    def test_a_bad_token_url(self, url: str, why: str) -> None:
        refused(f"'token_url' .*{why}", token_url=url, client_secret=SECRET)

    def test_no_secret_anywhere(self) -> None:
        refused("has no client secret", token_url=TOKEN_URL)

    def test_both_secret_and_secret_file(self, tmp_path: Path) -> None:
        refused(
            "exclusive",
            token_url=TOKEN_URL,
            client_secret=SECRET,
            client_secret_file=str(tmp_path / "s"),
        )

    def test_a_missing_secret_file(self, tmp_path: Path) -> None:
        refused(
            r"'client_secret_file' cannot be read .*nope",
            token_url=TOKEN_URL,
            client_secret_file=str(tmp_path / "nope"),
        )

    def test_an_empty_secret_file(self, tmp_path: Path) -> None:
        (tmp_path / "s").write_text("\n", encoding="utf-8")
        refused("names an empty file", token_url=TOKEN_URL, client_secret_file=str(tmp_path / "s"))

    def test_a_secret_with_a_line_break_is_refused_without_quoting_it(self) -> None:
        refused(
            "'client_secret' contains control characters",
            token_url=TOKEN_URL,
            client_secret=SECRET + "\n",
        )

    @pytest.mark.parametrize("field", ["grant_type", "client_id", "client_secret", "scope"])
    def test_extra_may_not_replace_what_the_provider_sets(self, field: str) -> None:
        refused(
            f"may not set the form field '{field}'",
            token_url=TOKEN_URL,
            client_secret=SECRET,
            extra={field: "x"},
        )

    def test_extra_may_not_replace_the_tenant_field(self) -> None:
        refused(
            "may not set the form field 'tenant'",
            token_url=TOKEN_URL,
            client_secret=SECRET,
            tenant_param="tenant",
            extra={"tenant": "x"},
        )

    @pytest.mark.parametrize("value", [True, None, ["a"], {"n": 1}, float("inf")])
    def test_extra_values_are_strings_or_numbers(self, value: object) -> None:
        refused("'extra'", token_url=TOKEN_URL, client_secret=SECRET, extra={"x": value})

    def test_extra_must_be_a_table(self) -> None:
        refused("'extra' must be a table", token_url=TOKEN_URL, client_secret=SECRET, extra="a=b")

    def test_an_unknown_auth_method(self) -> None:
        refused(
            "'auth_method' must be one of client_secret_basic, client_secret_post",
            token_url=TOKEN_URL,
            client_secret=SECRET,
            auth_method="private_key_jwt",
        )

    @pytest.mark.parametrize("field", ["client_id", "grant_type", "has space", ""])
    def test_a_bad_tenant_param(self, field: str) -> None:
        refused("'tenant_param'", token_url=TOKEN_URL, client_secret=SECRET, tenant_param=field)

    @pytest.mark.parametrize("value", [0, -1, float("nan"), True, "3600", 10**12])
    def test_a_bad_default_lifetime(self, value: object) -> None:
        refused(
            "'default_lifetime'", token_url=TOKEN_URL, client_secret=SECRET, default_lifetime=value
        )

    @pytest.mark.parametrize("value", [0, 11, 2.0, True])
    def test_bad_max_attempts(self, value: object) -> None:
        refused("'max_attempts'", token_url=TOKEN_URL, client_secret=SECRET, max_attempts=value)

    @pytest.mark.parametrize("value", [0, -1, 301, "10"])
    def test_a_bad_timeout(self, value: object) -> None:
        refused("'timeout'", token_url=TOKEN_URL, client_secret=SECRET, timeout=value)

    @pytest.mark.parametrize("value", ["a scope", 'x"y', "a\\b"])
    def test_a_scope_token_outside_rfc_6749_nqchar(self, value: str) -> None:
        refused("'scope'", token_url=TOKEN_URL, client_secret=SECRET, scope=[value])

    def test_a_bad_request_id_header(self) -> None:
        refused(
            "'request_id_header'",
            token_url=TOKEN_URL,
            client_secret=SECRET,
            request_id_header="x id",
        )

    def test_a_client_id_with_control_characters(self) -> None:
        refused(
            "'client_id' contains control characters",
            token_url=TOKEN_URL,
            client_secret=SECRET,
            client_id="a\tb",
        )
