"""The facade: ``TokenBroker`` puts provider, store, policy and caches together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import attrs

from . import bookkeeping
from .auth import BrokerAuth
from .backends import store_from_url
from .backends.encrypted import EncryptedStore
from .bookkeeping import SeenDeliveries, WebhookOutcome
from .core.clock import Clock, SystemClock, to_datetime
from .core.engine import TokenEngine
from .core.errors import ConfigError, TokenBrokerError
from .core.flow import Flow, Op, run_async, run_sync
from .core.installation import Installation, InstallationStatus
from .core.nearcache import NearCache
from .core.policy import RefreshPolicy
from .core.protocols import Store, TokenProvider
from .core.secret import Secret
from .core.token import Token, TokenKey, validate_id
from .events import AppInstalled, AppRemoved, WebhookEvent
from .plugins.calls import call_hook
from .plugins.registry import ProviderConfig, provider_factory
from .plugins.wix import DEFAULT_API_URL, WixProvider
from .refresh import RateGuard, RefreshReport, RefreshResult, arefresh_due, refresh_due
from .settings import Settings, default_store_url

if TYPE_CHECKING:
    from .webhooks import WebhookVerifier

log = logging.getLogger("tokenbroker")


SETUP_PENDING = "setup_pending"


@attrs.frozen
class _RegistryPort:
    get_installation: Callable[..., Any]
    put_installation: Callable[..., Any]
    forget: Callable[..., Any]


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
        near_cache: bool = True,
        near_cache_size: int = 100_000,
        near_cache_max_age: float = 60.0,
        timeout: float = 10.0,
        max_attempts: int = 3,
        lease_ttl: float = 30.0,
        wait_timeout: float = 45.0,
        encryption_key: str | Sequence[str] | Secret | None = None,
        public_key: str | None = None,
        auto_finish_setup: bool = False,
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
        self._keys: dict[str, TokenKey] = {}
        self._keys_max = max(near_cache_size, 1)
        self._engine = TokenEngine(
            provider=self.provider,
            store=resolved,
            policy=self.policy,
            clock=self.clock,
            # On for every store by default: a hit then costs a dict lookup, even on
            # memory:// (whose own reads take a lock and judge freshness each time).
            near_cache=NearCache(near_cache_size, near_cache_max_age) if near_cache else None,
            lease_ttl=lease_ttl,
            wait_timeout=wait_timeout,
            on_acquired=self._token_acquired,
            on_failed=self._token_failed,
            on_degraded=self._store_degraded,
            on_recovered=self._store_recovered,
        )
        self.auto_finish_setup = auto_finish_setup
        self._public_key = public_key
        self._verifier: WebhookVerifier | None = None
        self._seen = SeenDeliveries()
        self._rate_guard = RateGuard()

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
            "public_key": settings.public_key,
            "auto_finish_setup": settings.auto_finish_setup,
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
        extra = {k: v for k, v in current.extra.items() if k != SETUP_PENDING}
        updated = attrs.evolve(current, setup_finished_at=now, extra=extra)
        self.store.put_installation(updated)
        return updated

    # -- bulk refresh ---------------------------------------------------------------
    async def arefresh_due(
        self,
        *,
        within: float = 1800.0,
        concurrency: int = 20,
        progress: Callable[[RefreshResult], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> RefreshReport:
        """Refresh every active installation whose token is missing or expires within
        ``within`` seconds, ``concurrency`` at a time (see ``tokenbroker.refresh``)."""
        return await arefresh_due(
            self,
            within=within,
            concurrency=concurrency,
            guard=self._rate_guard,
            progress=progress,
            on_start=on_start,
        )

    def refresh_due(
        self,
        *,
        within: float = 1800.0,
        concurrency: int = 20,
        progress: Callable[[RefreshResult], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> RefreshReport:
        """The sync twin: ``concurrency`` worker threads on the sync path."""
        return refresh_due(
            self,
            within=within,
            concurrency=concurrency,
            guard=self._rate_guard,
            progress=progress,
            on_start=on_start,
        )

    # -- plugin hooks ---------------------------------------------------------------
    @staticmethod
    def _token_acquired(key: TokenKey, token: Token, source: str) -> None:
        call_hook("tokenbroker_token_acquired", key=key, token=token, source=source)

    @staticmethod
    def _token_failed(key: TokenKey, error: BaseException) -> None:
        call_hook("tokenbroker_token_failed", key=key, error=error)

    @staticmethod
    def _store_degraded(store_url: str, error: BaseException) -> None:
        call_hook("tokenbroker_store_degraded", store_url=store_url, error=error)

    @staticmethod
    def _store_recovered(store_url: str) -> None:
        call_hook("tokenbroker_store_recovered", store_url=store_url)

    # -- webhooks ---------------------------------------------------------------------
    @property
    def verifier(self) -> WebhookVerifier:
        """Checks webhook JWTs against the app's public key (``public_key=`` or
        ``TOKENBROKER_APP_PUBLIC_KEY``)."""
        if self._verifier is None:
            if not self._public_key:
                raise ConfigError(
                    "webhooks need the app's public key: set TOKENBROKER_APP_PUBLIC_KEY "
                    "(PEM, base64-wrapped PEM or a file path)"
                )
            try:
                from .webhooks import WebhookVerifier  # noqa: PLC0415 - needs PyJWT
            except ModuleNotFoundError:
                raise ConfigError(
                    "webhooks need PyJWT; install it with: pip install 'tokenbroker[webhooks]'"
                ) from None
            self._verifier = WebhookVerifier(self._public_key, app_id=self.app_id)
        return self._verifier

    def handle_webhook(self, body: bytes | str, *, defer_hooks: bool = False) -> WebhookOutcome:
        """Verify a Wix webhook body, record what it says, and tell the plugins.

        Raises ``WebhookRejected`` (with the HTTP status to answer) for anything
        unverifiable. The installation is stored before this returns; with
        ``defer_hooks=True`` the plugin hooks are left in ``outcome.hooks`` for
        the caller to run after answering Wix.
        """
        raw = body.encode() if isinstance(body, str) else body
        event = self.verifier.verify(raw)
        news = run_sync(self._record_flow(event, raw), self._sync_registry)
        return self._outcome(event, news, defer_hooks)

    async def ahandle_webhook(
        self, body: bytes | str, *, defer_hooks: bool = False
    ) -> WebhookOutcome:
        raw = body.encode() if isinstance(body, str) else body
        event = self.verifier.verify(raw)
        news = await run_async(self._record_flow(event, raw), self._async_registry)
        outcome = self._outcome(event, news, defer_hooks=True)
        if not defer_hooks:
            await asyncio.to_thread(outcome.run_hooks)  # hooks are sync and may block
            return WebhookOutcome(event, news)
        return outcome

    def _record_flow(self, event: WebhookEvent, body: bytes) -> Flow[bool]:
        current = yield Op("get_installation", (self.app_id, event.instance_id))
        record = bookkeeping.apply(event, self.app_id, current)
        if record is None:
            return self._seen.first_time(body)
        news: bool = yield Op("put_installation", (record,))
        if news and isinstance(event, AppRemoved):
            yield Op("forget", (self.key(event.instance_id),))
        return news

    def _outcome(self, event: WebhookEvent, news: bool, defer_hooks: bool) -> WebhookOutcome:
        hooks: list[Callable[[], int]] = []
        if news:
            if isinstance(event, AppInstalled):
                hooks.append(
                    partial(call_hook, "tokenbroker_app_installed", event=event, broker=self)
                )
            elif isinstance(event, AppRemoved):
                hooks.append(
                    partial(call_hook, "tokenbroker_app_removed", event=event, broker=self)
                )
            hooks.append(partial(call_hook, "tokenbroker_webhook_event", event=event, broker=self))
        outcome = WebhookOutcome(event, news, tuple(hooks))
        if defer_hooks:
            return outcome
        outcome.run_hooks()
        return WebhookOutcome(event, news)

    @property
    def _sync_registry(self) -> _RegistryPort:
        return _RegistryPort(
            self.store.get_installation, self.store.put_installation, self._engine.forget
        )

    @property
    def _async_registry(self) -> _RegistryPort:
        return _RegistryPort(
            self.store.aget_installation, self.store.aput_installation, self._engine.aforget
        )

    def retry_pending_setup(self) -> list[str]:
        """Send ``APP_FINISHED_CONFIGURATION`` for installations whose automatic
        finish-setup failed earlier; returns the instance ids now done."""
        done = []
        for inst in self.installations():
            if inst.extra.get(SETUP_PENDING) and inst.setup_finished_at is None:
                try:
                    self.finish_setup(inst.instance_id)
                except TokenBrokerError as exc:
                    log.warning("finish-setup for %s still failing: %s", inst.instance_id, exc)
                else:
                    done.append(inst.instance_id)
        return done

    def mark_setup_pending(self, instance_id: str) -> None:
        current = self.store.get_installation(self.app_id, instance_id)
        if current is not None and current.setup_finished_at is None:
            extra = {**current.extra, SETUP_PENDING: True}
            self.store.put_installation(attrs.evolve(current, extra=extra))

    # -- the installation registry ------------------------------------------------
    def add_installation(self, instance_id: str, **fields: Any) -> Installation:
        """Record an installation (idempotent: adding a known one changes nothing)."""
        instance_id = validate_id(instance_id)
        current = self.store.get_installation(self.app_id, instance_id)
        if current is not None and current.active:
            return current
        now = to_datetime(self.clock.time())
        # A first manual record carries no event time, so the AppInstalled
        # webhook (with its iat) still counts as news when it arrives; re-adding
        # a removed installation is news of now.
        installation = Installation(
            app_id=self.app_id,
            instance_id=instance_id,
            installed_at=now,
            updated_at=None if current is None else now,
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
