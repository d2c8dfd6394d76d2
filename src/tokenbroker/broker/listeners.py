"""Engine events to plugin hooks: the engine calls these, they call the plugins.

Each call goes through ``call_hook``, so one broken plugin is logged with its
name and never reaches the token path.
"""

from __future__ import annotations

from ..core.token import Token, TokenKey
from ..plugins.calls import call_hook


def token_acquired(key: TokenKey, token: Token, source: str) -> None:
    call_hook("tokenbroker_token_acquired", key=key, token=token, source=source)


def token_failed(key: TokenKey, error: BaseException) -> None:
    call_hook("tokenbroker_token_failed", key=key, error=error)


def store_degraded(store_url: str, error: BaseException) -> None:
    call_hook("tokenbroker_store_degraded", store_url=store_url, error=error)


def store_recovered(store_url: str) -> None:
    call_hook("tokenbroker_store_recovered", store_url=store_url)
