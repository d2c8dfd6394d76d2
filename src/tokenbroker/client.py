"""The facade: ``TokenBroker`` puts provider, store, policy and caches together."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import attrs

from .auth import BrokerAuth
from .backends import store_from_url
from .backends.encrypted import EncryptedStore
from .core.clock import Clock, SystemClock, to_datetime
from .core.engine import TokenEngine
from .core.errors import ConfigError
from .core.installation import Installation, InstallationStatus
from .core.nearcache import NearCache
from .core.policy import RefreshPolicy
from .core.protocols import Store, TokenProvider
from .core.secret import Secret
from .core.token import Token, TokenKey, validate_id
from .plugins.registry import ProviderConfig, provider_factory
from .plugins.wix import DEFAULT_API_URL, WixProvider
from .settings import Settings, default_store_url

log = logging.getLogger("tokenbroker")


class TokenBroker:
    """A valid access token for every installation of one app.

    >>> broker = TokenBroker(app_id="...", app_secret="...", store="sqlite:///tokens.db")
    >>> broker.token("instance-id").access_token          # doctest: +SKIP

    ``store`` is a URL (``memory://``, ``sqlite:///path``, ``postgresql+psycopg://``,
    ``mysql+pymysql://``, ``redis://``, or a plugin's scheme) or a ready ``Store``.
    ``near_cache`` (on by default) keeps fresh tokens in the process.
    ``transport`` is an optional ``httpx`` transport (tests use ``httpx.MockTransport``).
    """

    def __init__(
        self,
        *,
        app_id: str,
        app_secret: str | Secret,
        store: str | Store | None = None,
        api_url: str = DEFAULT_API_URL,
        provider: str | TokenProvider = "wix",
        policy: RefreshPolicy | None = None,
        clock: Clock | None = None,
        near_cache: bool | None = None,
        near_cache_size: int = 100_000,
        timeout: float = 10.0,
        max_attempts: int = 3,
        lease_ttl: float = 30.0,
        encryption_key: str | Sequence[str] | Secret | None = None,
        transport: Any = None,
    ) -> None:
        self.app_id = validate_id(app_id, "app id")
        secret = Secret(app_secret)
        if not secret.reveal().strip():
            raise ConfigError("app secret is empty")
        self.clock: Clock = clock or SystemClock()
        if isinstance(provider, str):
            config = ProviderConfig(
                app_id=self.app_id,
                app_secret=secret,
                api_url=api_url,
                timeout=timeout,
                max_attempts=max_attempts,
                clock=self.clock,
                transport=transport,
            )
            provider = provider_factory(provider)(config)
        self.provider: TokenProvider = provider
        self._owns_store = store is None or isinstance(store, str)
        try:
            resolved = (
                store_from_url(store or default_store_url())
                if store is None or isinstance(store, str)
                else store
            )
            if encryption_key is not None:
                keys = (
                    encryption_key.reveal()
                    if isinstance(encryption_key, Secret)
                    else encryption_key
                )
                resolved = EncryptedStore(resolved, keys)
        except BaseException:
            self.provider.close()
            raise
        self.store: Store = resolved
        self.policy = policy or RefreshPolicy()
        # On for every store by default: a hit then costs a dict lookup, even on
        # memory:// (whose own reads take a lock and judge freshness each time).
        use_near = True if near_cache is None else near_cache
        self._keys: dict[str, TokenKey] = {}
        self._keys_max = max(near_cache_size, 1)
        self._engine = TokenEngine(
            provider=self.provider,
            store=resolved,
            policy=self.policy,
            clock=self.clock,
            near_cache=NearCache(near_cache_size) if use_near else None,
            lease_ttl=lease_ttl,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Build from ``TOKENBROKER_*`` variables (see ``tokenbroker.settings``);
        keyword arguments override or add to them."""
        settings = Settings.from_env(environ)
        kwargs: dict[str, Any] = {
            "app_id": settings.app_id,
            "app_secret": settings.app_secret,
            "store": settings.store,
            "api_url": settings.api_url,
            "encryption_key": settings.encryption_key,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    def __repr__(self) -> str:
        return (
            f"TokenBroker(app_id={self.app_id!r}, store={self.store.url!r}, "
            f"provider={self.provider.name!r})"
        )

    # -- tokens -----------------------------------------------------------------
    def key(self, instance_id: str) -> TokenKey:
        """The validated key for an instance id (memoised: validation is not free)."""
        try:
            key = self._keys.get(instance_id)
        except TypeError:  # unhashable: let validation say what is wrong
            key = None
        if key is None:
            key = TokenKey(self.provider.name, self.app_id, validate_id(instance_id))
            if len(self._keys) >= self._keys_max:
                self._keys.clear()
            self._keys[instance_id] = key
        return key

    @property
    def engine(self) -> TokenEngine:
        return self._engine

    def token(self, instance_id: str) -> Token:
        """A token for the installation that is not expired and not about to."""
        return self._engine.get(self.key(instance_id))

    async def atoken(self, instance_id: str) -> Token:
        return await self._engine.aget(self.key(instance_id))

    def invalidate(self, token: Token) -> None:
        """Drop ``token`` (Wix refused it); a newer token is left alone."""
        self._engine.invalidate(token)

    async def ainvalidate(self, token: Token) -> None:
        await self._engine.ainvalidate(token)

    def auth(self, instance_id: str) -> BrokerAuth:
        """``httpx.Auth`` for sync and async clients calling Wix for this installation."""
        return BrokerAuth(self, instance_id)

    # -- Wix app APIs -----------------------------------------------------------
    def _wix(self) -> WixProvider:
        if not isinstance(self.provider, WixProvider):
            raise ConfigError(f"provider {self.provider.name!r} has no Wix app API")
        return self.provider

    def finish_setup(self, instance_id: str) -> Installation:
        """Tell Wix the installation needs no more setup (``APP_FINISHED_CONFIGURATION``)
        and record it on the installation."""
        self._wix().send_finished_configuration(self.auth(instance_id))
        return self._record_setup(instance_id)

    async def afinish_setup(self, instance_id: str) -> Installation:
        await self._wix().asend_finished_configuration(self.auth(instance_id))
        return self._record_setup(instance_id)

    def app_instance(self, instance_id: str) -> dict[str, Any]:
        """Wix's Get App Instance for the installation."""
        return self._wix().get_app_instance(self.auth(instance_id))

    async def aapp_instance(self, instance_id: str) -> dict[str, Any]:
        return await self._wix().aget_app_instance(self.auth(instance_id))

    def _record_setup(self, instance_id: str) -> Installation:
        now = to_datetime(self.clock.time())
        current = self.store.get_installation(self.app_id, instance_id) or Installation(
            app_id=self.app_id, instance_id=instance_id, installed_at=now, updated_at=now
        )
        updated = attrs.evolve(current, setup_finished_at=now)
        self.store.put_installation(updated)
        return updated

    # -- the installation registry ------------------------------------------------
    def add_installation(self, instance_id: str, **fields: Any) -> Installation:
        """Record an installation (idempotent: adding a known one changes nothing)."""
        instance_id = validate_id(instance_id)
        current = self.store.get_installation(self.app_id, instance_id)
        if current is not None and current.active:
            return current
        now = to_datetime(self.clock.time())
        installation = Installation(
            app_id=self.app_id,
            instance_id=instance_id,
            installed_at=now,
            updated_at=now,
            **fields,
        )
        self.store.put_installation(installation)
        return installation

    def remove_installation(self, instance_id: str) -> Installation | None:
        """Mark an installation removed and forget its tokens; ``None`` if unknown."""
        instance_id = validate_id(instance_id)
        current = self.store.get_installation(self.app_id, instance_id)
        self._engine.forget(self.key(instance_id))
        if current is None:
            return None
        if not current.active:
            return current
        now = to_datetime(self.clock.time())
        removed = attrs.evolve(
            current, status=InstallationStatus.REMOVED, removed_at=now, updated_at=now
        )
        self.store.put_installation(removed)
        return removed

    def get_installation(self, instance_id: str) -> Installation | None:
        return self.store.get_installation(self.app_id, validate_id(instance_id))

    def installations(self, *, include_removed: bool = False) -> list[Installation]:
        return list(self.store.iter_installations(self.app_id, include_removed=include_removed))

    def add_installations(self, instance_ids: Iterable[str]) -> list[Installation]:
        return [self.add_installation(i) for i in instance_ids]

    # -- lifecycle -----------------------------------------------------------------
    def close(self) -> None:
        self.provider.close()
        if self._owns_store:
            self.store.close()

    async def aclose(self) -> None:
        await self._engine.aclose()
        await self.provider.aclose()
        if self._owns_store:
            await self.store.aclose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
