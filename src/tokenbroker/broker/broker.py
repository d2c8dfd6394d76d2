"""The facade: ``TokenBroker``, the token path and the lifecycle.

Everything else is a collaborator it exposes: ``broker.installations`` (the
registry), ``broker.webhooks`` (verification and bookkeeping), ``broker.wix``
(Wix's app APIs and setup), ``broker.refresher`` (the bulk refresher). The old
flat names stay as thin delegates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ..core.clock import Clock, SystemClock
from ..core.engine import TokenEngine
from ..core.health_policy import Backoff
from ..core.installation import Installation
from ..core.nearcache import Entry, NearCache
from ..core.policy import RefreshPolicy
from ..core.protocols import Store, TokenProvider
from ..core.secret import Secret
from ..core.token import Token, TokenKey, validate_id
from ..settings import Settings
from ..wix.facts import DEFAULT_API_URL
from .apps import WixApps
from .assemble import assemble, settings_kwargs
from .auth import DEFAULT_GRACE, BrokerAuth, RemintGuard, check_grace
from .installations import Installations
from .observe import report
from .refresh import Refresher, RefreshReport, RefreshResult
from .webhooks import WebhookOutcome, Webhooks

if TYPE_CHECKING:
    from ..wix.webhooks.verify import WebhookVerifier


class TokenBroker:
    """A valid access token for every installation of one app.

    >>> broker = TokenBroker(app_id="...", app_secret="...", store="sqlite:///tokens.db")
    >>> broker.token("instance-id").access_token          # doctest: +SKIP

    ``store`` is a URL (``memory://``, ``sqlite:///path``, ``postgresql+psycopg://``,
    ``mysql+pymysql://``, ``redis://``, or a plugin's scheme) or a ready ``Store``.
    ``near_cache`` (on by default) keeps fresh tokens in the process; a ready
    ``NearCache`` is used as it is (brokers sharing one share its bound: its keys
    carry the app id, so apps never see each other's entries).
    ``app_secret`` is required for the ``wix`` provider; another provider may be
    given ``None`` (it takes its credentials from ``provider_options``, which go to
    its factory as ``ProviderConfig.options``, verbatim: the provider checks them).
    ``transport`` is an optional ``httpx2`` transport (tests use ``httpx2.MockTransport``).
    ``lease_ttl`` defaults to the provider's worst case for one fetch, with a margin
    (a lower value is a ``ConfigError``); ``wait_timeout`` to a little more.
    ``degrade=False`` makes a store outage raise ``StoreUnavailable`` instead of
    being ridden out (one-shot commands).
    ``auth_grace`` is ``broker.auth()``'s default grace (seconds, finite, at least 0):
    after a 401 made it get a new token for an instance, another 401 within the grace
    is returned as it is instead of costing another (see ``tokenbroker.broker.auth``).
    ``not_installed`` adds error codes (and ``text:<phrase>`` entries) that mean
    "not installed" to the provider's assumed ones (see the Wix facts page).
    ``backoff`` is how an installation Wix keeps refusing backs off (``Backoff()``: 30 s
    growing with jitter to 1 h; see the installation health page).
    ``metrics=False`` (``TOKENBROKER_METRICS=off``) counts nothing on the cache-hit
    path and registers no scrape-time readings for this broker (see the
    observability page); on by default.
    """

    installations: Installations
    """The installation registry (``broker.installations()`` lists it)."""
    webhooks: Webhooks
    """Webhook verification with the app's public key, and bookkeeping."""
    wix: WixApps
    """Wix's app APIs for one installation: finish setup, Get App Instance."""
    refresher: Refresher
    """The bulk refresher (``refresh_due``, ``arefresh_due``)."""

    def __init__(
        self,
        *,
        app_id: str,
        app_secret: str | Secret | None = None,
        store: str | Store | None = None,
        api_url: str | None = None,
        provider: str | TokenProvider = "wix",
        policy: RefreshPolicy | None = None,
        clock: Clock | None = None,
        near_cache: bool | NearCache = True,
        near_cache_size: int = 100_000,
        near_cache_max_age: float = 60.0,
        timeout: float = 10.0,
        max_attempts: int = 3,
        lease_ttl: float | None = None,
        wait_timeout: float | None = None,
        encryption_key: str | Sequence[str] | Secret | None = None,
        public_key: str | None = None,
        auto_finish_setup: bool = False,
        transport: Any = None,
        degrade: bool = True,
        auth_grace: float = DEFAULT_GRACE,
        not_installed: Sequence[str] = (),
        backoff: Backoff | None = None,
        provider_options: Mapping[str, Any] | None = None,
        metrics: bool = True,
    ) -> None:
        self.auth_grace = check_grace(auth_grace, "auth_grace")
        parts = assemble(
            app_id=app_id,
            app_secret=app_secret,
            store=store,
            api_url=DEFAULT_API_URL if api_url is None else api_url,
            provider=provider,
            policy=policy,
            clock=clock,
            near_cache=near_cache is not False,
            near=near_cache if isinstance(near_cache, NearCache) else None,
            near_cache_size=near_cache_size,
            near_cache_max_age=near_cache_max_age,
            timeout=timeout,
            max_attempts=max_attempts,
            lease_ttl=lease_ttl,
            wait_timeout=wait_timeout,
            encryption_key=encryption_key,
            transport=transport,
            degrade=degrade,
            not_installed=not_installed,
            backoff=backoff,
            provider_options=provider_options,
            metrics=metrics,
        )
        self.app_id = parts.app_id
        # The API the app calls (the proxy forwards to it): the one given, else the
        # provider's own (Wix's for the Wix providers), else none.
        self.api_url: str | None = (
            api_url if api_url is not None else getattr(parts.provider, "api_url", None)
        )
        self.clock: Clock = parts.clock
        self.provider: TokenProvider = parts.provider
        self.store: Store = parts.store
        self.policy = parts.policy
        self.auto_finish_setup = auto_finish_setup
        self._owns_store = parts.owns_store
        self._engine = parts.engine
        self._keys: dict[str, TokenKey] = {}
        self._keys_max = parts.near_cache_size
        self._metrics = parts.metrics
        # The hit path reads these directly (see ``token``): this app's near entries by
        # instance id, and the clock's own function (the builtin for the system clock).
        near = self._engine.near
        self._near: Mapping[str, Entry] = (
            near.scope(self.provider.name, self.app_id) if near is not None else {}
        )
        self._now: Callable[[], float] = (
            time.time if type(self.clock) is SystemClock else self.clock.time
        )
        self._remints = RemintGuard(self._engine)
        self.installations = Installations(
            app_id=self.app_id,
            store=self.store,
            clock=self.clock,
            key=self.key,
            near=self._engine.near,
        )
        self.wix = WixApps(
            provider=self.provider, installations=self.installations, auth=self.auth, tokens=self
        )
        self.webhooks = Webhooks(
            app_id=self.app_id,
            public_key=public_key,
            installations=self.installations,
            broker=self,
        )
        self.refresher = Refresher(
            engine=self._engine, installations=self.installations, clock=self.clock, key=self.key
        )
        if self._metrics:
            report(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Build from ``TOKENBROKER_*`` variables (see ``tokenbroker.settings``);
        keyword arguments override or add to them."""
        kwargs = settings_kwargs(Settings.from_env(environ))
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
    def metrics(self) -> bool:
        """Whether this broker counts cache hits and registers its scrape-time readings."""
        return self._metrics

    @property
    def engine(self) -> TokenEngine:
        """The get-or-refresh engine behind ``token``."""
        return self._engine

    # The hit is inlined in ``token`` and ``atoken``: one lookup on the caller's string
    # in this app's near entries and one clock read, the engine's own first test
    # (``now < refresh_at``, which holds the near cache's max age too). Anything else
    # (no entry, due, an id that is not a string) goes to the engine by its validated
    # key, which decides as it always did: an entry exists only for an id that was
    # validated when its token was kept, so an id never seen is still refused there.
    def token(self, instance_id: str) -> Token:
        """A token for the installation that is not expired and not about to."""
        try:
            entry = self._near.get(instance_id)
        except TypeError:  # unhashable: let validation say what is wrong
            entry = None
        if entry is not None and self._now() < entry:  # the entry is its serve-until time
            if self._metrics:
                self._engine.near_hits += 1
            return entry.token
        return self._engine.get(self.key(instance_id))

    async def atoken(self, instance_id: str) -> Token:
        """The async twin of ``token``: never blocks the event loop."""
        try:
            entry = self._near.get(instance_id)
        except TypeError:
            entry = None
        if entry is not None and self._now() < entry:
            if self._metrics:
                self._engine.near_hits += 1
            return entry.token
        return await self._engine.aget(self.key(instance_id))

    def invalidate(self, token: Token) -> None:
        """Drop ``token`` (Wix refused it); a newer token is left alone."""
        self._engine.invalidate(token)

    async def ainvalidate(self, token: Token) -> None:
        """The async twin of ``invalidate``."""
        await self._engine.ainvalidate(token)

    def auth(self, instance_id: str, *, grace: float | None = None) -> BrokerAuth:
        """An ``Auth`` for httpx2 (and httpx) clients calling Wix for this installation.

        On a 401 it retries once with a newer token; it gets a new one unless a 401
        already did so for this instance within ``grace`` seconds (default
        ``auth_grace``), fleet-wide: then the 401 is returned as it is.
        """
        grace = self.auth_grace if grace is None else grace
        return BrokerAuth(self, instance_id, grace=grace, guard=self._remints)

    # -- delegates to the collaborators ---------------------------------------------------
    def finish_setup(self, instance_id: str) -> Installation:
        """``broker.wix.finish_setup``: send ``APP_FINISHED_CONFIGURATION`` and record it."""
        return self.wix.finish_setup(instance_id)

    async def afinish_setup(self, instance_id: str) -> Installation:
        """The async twin of ``finish_setup``."""
        return await self.wix.afinish_setup(instance_id)

    def app_instance(self, instance_id: str) -> dict[str, Any]:
        """``broker.wix.app_instance``: Wix's Get App Instance for the installation."""
        return self.wix.app_instance(instance_id)

    async def aapp_instance(self, instance_id: str) -> dict[str, Any]:
        """The async twin of ``app_instance``."""
        return await self.wix.aapp_instance(instance_id)

    def retry_pending_setup(self) -> list[str]:
        """``broker.wix.retry_pending_setup``."""
        return self.wix.retry_pending_setup()

    def mark_setup_pending(self, instance_id: str) -> None:
        """``broker.installations.mark_setup_pending``."""
        self.installations.mark_setup_pending(instance_id)

    def refresh_due(
        self,
        *,
        within: float = 1800.0,
        concurrency: int = 20,
        progress: Callable[[RefreshResult], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> RefreshReport:
        """``broker.refresher.refresh_due`` (see ``tokenbroker.broker.refresh``)."""
        return self.refresher.refresh_due(
            within=within, concurrency=concurrency, progress=progress, on_start=on_start
        )

    async def arefresh_due(
        self,
        *,
        within: float = 1800.0,
        concurrency: int = 20,
        progress: Callable[[RefreshResult], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> RefreshReport:
        """The async twin of ``refresh_due``."""
        return await self.refresher.arefresh_due(
            within=within, concurrency=concurrency, progress=progress, on_start=on_start
        )

    @property
    def verifier(self) -> WebhookVerifier:
        """``broker.webhooks.verifier``."""
        return self.webhooks.verifier

    def handle_webhook(self, body: bytes | str, *, defer_hooks: bool = False) -> WebhookOutcome:
        """``broker.webhooks.handle``: verify, record, tell the plugins."""
        return self.webhooks.handle(body, defer_hooks=defer_hooks)

    async def ahandle_webhook(
        self, body: bytes | str, *, defer_hooks: bool = False
    ) -> WebhookOutcome:
        """The async twin of ``handle_webhook``."""
        return await self.webhooks.ahandle(body, defer_hooks=defer_hooks)

    def add_installation(self, instance_id: str, **fields: Any) -> Installation:
        """``broker.installations.add``."""
        return self.installations.add(instance_id, **fields)

    def add_installations(self, instance_ids: Iterable[str]) -> list[Installation]:
        """``broker.installations.add_many``."""
        return self.installations.add_many(instance_ids)

    def remove_installation(self, instance_id: str) -> Installation | None:
        """``broker.installations.remove``."""
        return self.installations.remove(instance_id)

    def get_installation(self, instance_id: str) -> Installation | None:
        """``broker.installations.get``."""
        return self.installations.get(instance_id)

    # -- lifecycle -----------------------------------------------------------------
    def close(self) -> None:
        """Close the provider's HTTP clients, and the store if the broker opened it."""
        self._settle()
        self._engine.close()  # its lease watchdog's thread
        self.provider.close()
        if self._owns_store:
            self.store.close()

    async def aclose(self) -> None:
        """Close everything ``close`` does, plus this loop's clients and background refreshes."""
        await self._engine.aclose()
        self._settle()
        await self.provider.aclose()
        if self._owns_store:
            await self.store.aclose()

    def _settle(self) -> None:
        """Keep the near-hit count in the registry once this broker stops being read
        (without metrics nothing of it is reported: the engine's own hits neither)."""
        if self._metrics:
            self._engine.settle_counts()

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
