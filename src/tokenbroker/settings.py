"""Settings from the environment, checked up front: one app (``tokenbroker.config``
reads them as the app named ``default``; a config file names any number).

| variable | meaning |
| --- | --- |
| ``TOKENBROKER_CONFIG`` | a config file (TOML), read instead of the rest by ``resolve_config`` |
| ``TOKENBROKER_APP_ID`` | the Wix app id (required) |
| ``TOKENBROKER_APP_SECRET`` | the app secret (or ``TOKENBROKER_APP_SECRET_FILE``) |
| ``TOKENBROKER_APP_SECRET_FILE`` | a file holding the secret (Docker/K8s secrets) |
| ``TOKENBROKER_STORE`` | store URL; default ``sqlite:///`` + ``default_store_path()`` |
| ``TOKENBROKER_API_URL`` | Wix API base URL; default ``https://www.wixapis.com`` |
| ``TOKENBROKER_ENCRYPTION_KEY`` | Fernet keys, comma-separated, newest first |
| ``TOKENBROKER_APP_PUBLIC_KEY`` | the app's webhook public key: PEM, base64 PEM or a path |
| ``TOKENBROKER_AUTO_FINISH_SETUP`` | ``true``: send APP_FINISHED_CONFIGURATION on install |
| ``TOKENBROKER_WIX_NOT_INSTALLED`` | more "not installed" codes and ``text:<phrase>``, by commas |
| ``TOKENBROKER_AUTH_GRACE`` | seconds in which a second 401 gets no new token (default 30) |
| ``TOKENBROKER_METRICS`` | ``off``: no counting on the cache-hit path, no scrape readings |
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import attrs

from .backends.encrypted import make_fernet
from .core.errors import ConfigError
from .core.secret import Secret
from .core.token import validate_id
from .wix.errors import not_installed_entries
from .wix.facts import DEFAULT_API_URL, validate_api_url


def default_store_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the embedded SQLite store lives when ``TOKENBROKER_STORE`` is unset:
    ``$XDG_DATA_HOME/tokenbroker/tokenbroker.db`` (``~/.local/share/...`` when
    ``XDG_DATA_HOME`` is unset; ``%LOCALAPPDATA%\\tokenbroker`` on Windows)."""
    env = os.environ if environ is None else environ
    if sys.platform == "win32" and env.get("LOCALAPPDATA"):
        base = Path(env["LOCALAPPDATA"])
    elif env.get("XDG_DATA_HOME"):
        base = Path(env["XDG_DATA_HOME"])
    else:
        base = Path(env.get("HOME") or Path.home()) / ".local" / "share"
    return base / "tokenbroker" / "tokenbroker.db"


def default_store_url(environ: Mapping[str, str] | None = None) -> str:
    return f"sqlite:///{default_store_path(environ)}"


def _secret(env: Mapping[str, str], required: bool) -> Secret | None:
    value = env.get("TOKENBROKER_APP_SECRET")
    path = env.get("TOKENBROKER_APP_SECRET_FILE")
    if value and path:
        raise ConfigError("set only one of TOKENBROKER_APP_SECRET and TOKENBROKER_APP_SECRET_FILE")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"TOKENBROKER_APP_SECRET_FILE: cannot read {path!r}: {exc.strerror}"
            ) from None
        if not value:
            raise ConfigError(f"TOKENBROKER_APP_SECRET_FILE: {path!r} is empty")
    if value is not None:
        value = value.strip()
    if not value:
        if required:
            raise ConfigError("TOKENBROKER_APP_SECRET is not set (nor TOKENBROKER_APP_SECRET_FILE)")
        return None
    return Secret(value)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, not {env[name]!r}")


def _not_installed(env: Mapping[str, str]) -> tuple[str, ...]:
    """``TOKENBROKER_WIX_NOT_INSTALLED``: extra error codes and ``text:<phrase>``
    entries that mean "not installed" (Wix documents none; the built-in ones are
    assumed). Unset or blank is none; an empty entry between commas is an error."""
    name = "TOKENBROKER_WIX_NOT_INSTALLED"
    raw = env.get(name, "")
    if not raw.strip():
        return ()
    return not_installed_entries(raw.split(","), source=name)


def _auth_grace(env: Mapping[str, str]) -> float:
    """``TOKENBROKER_AUTH_GRACE``: seconds after a 401 got a new token during which
    another 401 for that instance is returned as it is (0: a new token every time)."""
    name = "TOKENBROKER_AUTH_GRACE"
    raw = env.get(name, "").strip()
    if not raw:
        return 30.0
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be finite and at least 0, not {raw!r}")
    return value


@attrs.frozen
class Settings:
    app_id: str
    app_secret: Secret | None = attrs.field(repr=False)
    store: str
    api_url: str = DEFAULT_API_URL
    encryption_key: Secret | None = attrs.field(default=None, repr=False)
    public_key: str | None = attrs.field(default=None, repr=False)
    auto_finish_setup: bool = False
    wix_not_installed: tuple[str, ...] = ()
    """Entries for ``ProviderConfig.not_installed``: ``CODE`` or ``text:<phrase>``."""
    auth_grace: float = 30.0
    """Seconds in which a second 401 for an instance gets no new token."""
    metrics: bool = True
    """``TokenBroker(metrics=...)``: count cache hits and register scrape readings."""

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, require_secret: bool = True
    ) -> Settings:
        env = os.environ if environ is None else environ
        raw_id = env.get("TOKENBROKER_APP_ID", "")
        if not raw_id.strip():
            raise ConfigError("TOKENBROKER_APP_ID is not set")
        try:
            app_id = validate_id(raw_id.strip(), "TOKENBROKER_APP_ID")
        except ConfigError as exc:
            raise ConfigError(str(exc)) from None
        store = env.get("TOKENBROKER_STORE", "").strip() or default_store_url(env)
        if "://" not in store:
            raise ConfigError(
                f"TOKENBROKER_STORE must be a URL such as sqlite:///path/tokens.db, not {store!r}"
            )
        api_url = env.get("TOKENBROKER_API_URL", "").strip() or DEFAULT_API_URL
        try:
            api_url = validate_api_url(api_url)
        except ConfigError as exc:
            raise ConfigError(f"TOKENBROKER_API_URL: {exc}") from None
        keys = env.get("TOKENBROKER_ENCRYPTION_KEY", "").strip()
        if keys:
            make_fernet(keys)  # a bad key is a ConfigError now, not on first write
        return cls(
            app_id=app_id,
            app_secret=_secret(env, require_secret),
            store=store,
            api_url=api_url,
            encryption_key=Secret(keys) if keys else None,
            public_key=env.get("TOKENBROKER_APP_PUBLIC_KEY", "").strip() or None,
            auto_finish_setup=_flag(env, "TOKENBROKER_AUTO_FINISH_SETUP"),
            wix_not_installed=_not_installed(env),
            auth_grace=_auth_grace(env),
            metrics=_flag(env, "TOKENBROKER_METRICS", default=True),
        )
