"""Wix's wire facts, in one place (DESIGN.md's table gives the source of each).

A leaf: the settings and the CLI read these without loading the provider.
"""

from __future__ import annotations

from typing import Final

import httpx2

from ..core.errors import ConfigError

DEFAULT_API_URL: Final = "https://www.wixapis.com"
TOKEN_PATH: Final = "/oauth2/token"  # noqa: S105 - a path, not a password
BI_EVENT_PATH: Final = "/apps/v1/bi-event"
INSTANCE_PATH: Final = "/apps/v1/instance"
FINISHED_CONFIGURATION: Final = "APP_FINISHED_CONFIGURATION"
USER_AGENT: Final = "tokenbroker/0.1 (+https://pypi.org/project/tokenbroker)"


def validate_api_url(url: str) -> str:
    """``url`` as an absolute http(s) base URL without credentials or a trailing slash."""
    parsed = httpx2.URL(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"API URL {url!r} must be an absolute http(s) URL")
    if parsed.userinfo:
        raise ConfigError("API URL must not carry credentials")
    return str(parsed).rstrip("/")
