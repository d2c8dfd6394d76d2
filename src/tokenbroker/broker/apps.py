"""``broker.wix``: Wix's app APIs for one installation, the setup bookkeeping, and
who is calling the app's backend.

Finishing setup sends ``APP_FINISHED_CONFIGURATION`` and then notes it on the
installation's record; both steps are one flow, so the async twin never
touches the store on the event loop.

``identify`` turns a credential from the app's own frontend (the signed
``instance`` parameter, or an access token Wix gave the page) into an
``Identity``; ``elevate`` then gets the app's own token for that installation,
by the broker's normal token path (see ``tokenbroker.wix.identity``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import httpx2

from ..core.errors import ConfigError, TokenBrokerError
from ..core.flow import Flow, Op, run_async, run_sync
from ..core.installation import Installation
from ..core.ops import ListInstallations
from ..core.protocols import Store, TokenProvider
from ..core.secret import Secret
from ..core.token import Token
from ..wix.identity import Identifier, Identity, TokenInfo
from ..wix.provider import WixProvider
from .installations import SETUP_PENDING, Installations

log = logging.getLogger("tokenbroker")


@attrs.frozen
class _SendFinished(Op[None]):
    auth: httpx2.Auth

    def run(self, port: WixApps) -> None:
        port.provider.send_finished_configuration(self.auth)

    async def arun(self, port: WixApps) -> None:
        await port.provider.asend_finished_configuration(self.auth)


class Tokens(Protocol):
    """What ``elevate`` needs of the broker: its normal token path."""

    def token(self, instance_id: str) -> Token: ...

    async def atoken(self, instance_id: str) -> Token: ...


class WixApps:
    """Send BI Event and Get App Instance with the installation's own token;
    identify the callers of the app's backend, and elevate them to the app.

    ``tokens`` is the broker's token path and ``app_secret`` the key of the
    ``instance`` signatures; when they are not given they are found where the
    broker keeps them (the object ``auth`` is a bound method of, and the Wix
    provider).
    """

    def __init__(
        self,
        *,
        provider: TokenProvider,
        installations: Installations,
        auth: Callable[[str], httpx2.Auth],
        tokens: Tokens | None = None,
        app_secret: Secret | str | None = None,
    ) -> None:
        self._provider = provider
        self._installations = installations
        self._auth = auth
        self._tokens = tokens
        self._secret = None if app_secret is None else Secret(app_secret)
        self._identifier: Identifier | None = None
        self._lock = threading.Lock()

    @property
    def provider(self) -> WixProvider:
        """The Wix provider (a ``ConfigError`` for any other provider)."""
        if not isinstance(self._provider, WixProvider):
            raise ConfigError(f"provider {self._provider.name!r} has no Wix app API")
        return self._provider

    @property
    def store(self) -> Store:
        return self._installations.store

    # -- finish setup --------------------------------------------------------------------
    def _finish_flow(self, instance_id: str) -> Flow[Installation]:
        yield from _SendFinished(self._auth(instance_id))
        return (yield from self._installations.record_setup_flow(instance_id))

    def finish_setup(self, instance_id: str) -> Installation:
        """Tell Wix the installation needs no more setup (``APP_FINISHED_CONFIGURATION``)
        and record it on the installation."""
        self.provider  # noqa: B018 - refuse before sending anything
        return run_sync(self._finish_flow(instance_id), self)

    async def afinish_setup(self, instance_id: str) -> Installation:
        """The async twin of ``finish_setup``."""
        self.provider  # noqa: B018
        return await run_async(self._finish_flow(instance_id), self)

    def _retry_flow(self) -> Flow[list[str]]:
        done = []
        installations = yield from ListInstallations(self._installations.app_id)
        for inst in installations:
            if inst.extra.get(SETUP_PENDING) and inst.setup_finished_at is None:
                try:
                    yield from self._finish_flow(inst.instance_id)
                except TokenBrokerError as exc:
                    log.warning("finish-setup for %s still failing: %s", inst.instance_id, exc)
                else:
                    done.append(inst.instance_id)
        return done

    def retry_pending_setup(self) -> list[str]:
        """Send ``APP_FINISHED_CONFIGURATION`` for installations whose automatic
        finish-setup failed earlier; returns the instance ids now done."""
        self.provider  # noqa: B018
        return run_sync(self._retry_flow(), self)

    async def aretry_pending_setup(self) -> list[str]:
        """The async twin of ``retry_pending_setup``."""
        self.provider  # noqa: B018
        return await run_async(self._retry_flow(), self)

    # -- Get App Instance -------------------------------------------------------------------
    def app_instance(self, instance_id: str) -> dict[str, Any]:
        """Wix's Get App Instance for the installation."""
        return self.provider.get_app_instance(self._auth(instance_id))

    async def aapp_instance(self, instance_id: str) -> dict[str, Any]:
        """The async twin of ``app_instance``."""
        return await self.provider.aget_app_instance(self._auth(instance_id))

    # -- who is calling (see tokenbroker.wix.identity) -----------------------------------------
    @property
    def identifier(self) -> Identifier:
        """The ``Identifier`` behind ``identify`` and ``token_info`` (built on first use
        with the defaults; ``configure_identity`` changes them)."""
        identifier = self._identifier
        if identifier is None:
            with self._lock:
                if self._identifier is None:
                    self._identifier = self._build_identifier()
                identifier = self._identifier
        return identifier

    def configure_identity(
        self,
        *,
        max_instance_age: float | None = None,
        max_skew: float | None = None,
        cache_max_age: float | None = None,
        cache_size: int | None = None,
    ) -> Identifier:
        """Rebuild the ``Identifier`` with these options (each validated; ``None``
        keeps the default): ``max_instance_age`` (seconds an ``instance``
        parameter is accepted after its ``signDate``, 24 h), ``max_skew`` (60 s),
        ``cache_max_age`` (at most 60 s, 0 for no cache) and ``cache_size``."""
        options = {
            "max_instance_age": max_instance_age,
            "max_skew": max_skew,
            "cache_max_age": cache_max_age,
            "cache_size": cache_size,
        }
        identifier = self._build_identifier(
            **{name: value for name, value in options.items() if value is not None}
        )
        with self._lock:
            self._identifier = identifier
        return identifier

    def _build_identifier(self, **options: Any) -> Identifier:
        provider = self.provider
        secret = self._secret
        if secret is None:
            found = getattr(provider, "app_secret", None)
            if not isinstance(found, Secret):
                raise ConfigError("broker.wix needs the app secret to check instance signatures")
            secret = found
        return Identifier(
            app_id=provider.app_id,
            app_secret=secret,
            http=provider.http,
            clock=self._installations.clock,
            **options,
        )

    def _token_path(self) -> Tokens:
        if self._tokens is None:
            raise ConfigError("broker.wix has no token path to elevate with (pass tokens=)")
        return self._tokens

    def token_info(self, token: str) -> TokenInfo:
        """Wix's Token Info answer for ``token`` (cached for at most 60 s).

        An inactive token is an answer (``active`` false), not an error; a 4xx is
        ``IdentityRejected``, an outage a ``ProviderError``.
        """
        return self.identifier.token_info(token)

    async def atoken_info(self, token: str) -> TokenInfo:
        """The async twin of ``token_info``."""
        return await self.identifier.atoken_info(token)

    def identify(self, credential: str, *, allow_anonymous: bool = False) -> Identity:
        """The caller a credential from the app's frontend identifies.

        ``credential`` is the signed ``instance`` parameter (verified here with
        the app secret) or an access token (checked with Token Info: active,
        issued for this app, with an instance). An anonymous caller (an
        ``instance`` with ``aid``, a visitor's or an app's token) is refused
        unless ``allow_anonymous``. Raises ``IdentityRejected`` (a fixed
        ``reason``, safe to answer with) or, when Token Info is down,
        ``ProviderError``.
        """
        return self.identifier.identify(credential, allow_anonymous=allow_anonymous)

    async def aidentify(self, credential: str, *, allow_anonymous: bool = False) -> Identity:
        """The async twin of ``identify``: never blocks the event loop."""
        return await self.identifier.aidentify(credential, allow_anonymous=allow_anonymous)

    def elevate(self, credential: str, *, allow_anonymous: bool = False) -> Token:
        """The app's own token for the installation ``credential`` identifies.

        What ``AppStrategy.elevated()`` does in Wix's SDK, with ``identify``'s
        checks; unlike the SDK, an anonymous caller is refused unless
        ``allow_anonymous`` (a site widget's backend, serving visitors, wants it;
        a dashboard's does not). The token comes from the broker's normal path:
        cached, shared, refreshed.
        """
        tokens = self._token_path()
        identity = self.identify(credential, allow_anonymous=allow_anonymous)
        return tokens.token(identity.instance_id)

    async def aelevate(self, credential: str, *, allow_anonymous: bool = False) -> Token:
        """The async twin of ``elevate``."""
        tokens = self._token_path()
        identity = await self.aidentify(credential, allow_anonymous=allow_anonymous)
        return await tokens.atoken(identity.instance_id)
