"""``TokenBrokers``: every app of a deployment, over one store.

>>> brokers = TokenBrokers.from_config("tokenbroker.toml")     # doctest: +SKIP
>>> brokers["shop"].token("instance-id")                        # doctest: +SKIP

The apps share what is costly or process-wide: one store object (one connection
pool, one encryption wrapper; the brokers do not own it, ``TokenBrokers`` closes
it), one near cache (one bound for the process, see below) and the one plugin
manager. They share nothing they could see each other through: a token's key and
an installation record both carry the app id, and every read names it.

The near cache is one bounded cache, not a fixed split: its entries are keyed by
app id and instance, so no app reads another's, and the budget goes where the
traffic is (an app with ten installations does not reserve a tenth of the
entries while a busy one evicts). ``near_cache_size`` bounds the whole process.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import pluggy

from ..config import BROKER_KEYS, Config, UnknownApp, load_config, resolve_config
from ..core.errors import ConfigError
from ..core.nearcache import NearCache
from ..core.protocols import Store
from ..plugins.manager import plugin_manager
from ..plugins.resolve import store_from_url
from .assemble import guard_store
from .broker import TokenBroker
from .refresh import AppProgress, AppStart, Refresher, RefreshReport, arefresh_apps, refresh_apps

__all__ = ["TokenBrokers"]


class TokenBrokers(Mapping[str, TokenBroker]):
    """A ``TokenBroker`` per configured app (``brokers["shop"]``), in config order.

    ``store`` is a ready ``Store`` to use instead of the one the config names (then
    it is not closed here: its owner closes it). ``near_cache_size`` bounds the one
    near cache every app shares (``near_cache=False``: none). Any other keyword
    (``clock``, ``transport``, ``timeout``, ``degrade``, ``policy``, ...) goes to
    every app's ``TokenBroker``. A mistake in one app is a ``ConfigError`` naming
    the config and the app, and nothing is left open.
    """

    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        near_cache: bool = True,
        near_cache_size: int = 100_000,
        near_cache_max_age: float = 60.0,
        **options: Any,
    ) -> None:
        if not isinstance(config, Config):
            raise ConfigError(f"TokenBrokers needs a Config, not {type(config).__name__}")
        if "encryption_key" in options:
            raise ConfigError(
                "encryption_key is the config's (Config.encryption_key): one for the shared store"
            )
        per_app = sorted(set(BROKER_KEYS).intersection(options))
        if per_app:
            raise ConfigError(f"{', '.join(per_app)}: set per app, in the config's apps")
        if not config.apps:
            raise ConfigError(f"{config.source}: no apps configured")
        self.config = config
        self.plugins: pluggy.PluginManager = plugin_manager()
        """The process's plugin manager: one for every app (built once, here if not yet)."""
        self._owns_store = store is None
        raw = store_from_url(config.store) if store is None else store
        try:
            self.store: Store = guard_store(raw, config.encryption_key)
        except BaseException:
            if self._owns_store:
                raw.close()
            raise
        self.near: NearCache | None = (
            NearCache(max(near_cache_size, 1), near_cache_max_age) if near_cache else None
        )
        self._brokers: dict[str, TokenBroker] = {}
        try:
            for name, app in config.apps.items():
                try:
                    self._brokers[name] = TokenBroker(
                        **app.broker_kwargs(),
                        store=self.store,
                        near_cache=self.near if self.near is not None else False,
                        near_cache_size=near_cache_size,
                        near_cache_max_age=near_cache_max_age,
                        **options,
                    )
                except ConfigError as exc:
                    raise ConfigError(f"{config.source}: apps.{name}: {exc}") from None
        except BaseException:
            self.close()
            raise

    # -- building ------------------------------------------------------------------
    @classmethod
    def from_config(cls, path: str, **options: Any) -> Self:
        """The apps of the TOML config at ``path`` (see ``tokenbroker.config``)."""
        return cls(load_config(path), **options)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Self:
        """The ``TOKENBROKER_*`` variables' single app, named ``default``."""
        return cls(Config.from_env(environ), **options)

    @classmethod
    def load(cls, path: str | None = None, **options: Any) -> Self:
        """``path``, else ``TOKENBROKER_CONFIG``, else the environment's single app."""
        return cls(resolve_config(path), **options)

    # -- the mapping ---------------------------------------------------------------
    def __getitem__(self, name: str) -> TokenBroker:
        try:
            return self._brokers[name]
        except (KeyError, TypeError):
            raise self._unknown(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._brokers)

    def __len__(self) -> int:
        return len(self._brokers)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._brokers

    def __repr__(self) -> str:
        return f"TokenBrokers(apps={list(self._brokers)!r}, store={self.store.url!r})"

    def _unknown(self, name: object) -> UnknownApp:
        return UnknownApp(f"unknown app {name!r} (apps: {', '.join(self._brokers)})")

    @property
    def names(self) -> tuple[str, ...]:
        """The app names, in config order."""
        return tuple(self._brokers)

    def app(self, name: str) -> TokenBroker:
        """The broker of app ``name``; an unknown name is a ``ConfigError`` listing them."""
        return self[name]

    def only(self) -> TokenBroker:
        """The broker of the single app; with several, a ``ConfigError`` listing them."""
        if len(self._brokers) != 1:
            raise ConfigError(
                f"{len(self._brokers)} apps are configured; name one (apps: "
                f"{', '.join(self._brokers)})"
            )
        return next(iter(self._brokers.values()))

    def by_app_id(self, app_id: str) -> TokenBroker:
        """The broker whose app id is ``app_id`` (app ids are unique in a config)."""
        for broker in self._brokers.values():
            if broker.app_id == app_id:
                return broker
        raise UnknownApp(f"no configured app has app id {app_id!r}")

    # -- refreshing every app ----------------------------------------------------------
    def refresh_due(
        self,
        *,
        within: float = 1800.0,
        concurrency: int = 20,
        apps: tuple[str, ...] | None = None,
        progress: AppProgress | None = None,
        on_start: AppStart | None = None,
    ) -> dict[str, RefreshReport]:
        """Each app's bulk refresh, one app after another, each with its own budget.

        Every app gets ``concurrency`` workers and its own rate guard, and a refusal
        of one app's credentials stops only that app. ``apps`` limits the walk to
        some names. A store error while listing one app's installations is that
        app's ``report.error``, and the others still run. ``progress(name, result)``
        and ``on_start(name, total)`` are told per app.
        """
        return refresh_apps(
            self._walk(apps), within, concurrency, progress=progress, on_start=on_start
        )

    async def arefresh_due(
        self,
        *,
        within: float = 1800.0,
        concurrency: int = 20,
        apps: tuple[str, ...] | None = None,
        progress: AppProgress | None = None,
        on_start: AppStart | None = None,
    ) -> dict[str, RefreshReport]:
        """The async twin of ``refresh_due``."""
        return await arefresh_apps(
            self._walk(apps), within, concurrency, progress=progress, on_start=on_start
        )

    def _walk(self, names: tuple[str, ...] | None) -> list[tuple[str, Refresher]]:
        chosen = self.names if names is None else tuple(names)
        return [(name, self[name].refresher) for name in chosen]

    # -- lifecycle -----------------------------------------------------------------
    def close(self) -> None:
        """Close every app's provider, then the shared store (if it was opened here).

        Each is closed even if closing another fails; the first failure is raised."""
        first: BaseException | None = None
        for broker in self._brokers.values():
            try:
                broker.close()
            except Exception as exc:  # close the rest, then raise it
                first = first or exc
        if self._owns_store:
            try:
                self.store.close()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first

    async def aclose(self) -> None:
        """The async twin of ``close``."""
        first: BaseException | None = None
        for broker in self._brokers.values():
            try:
                await broker.aclose()
            except Exception as exc:  # close the rest, then raise it
                first = first or exc
        if self._owns_store:
            try:
                await self.store.aclose()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first

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
