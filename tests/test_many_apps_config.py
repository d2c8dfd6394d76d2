"""The config file (``tokenbroker.config``): what it accepts, and the one line that
refuses each mistake, naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenbroker import AppConfig, Config, ConfigError, Secret, load_config, resolve_config
from tokenbroker.config import UnknownApp
from tokenbroker.testing.webhooks import make_key_pair

SECRET = "shop-secret-value-0123456789"
_, PUBLIC = make_key_pair()


def write(tmp_path: Path, text: str, name: str = "tokenbroker.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(tmp_path: Path, text: str) -> str:
    """The one-line message ``text`` is refused with (it starts with the file's path)."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    return message[len(f"{path}: ") :]


FULL = f"""
store = "memory://"

[apps.shop]
app_id = "shop-app-id"
app_secret_file = "secrets/shop"
public_key_file = "shop.pem"
auto_finish_setup = true
auth_grace = 5
not_installed = ["APP_GONE", "text:site deleted"]

[apps.crm]
app_id = "crm-app-id"
provider = "oauth2"
api_url = "https://api.example.com/"

[apps.crm.provider_options]
token_url = "https://auth.example.com/token"
client_secret = "crm-client-secret-value"
extra = {{ resource = "r1" }}

[apps.legacy]
app_id = "legacy-app-id"
app_secret = "{SECRET}-legacy"
"""


@pytest.fixture
def full(tmp_path: Path) -> Path:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "shop").write_text(f"{SECRET}\n")
    (tmp_path / "shop.pem").write_text(PUBLIC)
    return write(tmp_path, FULL)


class TestAFullFile:
    def test_every_app_in_file_order_with_its_settings(self, full: Path) -> None:
        config = load_config(full)
        assert config.names == ("shop", "crm", "legacy")
        assert config.source == str(full)
        assert config.store == "memory://"
        shop = config.app("shop")
        assert shop.app_id == "shop-app-id"
        assert shop.app_secret == Secret(SECRET)  # read from the file, stripped
        assert shop.public_key == PUBLIC.strip()
        assert (shop.provider, shop.auto_finish_setup) == ("wix", True)
        assert shop.api_url == "https://www.wixapis.com"  # Wix's, as without a config
        assert (shop.auth_grace, shop.not_installed) == (5.0, ("APP_GONE", "text:site deleted"))

    def test_provider_options_pass_verbatim_and_read_only(self, full: Path) -> None:
        crm = load_config(full).app("crm")
        assert crm.provider == "oauth2"
        assert crm.app_secret is None  # not the wix provider: none needed
        assert crm.api_url == "https://api.example.com"
        assert dict(crm.provider_options) == {
            "token_url": "https://auth.example.com/token",
            "client_secret": "crm-client-secret-value",
            "extra": {"resource": "r1"},
        }
        with pytest.raises(TypeError):
            crm.provider_options["token_url"] = "x"  # type: ignore[index]

    def test_no_secret_in_any_repr_but_every_secret_in_secrets(self, full: Path) -> None:
        config = load_config(full)
        shown = repr(config) + "".join(repr(app) for app in config.apps.values())
        for value in (SECRET, "crm-client-secret-value", PUBLIC.strip()[30:60]):
            assert value not in shown
        assert set(config.secrets()) == {SECRET, f"{SECRET}-legacy", "crm-client-secret-value"}

    def test_broker_kwargs_name_tokenbroker_s_own_options(self, full: Path) -> None:
        kwargs = load_config(full).app("crm").broker_kwargs()
        assert kwargs["provider"] == "oauth2"
        assert kwargs["api_url"] == "https://api.example.com"
        assert load_config(full).app("shop").broker_kwargs()["api_url"] == (
            "https://www.wixapis.com"
        )

    def test_an_unknown_app_name_lists_the_configured_ones(self, full: Path) -> None:
        with pytest.raises(UnknownApp, match=r"^unknown app 'nope' \(apps: shop, crm, legacy\)$"):
            load_config(full).app("nope")


class TestRefusals:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('stor = "memory://"\n[apps.a]\napp_id = "x"\napp_secret = "s"', "stor: unknown key"),
            (
                '[apps.a]\napp_id = "x"\napp_secret = "s"\napp_secrte = "s2"',
                "apps.a.app_secrte: unknown key",
            ),
            ('store = "memory://"', "apps: no apps configured"),
            ('store = "memory://"\n[apps]', "apps: no apps configured"),
            ('[apps.Shop]\napp_id = "x"\napp_secret = "s"', "apps.Shop: app name 'Shop' is not"),
            ('[apps."a b"]\napp_id = "x"\napp_secret = "s"', "apps.a b: app name 'a b' is not"),
            ('[apps.1a]\napp_id = "x"\napp_secret = "s"', "apps.1a: app name '1a' is not a slug"),
            ('[apps.a]\napp_secret = "s"', "apps.a.app_id: is required"),
            ('[apps.a]\napp_id = 7\napp_secret = "s"', "apps.a.app_id: must be a string"),
            ('[apps.a]\napp_id = "x"', "apps.a.app_secret: is required for the wix provider"),
            ('[apps.a]\napp_id = "x"\napp_secret = "  "', "apps.a.app_secret: is empty"),
            (
                '[apps.a]\napp_id = "x"\napp_secret = "s"\napp_secret_file = "f"',
                "apps.a.app_secret: give app_secret or app_secret_file, not both",
            ),
            (
                '[apps.a]\napp_id = "x"\napp_secret = "s"\nauto_finish_setup = "yes"',
                "apps.a.auto_finish_setup: must be true or false, not 'yes'",
            ),
            (
                '[apps.a]\napp_id = "x"\napp_secret = "s"\nprovider_options = 3',
                "apps.a.provider_options: must be a table, not an integer",
            ),
            (
                '[apps.a]\napp_id = "x"\napp_secret = "s"\napi_url = "ftp://x"',
                "apps.a.api_url: API URL 'ftp://x' must be an absolute http(s) URL",
            ),
            (
                '[apps.a]\napp_id = "x"\napp_secret = "s"\nauth_grace = -1',
                "apps.a.auth_grace: must be finite and at least 0",
            ),
            (
                '[apps.a]\napp_id = "x"\napp_secret = "s"\nmetrics = "off"',
                "apps.a.metrics: must be true or false, not 'off'",
            ),
            (
                '[apps.a]\napp_id = "tokenbroker~x"\napp_secret = "s"',
                "apps.a.app_id: 'tokenbroker~x' is reserved",
            ),
            ("apps = 3", "apps: must be a table of [apps.NAME] tables"),
            ("[apps]\na = 3", "apps.a: must be a table, not an integer"),
            ('store = "nothing"\n[apps.a]\napp_id = "x"\napp_secret = "s"', "store: must be a URL"),
            (
                'encryption_key = "not-a-key"\n[apps.a]\napp_id = "x"\napp_secret = "s"',
                "encryption_key: TOKENBROKER_ENCRYPTION_KEY: key #1 is not a Fernet key",
            ),
            ("store = ", "not valid TOML: "),
        ],
    )
    def test_each_mistake_is_one_line_naming_file_and_key(
        self, tmp_path: Path, text: str, expected: str
    ) -> None:
        assert refused(tmp_path, text).startswith(expected)

    def test_two_apps_with_one_app_id(self, tmp_path: Path) -> None:
        message = refused(
            tmp_path,
            '[apps.a]\napp_id = "same"\napp_secret = "s1"\n'
            '[apps.b]\napp_id = "same"\napp_secret = "s2"\nprovider = "oauth2"',
        )
        assert message.startswith("apps.b.app_id: 'same' is also the app_id of apps.a")

    def test_a_missing_secret_file(self, tmp_path: Path) -> None:
        message = refused(tmp_path, '[apps.a]\napp_id = "x"\napp_secret_file = "gone"')
        assert message == "apps.a.app_secret_file: cannot read 'gone': No such file or directory"

    def test_an_empty_secret_file(self, tmp_path: Path) -> None:
        (tmp_path / "empty").write_text(" \n")
        message = refused(tmp_path, '[apps.a]\napp_id = "x"\napp_secret_file = "empty"')
        assert message == "apps.a.app_secret_file: 'empty' is empty"

    def test_an_unreadable_secret_file(self, tmp_path: Path) -> None:
        # A directory cannot be read as a file, by root too (a chmod 0 file can be).
        (tmp_path / "locked").mkdir()
        message = refused(tmp_path, '[apps.a]\napp_id = "x"\napp_secret_file = "locked"')
        assert message.startswith("apps.a.app_secret_file: cannot read 'locked': ")

    def test_a_missing_public_key_file(self, tmp_path: Path) -> None:
        message = refused(
            tmp_path, '[apps.a]\napp_id = "x"\napp_secret = "s"\npublic_key_file = "k.pem"'
        )
        assert message.startswith("apps.a.public_key_file: cannot read 'k.pem'")

    def test_a_missing_config_file(self, tmp_path: Path) -> None:
        path = tmp_path / "absent.toml"
        with pytest.raises(ConfigError, match=r"absent\.toml: cannot read the config file: No"):
            load_config(path)

    def test_no_refusal_shows_a_secret(self, tmp_path: Path) -> None:
        message = refused(
            tmp_path, f'[apps.a]\napp_id = "x"\napp_secret = "{SECRET}"\nsecret_typo = "{SECRET}"'
        )
        assert SECRET not in message
        assert message.startswith("apps.a.secret_typo: unknown key")

    def test_a_registry_command_needs_no_secret(self, tmp_path: Path) -> None:
        path = write(tmp_path, '[apps.a]\napp_id = "x"')
        assert load_config(path, require_secret=False).app("a").app_secret is None


class TestEncryptionKeys:
    def test_a_key_list_and_a_key_file_give_the_same_keys(self, tmp_path: Path) -> None:
        pytest.importorskip("cryptography")
        from tokenbroker.backends.encrypted import new_key

        new, old = new_key(), new_key()
        listed = write(
            tmp_path,
            f'encryption_key = ["{new}", "{old}"]\n[apps.a]\napp_id = "x"\napp_secret = "s"',
        )
        (tmp_path / "keys").write_text(f"{new}\n{old}\n")
        filed = write(
            tmp_path,
            'encryption_key_file = "keys"\n[apps.a]\napp_id = "x"\napp_secret = "s"',
            name="filed.toml",
        )
        assert load_config(listed).encryption_key == Secret(f"{new},{old}")
        assert load_config(filed).encryption_key == Secret(f"{new},{old}")
        assert new not in repr(load_config(filed))


class TestTheEnvironment:
    ENV = {  # noqa: RUF012 - read only
        "TOKENBROKER_APP_ID": "env-app",
        "TOKENBROKER_APP_SECRET": SECRET,
        "TOKENBROKER_STORE": "memory://",
        "TOKENBROKER_AUTO_FINISH_SETUP": "true",
        "TOKENBROKER_AUTH_GRACE": "7",
    }

    def test_the_variables_are_one_app_named_default(self) -> None:
        config = Config.from_env(self.ENV)
        assert (config.names, config.source, config.store) == (
            ("default",),
            "environment",
            "memory://",
        )
        app = config.app("default")
        assert isinstance(app, AppConfig)
        assert (app.app_id, app.app_secret, app.auto_finish_setup, app.auth_grace) == (
            "env-app",
            Secret(SECRET),
            True,
            7.0,
        )
        assert app.api_url == "https://www.wixapis.com"

    def test_metrics_are_on_unless_the_variable_or_the_file_turns_them_off(
        self, tmp_path: Path
    ) -> None:
        assert Config.from_env(self.ENV).app("default").metrics is True
        off = Config.from_env({**self.ENV, "TOKENBROKER_METRICS": "off"})
        assert off.app("default").metrics is False
        assert off.app("default").broker_kwargs()["metrics"] is False
        text = '[apps.a]\napp_id = "x"\napp_secret = "s"\nmetrics = false\n'
        text += '[apps.b]\napp_id = "y"\napp_secret = "s"\n'
        config = load_config(write(tmp_path, text))
        assert (config.app("a").metrics, config.app("b").metrics) == (False, True)

    def test_the_settings_errors_are_unchanged(self) -> None:
        with pytest.raises(ConfigError, match=r"^TOKENBROKER_APP_ID is not set$"):
            Config.from_env({})

    def test_resolve_prefers_a_path_then_tokenbroker_config_then_the_variables(
        self, full: Path
    ) -> None:
        assert resolve_config(None, self.ENV).names == ("default",)
        env = {**self.ENV, "TOKENBROKER_CONFIG": str(full)}
        assert resolve_config(None, env).names == ("shop", "crm", "legacy")
        other = full.with_name("other.toml")
        other.write_text('[apps.one]\napp_id = "one"\napp_secret = "s"')
        assert resolve_config(other, env).names == ("one",)

    def test_a_blank_tokenbroker_config_means_none(self) -> None:
        env = {**self.ENV, "TOKENBROKER_CONFIG": "  "}
        assert resolve_config(None, env).names == ("default",)
