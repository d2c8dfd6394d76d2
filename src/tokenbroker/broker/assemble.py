"""Building a broker's parts from keyword arguments or settings.

Construction is kept apart from use (svcs's registry versus container): this
module resolves the provider and the store, wraps encryption, and wires the
engine; ``TokenBroker`` only uses what it is handed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from ..backends.encrypted import EncryptedStore, PlaintextGuard
from ..core.clock import Clock, SystemClock
from ..core.engine import TokenEngine
from ..core.errors import ConfigError
from ..core.health import is_reserved
from ..core.health_policy import Backoff
from ..core.metrics import STORE_DEGRADED, TOKEN_REQUESTS
from ..core.nearcache import NearCache
from ..core.policy import RefreshPolicy
from ..core.protocols import ProviderConfig, Store, TokenProvider
from ..core.secret import Secret
from ..core.token import validate_id
from ..plugins.resolve import provider_factory, store_from_url
from ..settings import Settings, default_store_url
from . import listeners
from .installations import health_changed


@attrs.frozen
class Parts:
    """Everything a ``TokenBroker`` uses, built and wired."""

    app_id: str
    clock: Clock
    provider: TokenProvider
    store: Store
    owns_store: bool
    policy: RefreshPolicy
    engine: TokenEngine
    near_cache_size: int
    metrics: bool = True


def assemble(
    *,
    app_id: str,
    app_secret: str | Secret | None,
    store: str | Store | None,
    api_url: str,
    provider: str | TokenProvider,
    policy: RefreshPolicy | None,
    clock: Clock | None,
    near_cache: bool,
    near_cache_size: int,
    near_cache_max_age: float,
    timeout: float,
    max_attempts: int,
    lease_ttl: float | None,
    wait_timeout: float | None,
    encryption_key: str | Sequence[str] | Secret | None,
    transport: Any,
    degrade: bool = True,
    backoff: Backoff | None = None,
    not_installed: Sequence[str] = (),
    provider_options: Mapping[str, Any] | None = None,
    near: NearCache | None = None,
    metrics: bool = True,
) -> Parts:
    """Resolve and wire a broker's parts; a bad setting is a ``ConfigError``.

    ``backoff`` is how failing installations back off (``Backoff()``: 30 s growing
    with jitter to 1 h; see ``tokenbroker.core.health_policy``). ``not_installed``
    goes to the provider (``ProviderConfig.not_installed``), and so do
    ``provider_options`` (``ProviderConfig.options``) and the resolved store
    (``ProviderConfig.store``). ``near`` is a ready near cache to use instead of
    making one (``TokenBrokers`` shares one across its apps). ``metrics=False``
    takes the engine's scrape-time readings back out of the registry.
    """
    app_id = validate_id(app_id, "app id")
    if not isinstance(metrics, bool):
        raise ConfigError(f"metrics must be True or False, not {metrics!r}")
    if is_reserved(app_id):
        raise ConfigError(f"app id {app_id!r} is reserved for tokenbroker's own records")
    secret = check_secret(app_secret, provider)
    clock = clock or SystemClock()
    if provider_options is not None and not isinstance(provider_options, Mapping):
        raise ConfigError(
            f"provider_options must be a mapping, not {type(provider_options).__name__}"
        )
    owns_store = store is None or isinstance(store, str)
    resolved = (
        store_from_url(store or default_store_url())
        if store is None or isinstance(store, str)
        else store
    )
    try:
        resolved = guard_store(resolved, encryption_key)
        if isinstance(provider, str):
            config = ProviderConfig(
                app_id=app_id,
                app_secret=secret,
                api_url=api_url,
                timeout=timeout,
                max_attempts=max_attempts,
                clock=clock,
                transport=transport,
                not_installed=tuple(not_installed),
                options=provider_options,
                store=resolved,
            )
            provider = provider_factory(provider)(config)
    except BaseException:
        if owns_store:
            resolved.close()
        if not isinstance(provider, str):
            provider.close()
        raise
    policy = policy or RefreshPolicy()
    lease_ttl, wait_timeout = lease_times(provider, lease_ttl, wait_timeout)
    engine = TokenEngine(
        provider=provider,
        store=resolved,
        policy=policy,
        clock=clock,
        # On for every store by default: a hit then costs a dict lookup, even on
        # memory:// (whose own reads take a lock and judge freshness each time).
        near_cache=near
        if near is not None
        else (NearCache(near_cache_size, near_cache_max_age) if near_cache else None),
        lease_ttl=lease_ttl,
        wait_timeout=wait_timeout,
        registry=resolved,
        degrade=degrade,
        backoff=backoff,
        on_acquired=listeners.token_acquired,
        on_failed=listeners.token_failed,
        on_degraded=listeners.store_degraded,
        on_recovered=listeners.store_recovered,
        on_health_changed=health_changed,
        app=app_id,
    )
    if not metrics:  # the engine registers its readings as it is built
        TOKEN_REQUESTS.remove_source(engine)
        STORE_DEGRADED.remove_source(engine)
    return Parts(
        app_id=app_id,
        clock=clock,
        provider=provider,
        store=resolved,
        owns_store=owns_store,
        policy=policy,
        engine=engine,
        near_cache_size=max(near_cache_size, 1),
        metrics=metrics,
    )


def guard_store(store: Store, encryption_key: str | Sequence[str] | Secret | None) -> Store:
    """``store`` behind encryption (a key given) or the plaintext guard (none).

    A store that is already behind either (``TokenBrokers`` wraps its shared store
    once and hands it to every app) is used as it is: a second guard would see the
    first's marker and refuse. Giving a key for such a store too is a ``ConfigError``
    (it would encrypt twice, or disagree with the wrapper's keys).
    """
    if isinstance(store, EncryptedStore | PlaintextGuard):
        if encryption_key is not None:
            raise ConfigError(
                "the store is already wrapped for encryption; give encryption_key "
                "to the wrapper only, not to the broker as well"
            )
        return store
    if encryption_key is not None:
        keys = encryption_key.reveal() if isinstance(encryption_key, Secret) else encryption_key
        return EncryptedStore(store, keys)
    # an encrypted store refuses this process rather than losing its encryption
    return PlaintextGuard(store)


def check_secret(app_secret: str | Secret | None, provider: str | TokenProvider) -> Secret:
    """The app secret as a ``Secret``; empty (``Secret("")``) when there is none.

    The ``wix`` provider always needs one (Create Access Token and instance
    signatures are keyed with it). Any other provider may go without: it gets
    its credentials from its options, and a provider that needs the app secret
    refuses an empty ``ProviderConfig.app_secret`` itself.
    """
    name = provider if isinstance(provider, str) else getattr(provider, "name", "")
    if app_secret is None:
        if str(name).lower() == "wix":
            raise ConfigError("app secret is not set (the wix provider needs one)")
        return Secret("")
    if not isinstance(app_secret, str | Secret):
        raise ConfigError(f"app secret must be a string, not {type(app_secret).__name__}")
    secret = Secret(app_secret)
    if not secret.reveal().strip():
        raise ConfigError("app secret is empty")
    return secret


LEASE_MARGIN: Final = 1.2
LEASE_SLACK: Final = 5.0
DEFAULT_LEASE_TTL: Final = 30.0
WAIT_SLACK: Final = 15.0


def lease_times(
    provider: TokenProvider, lease_ttl: float | None, wait_timeout: float | None
) -> tuple[float, float]:
    """The lease TTL and the wait for another holder's refresh.

    The lease must outlast the provider's worst case for one fetch
    (``provider.max_fetch_seconds``, when it says), or two holders fetch at
    once: by default it is that worst case with a margin (20 % and 5 s), and an
    explicit value below the worst case is a ``ConfigError``. A waiter waits a
    little longer than a lease can live. Providers that do not say their worst
    case get 30 s.
    """
    worst = getattr(provider, "max_fetch_seconds", None)
    if lease_ttl is None:
        lease_ttl = DEFAULT_LEASE_TTL if worst is None else worst * LEASE_MARGIN + LEASE_SLACK
    elif not lease_ttl > 0:
        raise ConfigError(f"lease_ttl must be a positive number of seconds, not {lease_ttl!r}")
    elif worst is not None and lease_ttl < worst:
        raise ConfigError(
            f"lease_ttl ({lease_ttl:g}s) is shorter than the provider's worst case for one "
            f"fetch ({worst:g}s: every attempt timing out and every wait at its longest), "
            "so a second holder could fetch while the first still waits; raise it, or "
            "lower timeout or max_attempts"
        )
    if wait_timeout is None:
        wait_timeout = lease_ttl + WAIT_SLACK
    elif not wait_timeout > 0:
        raise ConfigError(
            f"wait_timeout must be a positive number of seconds, not {wait_timeout!r}"
        )
    return lease_ttl, wait_timeout


def settings_kwargs(settings: Settings) -> dict[str, Any]:
    """The ``TokenBroker`` keyword arguments that ``settings`` give."""
    return {
        "app_id": settings.app_id,
        "app_secret": settings.app_secret,
        "store": settings.store,
        "api_url": settings.api_url,
        "encryption_key": settings.encryption_key,
        "public_key": settings.public_key,
        "auto_finish_setup": settings.auto_finish_setup,
        "not_installed": settings.wix_not_installed,
        "auth_grace": settings.auth_grace,
        "metrics": settings.metrics,
    }


def registry_store(settings: Settings) -> Store:
    """The store ``settings`` name, wrapped for encryption when a key is set: all the
    registry commands need (no app secret, no provider)."""
    return open_store(settings.store, settings.encryption_key)


def open_store(url: str, encryption_key: Secret | None) -> Store:
    """The store ``url`` names, wrapped for encryption when a key is given."""
    store = store_from_url(url)
    if encryption_key is not None:
        try:
            store = EncryptedStore(store, encryption_key.reveal())
        except BaseException:
            store.close()
            raise
    return store
