"""The config file: one store and any number of apps, in TOML.

```toml
store = "postgresql+psycopg://tokenbroker@db/tokenbroker"
encryption_key_file = "tokenbroker-key"     # or encryption_key = "..." (or a list)

[apps.shop]
app_id = "11111111-2222-3333-4444-555555555555"
app_secret_file = "shop-secret"             # or app_secret = "..."
public_key_file = "shop-public-key.pem"     # or public_key = "-----BEGIN ..."

[apps.crm]
app_id = "crm-client"
provider = "oauth2"
provider_options = { token_url = "https://auth.example.com/oauth/token" }
```

``load_config(path)`` reads one; ``Config.from_env()`` turns the ``TOKENBROKER_*``
variables into one app named ``default``; ``resolve_config()`` picks (a path given,
else ``TOKENBROKER_CONFIG``, else the environment). Every mistake is one
``ConfigError`` line naming the file and the key. Relative ``*_file`` paths are read
from the config file's directory. Secrets are ``Secret``s: in no repr, no message.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, NoReturn

import attrs

from .backends.encrypted import make_fernet
from .backends.urls import redact_url
from .core.errors import ConfigError
from .core.health import is_reserved
from .core.secret import Secret
from .core.token import validate_id
from .settings import Settings, default_store_url
from .wix.errors import not_installed_entries
from .wix.facts import DEFAULT_API_URL, validate_api_url

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_APP",
    "AppConfig",
    "Config",
    "UnknownApp",
    "load_config",
    "resolve_config",
]

CONFIG_ENV: Final = "TOKENBROKER_CONFIG"
DEFAULT_APP: Final = "default"
"""The name of the one app the environment variables configure."""
SLUG: Final = re.compile(r"[a-z][a-z0-9_-]{0,62}")
SLUG_RULE: Final = "a lowercase letter, then up to 62 lowercase letters, digits, '_' or '-'"

_TOP_KEYS: Final = frozenset({"store", "encryption_key", "encryption_key_file", "apps"})
BROKER_KEYS: Final = (
    *("app_id", "app_secret", "provider", "provider_options", "public_key", "api_url"),
    *("auto_finish_setup", "not_installed", "auth_grace", "metrics"),
)
"""The ``AppConfig`` fields that are ``TokenBroker`` keyword arguments of the same name."""
_APP_KEYS: Final = frozenset(
    {*BROKER_KEYS, "app_secret_file", "public_key_file"},
)
_SECRET_OPTION: Final = re.compile(r"secret|password|private", re.IGNORECASE)


class UnknownApp(ConfigError, KeyError):
    """No app of that name is configured (a ``ConfigError`` and a ``KeyError``, so
    ``name in brokers`` and ``brokers.get(name)`` work as for any mapping)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown app"


def check_name(name: object) -> str:
    """``name`` if it is an app name (a slug), else a ``ConfigError``."""
    if not isinstance(name, str) or SLUG.fullmatch(name) is None:
        raise ConfigError(f"app name {str(name)[:70]!r} is not a slug ({SLUG_RULE})")
    return name


def _valid_name(_instance: Any, _attribute: Any, name: str) -> None:
    check_name(name)


def _frozen(options: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(options or {}))


@attrs.frozen
class AppConfig:
    """One app: its credentials, its provider and that provider's options.

    ``api_url`` defaults to Wix's for a ``wix`` app; ``None`` (another provider's,
    not set) leaves it to ``TokenBroker``'s default. ``not_installed`` and
    ``auth_grace`` (and ``metrics``) are ``TokenBroker``'s options of the same names
    (``TOKENBROKER_WIX_NOT_INSTALLED``, ``TOKENBROKER_AUTH_GRACE``, ``TOKENBROKER_METRICS``).
    """

    name: str = attrs.field(validator=_valid_name)
    app_id: str
    app_secret: Secret | None = attrs.field(default=None, repr=False)
    public_key: str | None = attrs.field(default=None, repr=False)
    provider: str = "wix"
    provider_options: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, repr=False)
    api_url: str | None = None
    auto_finish_setup: bool = False
    not_installed: tuple[str, ...] = ()
    auth_grace: float = 30.0
    metrics: bool = True

    def broker_kwargs(self) -> dict[str, Any]:
        """The ``TokenBroker`` keyword arguments for this app (no store)."""
        kwargs = {key: getattr(self, key) for key in BROKER_KEYS}
        if self.api_url is None:  # the provider's default
            del kwargs["api_url"]
        return kwargs

    def secrets(self) -> list[str]:
        """The secret values this app holds: the app secret, and provider options
        whose name says secret, password or private (for scrubbing output)."""
        found = [self.app_secret.reveal()] if self.app_secret else []
        found.extend(
            value
            for key, value in self.provider_options.items()
            if isinstance(value, str) and _SECRET_OPTION.search(key)
        )
        return [value for value in found if value.strip()]


@attrs.frozen
class Config:
    """A deployment: one store, and the apps that share it (in their file order)."""

    store: str = attrs.field(repr=redact_url)
    apps: Mapping[str, AppConfig] = attrs.field(converter=_frozen)
    encryption_key: Secret | None = attrs.field(default=None, repr=False)
    source: str = "environment"
    """The config file's path, or ``"environment"``."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.apps)

    def app(self, name: str) -> AppConfig:
        """The app called ``name``; an unknown name is an ``UnknownApp`` listing them."""
        try:
            return self.apps[name]
        except (KeyError, TypeError):
            raise UnknownApp(f"unknown app {name!r} (apps: {', '.join(self.apps)})") from None

    def secrets(self) -> list[str]:
        """Every secret value in the config (app secrets, encryption keys, secret
        provider options): what the CLI scrubs from anything it prints."""
        found = [s for app in self.apps.values() for s in app.secrets()]
        if self.encryption_key is not None:
            found.extend(k.strip() for k in self.encryption_key.reveal().split(","))
        return [s for s in found if s]

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, require_secret: bool = True
    ) -> Config:
        """The ``TOKENBROKER_*`` variables (see ``tokenbroker.settings``) as one app
        named ``default``."""
        return cls.from_settings(Settings.from_env(environ, require_secret=require_secret))

    @classmethod
    def from_settings(cls, settings: Settings) -> Config:
        app = AppConfig(
            name=DEFAULT_APP,
            app_id=settings.app_id,
            app_secret=settings.app_secret,
            public_key=settings.public_key,
            api_url=settings.api_url,
            auto_finish_setup=settings.auto_finish_setup,
            not_installed=settings.wix_not_installed,
            auth_grace=settings.auth_grace,
            metrics=settings.metrics,
        )
        return cls(
            store=settings.store,
            apps={DEFAULT_APP: app},
            encryption_key=settings.encryption_key,
            source="environment",
        )


def resolve_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require_secret: bool = True,
) -> Config:
    """The config ``path`` names, else the one ``TOKENBROKER_CONFIG`` names, else the
    environment's single app. With a file, the app and store variables are not read."""
    env = os.environ if environ is None else environ
    if path is None:
        path = env.get(CONFIG_ENV, "").strip() or None
    if path is not None:
        return load_config(path, require_secret=require_secret)
    return Config.from_env(env, require_secret=require_secret)


def load_config(path: str | os.PathLike[str], *, require_secret: bool = True) -> Config:
    """Read and check the TOML config at ``path`` (see the module docstring).

    ``require_secret=False`` accepts a ``wix`` app without its secret (the registry
    commands need none). Unknown keys (at every level but ``provider_options``), a
    missing or empty secret file, two apps with one ``app_id``, a name that is not a
    slug, no apps, a wrong type: a one-line ``ConfigError`` naming the file and key.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: the config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    return _Reader(file).config(data, require_secret=require_secret)


@attrs.frozen
class _Reader:
    """Checks one file's tables; every message starts ``FILE: KEY:``."""

    file: Path

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {key}: {message}")

    def wrap(self, key: str, check: Callable[[], Any]) -> Any:
        """``check()``, with a ``ConfigError`` it raises placed at ``key``."""
        try:
            return check()
        except ConfigError as exc:
            self.fail(key, str(exc))

    def fail(self, key: str, message: str) -> NoReturn:
        raise self.error(key, message)

    def unknown(self, table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                self.fail(f"{where}{key}", f"unknown key (known: {known})")

    def text(self, table: Mapping[str, Any], key: str, where: str) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(where + key, f"must be a string, not {_type(value)}")
        if not value.strip():
            self.fail(where + key, "is empty")
        return value.strip()

    def read(self, key: str, given: str) -> str:
        """The stripped text of the file ``given`` (relative to the config file)."""
        target = Path(given).expanduser()
        if not target.is_absolute():
            target = self.file.parent / target
        try:
            value = target.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            self.fail(key, f"cannot read {given!r}: {why}")
        if not value:
            self.fail(key, f"{given!r} is empty")
        return value

    def one_of(self, table: Mapping[str, Any], key: str, where: str) -> str | None:
        """``key`` or ``key_file`` (read), never both."""
        value = self.text(table, key, where)
        path = self.text(table, f"{key}_file", where)
        if value is not None and path is not None:
            self.fail(f"{where}{key}", f"give {key} or {key}_file, not both")
        return self.read(f"{where}{key}_file", path) if path is not None else value

    def config(self, data: Mapping[str, Any], *, require_secret: bool) -> Config:
        self.unknown(data, _TOP_KEYS, "")
        store = self.text(data, "store", "") or default_store_url()
        if "://" not in store:
            self.fail(
                "store",
                f"must be a URL such as sqlite:///path/tokens.db, not {redact_url(store)!r}",
            )
        keys = self.encryption_key(data)
        apps_table = data.get("apps")
        if apps_table is None or apps_table == {}:
            self.fail("apps", "no apps configured: add an [apps.NAME] table with an app_id")
        if not isinstance(apps_table, dict):
            self.fail("apps", f"must be a table of [apps.NAME] tables, not {_type(apps_table)}")
        apps: dict[str, AppConfig] = {}
        owners: dict[str, str] = {}
        for name, table in apps_table.items():
            app = self.app(name, table, require_secret=require_secret)
            if app.app_id in owners:
                self.fail(
                    f"apps.{name}.app_id",
                    f"{app.app_id!r} is also the app_id of apps.{owners[app.app_id]} "
                    "(two apps with one app id would share tokens and installations)",
                )
            owners[app.app_id] = name
            apps[name] = app
        return Config(store=store, apps=apps, encryption_key=keys, source=str(self.file))

    def encryption_key(self, data: Mapping[str, Any]) -> Secret | None:
        value = data.get("encryption_key")
        if isinstance(value, list):  # newest first, as in TOKENBROKER_ENCRYPTION_KEY
            if not value or not all(isinstance(k, str) and k.strip() for k in value):
                self.fail("encryption_key", "must be a key or a non-empty list of keys")
            data = {**data, "encryption_key": ",".join(k.strip() for k in value)}
        keys = self.one_of(data, "encryption_key", "")
        if keys is None:
            return None
        key = "encryption_key_file" if data.get("encryption_key_file") else "encryption_key"
        keys = ",".join(k.strip() for k in re.split(r"[,\n]", keys) if k.strip())
        self.wrap(key, lambda: make_fernet(keys))
        return Secret(keys)

    def app(self, name: str, table: object, *, require_secret: bool) -> AppConfig:
        where = f"apps.{name}."
        self.wrap(f"apps.{name}", lambda: check_name(name))
        if not isinstance(table, dict):
            self.fail(f"apps.{name}", f"must be a table, not {_type(table)}")
        self.unknown(table, _APP_KEYS, where)
        app_id = self.text(table, "app_id", where)
        if app_id is None:
            self.fail(where + "app_id", "is required")
        self.wrap(where + "app_id", lambda: validate_id(app_id, "app id"))
        if is_reserved(app_id):
            self.fail(where + "app_id", f"{app_id!r} is reserved for tokenbroker's own records")
        provider = (self.text(table, "provider", where) or "wix").lower()
        secret = self.one_of(table, "app_secret", where)
        if secret is None and provider == "wix" and require_secret:
            self.fail(where + "app_secret", "is required for the wix provider (or app_secret_file)")
        options = table.get("provider_options", {})
        if not isinstance(options, dict):
            self.fail(where + "provider_options", f"must be a table, not {_type(options)}")
        api_url = self.text(table, "api_url", where)
        if api_url is not None:
            given = api_url
            api_url = self.wrap(where + "api_url", lambda: validate_api_url(given))
        elif provider == "wix":  # as without a config; other providers know their own
            api_url = DEFAULT_API_URL
        return AppConfig(
            name=name,
            app_id=app_id,
            app_secret=Secret(secret) if secret is not None else None,
            public_key=self.one_of(table, "public_key", where),
            provider=provider,
            provider_options=options,
            api_url=api_url,
            auto_finish_setup=self.flag(table, "auto_finish_setup", where),
            not_installed=self.not_installed(table, where),
            auth_grace=self.grace(table, where),
            metrics=self.flag(table, "metrics", where, default=True),
        )

    def flag(self, table: Mapping[str, Any], key: str, where: str, default: bool = False) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.fail(where + key, f"must be true or false, not {value!r}")
        return value

    def not_installed(self, table: Mapping[str, Any], where: str) -> tuple[str, ...]:
        value = table.get("not_installed", [])
        if not isinstance(value, list):
            self.fail(where + "not_installed", f"must be a list of strings, not {_type(value)}")
        source = f"{self.file}: {where}not_installed"
        entries: tuple[str, ...] = not_installed_entries(value, source=source)
        return entries

    def grace(self, table: Mapping[str, Any], where: str) -> float:
        value = table.get("auth_grace", 30.0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(where + "auth_grace", f"must be a number of seconds, not {_type(value)}")
        if not 0 <= value < float("inf"):
            self.fail(where + "auth_grace", f"must be finite and at least 0, not {value!r}")
        return float(value)


def _type(value: object) -> str:
    """The TOML name of ``value``'s type, for messages."""
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), type(value).__name__)
