"""Wix's legacy OAuth ("custom authentication"), which older apps still run: ``wix-legacy``.

An app on it gets a one-time authorization code from Wix each time a site owner
installs it (on the app's redirect URL, with ``code``, ``instanceId`` and ``state``;
documented: Build Apps > Custom Authentication (Legacy)). ``complete_install`` (or
``tokenbroker legacy exchange``) swaps that code for the installation's refresh token,
which is stored, and a first access token; from then on the provider swaps the refresh
token for a 5-minute access token whenever the broker needs one. The wire, and the
source of every fact about it, is in ``tokenbroker.wix.legacy_wire``; the provider,
with how the refresh token is kept and rotated, in ``tokenbroker.wix.legacy_provider``.

>>> broker = TokenBroker(app_id="...", app_secret="...", provider="wix-legacy")  # doctest: +SKIP
>>> complete_install(broker, instance_id, code)  # the redirect handler; doctest: +SKIP
>>> broker.token(instance_id)  # any time after; doctest: +SKIP
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any, Protocol

import attrs

from ..core.engine import TokenEngine
from ..core.errors import ConfigError
from ..core.flow import run_async, run_sync
from ..core.installation import Installation
from ..core.protocols import ProviderConfig, TokenProvider
from ..core.token import Token, TokenKey
from .legacy_provider import LegacyProvider
from .legacy_state import NAME, OPTIONS, lease_flow, release_flow
from .legacy_wire import REFRESH_PROVIDER, AuthorizationCodeRefused, grant_text, refresh_key

__all__ = [
    "NAME",
    "OPTIONS",
    "REFRESH_PROVIDER",
    "AuthorizationCodeRefused",
    "Callback",
    "LegacyBroker",
    "LegacyProvider",
    "acomplete_install",
    "aforget",
    "complete_install",
    "forget",
    "legacy_provider",
    "parse_callback",
    "refresh_key",
]

log = logging.getLogger("tokenbroker.wix")


def legacy_provider(config: ProviderConfig) -> LegacyProvider:
    """The ``wix-legacy`` provider's factory (registered by ``tokenbroker.wix.plugin``)."""
    return LegacyProvider(config)


class Registry(Protocol):
    """What the install needs of the broker's installation registry."""

    def add(self, instance_id: str, **fields: Any) -> Installation: ...

    async def aadd(self, instance_id: str, **fields: Any) -> Installation: ...


class LegacyBroker(Protocol):
    """What ``complete_install`` needs of a broker (``tokenbroker.TokenBroker`` is one)."""

    @property
    def app_id(self) -> str: ...

    @property
    def provider(self) -> TokenProvider: ...

    @property
    def engine(self) -> TokenEngine: ...

    @property
    def installations(self) -> Registry: ...

    def key(self, instance_id: str) -> TokenKey: ...


def _legacy(broker: LegacyBroker) -> LegacyProvider:
    provider = broker.provider
    if not isinstance(provider, LegacyProvider):
        raise ConfigError(
            f"app {broker.app_id!r} uses the {provider.name!r} provider, not {NAME!r}: "
            "only an app on Wix's legacy OAuth has an authorization code to exchange"
        )
    return provider


def _prepare(broker: LegacyBroker, instance_id: str, code: str) -> tuple[LegacyProvider, TokenKey]:
    provider = _legacy(broker)
    key = broker.key(instance_id)
    try:
        grant_text(code, "authorization code")
    except ValueError as why:
        raise ConfigError(str(why)) from None
    return provider, key


def complete_install(broker: LegacyBroker, instance_id: str, code: str) -> Token:
    """Exchange an install's authorization code; return the installation's first token.

    Wix's code (valid for 10 minutes, once) becomes the installation's refresh token,
    stored in the broker's store (encrypted when the broker has a key), and a first
    access token, stored like any other; the installation is recorded in the registry
    (and a dead one revived). Holds the installation's fleet lease meanwhile, so no
    refresh of an older grant overlaps it, and takes it before the code is spent, so a
    store that cannot be written fails first. A refused code is an
    ``AuthorizationCodeRefused``; a bad instance id or code (empty, spaces, control
    characters) a ``ConfigError``.

    Wix then expects the browser sent to ``https://www.wix.com/installer/close-window?
    access_token=<the returned access token>`` to finish the install (documented:
    Custom Authentication (Legacy)).
    """
    provider, key = _prepare(broker, instance_id, code)
    engine = broker.engine
    lease = run_sync(lease_flow(key, engine.lease_ttl, engine.wait_timeout), provider)
    try:
        token = run_sync(provider.exchange_flow(key, code, engine.policy), provider)
        broker.installations.add(key.instance_id)
    finally:
        run_sync(release_flow(lease), provider)
    _completed(engine, key, token)
    return token


async def acomplete_install(broker: LegacyBroker, instance_id: str, code: str) -> Token:
    """The async twin of ``complete_install``: never blocks the event loop."""
    provider, key = _prepare(broker, instance_id, code)
    engine = broker.engine
    lease = await run_async(lease_flow(key, engine.lease_ttl, engine.wait_timeout), provider)
    try:
        token = await run_async(provider.exchange_flow(key, code, engine.policy), provider)
        await broker.installations.aadd(key.instance_id)
    finally:
        await run_async(release_flow(lease), provider)
    _completed(engine, key, token)
    return token


def _completed(engine: TokenEngine, key: TokenKey, token: Token) -> None:
    log.info(
        "completed the install of %s: refresh token stored, first access token %s",
        key.instance_id,
        token.fingerprint,
    )
    engine.on_acquired(key, token, "provider")


def forget(broker: LegacyBroker, instance_id: str) -> bool:
    """Delete the installation's refresh token; whether one was stored.

    A removal reported by Wix's webhook does it by itself (``tokenbroker.wix.plugin``);
    removing an installation by hand (``broker.installations.remove``) does not.
    """
    return _legacy(broker).forget(instance_id)


async def aforget(broker: LegacyBroker, instance_id: str) -> bool:
    """The async twin of ``forget``."""
    return await _legacy(broker).aforget(instance_id)


def _mask(_: object) -> str:
    return "'***'"


@attrs.frozen
class Callback:
    """What Wix's redirect to the app carries at install (documented: ``code``,
    ``instanceId``, ``state``)."""

    code: str = attrs.field(repr=_mask)
    instance_id: str | None
    state: str | None


def parse_callback(url: str, *, state: str | None = None) -> Callback:
    """Read the redirect URL Wix sent the site owner's browser to; with ``state``, make
    sure the URL carries the same (else the request may not be from Wix's installer:
    documented advice, and ``@wix/sdk``'s ``handleOAuthCallback`` checks it too). A URL
    without a code, or with a different state, is a ``ConfigError`` (never quoting it)."""
    query = urllib.parse.urlsplit(url).query if isinstance(url, str) else ""
    found = urllib.parse.parse_qs(query, keep_blank_values=True)

    def one(name: str) -> str | None:
        values = found.get(name)
        if values and len(values) > 1:
            raise ConfigError(f"the callback URL carries {name} {len(values)} times")
        return values[0] if values else None

    code = one("code")
    if not code:
        raise ConfigError("the callback URL carries no code (Wix sends it as ?code=...)")
    given = one("state")
    if state is not None and given != state:
        raise ConfigError("the callback URL's state is not the one this install started with")
    return Callback(code=code, instance_id=one("instanceId") or None, state=given)
