"""Building a broker's parts from keyword arguments or settings.

Construction is kept apart from use (svcs's registry versus container): this
module resolves the provider and the store, wraps encryption, and wires the
engine; ``TokenBroker`` only uses what it is handed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs

from ..backends.encrypted import EncryptedStore, PlaintextGuard
from ..core.clock import Clock, SystemClock
from ..core.engine import TokenEngine
from ..core.errors import ConfigError
from ..core.health import is_reserved
from ..core.health_policy import Backoff
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


def assemble(
    *,
    app_id: str,
    app_secret: str | Secret,
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
) -> Parts:
    """Resolve and wire a broker's parts; a bad setting is a ``ConfigError``.

    ``backoff`` is how failing installations back off (``Backoff()``: 30 s growing
    with jitter to 1 h; see ``tokenbroker.core.health_policy``). ``not_installed``
    goes to the provider (``ProviderConfig.not_installed``).
    """
    app_id = validate_id(app_id, "app id")
    if is_reserved(app_id):
        raise ConfigError(f"app id {app_id!r} is reserved for tokenbroker's own records")
    secret = Secret(app_secret)
    if not secret.reveal().strip():
        raise ConfigError("app secret is empty")
    clock = clock or SystemClock()
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
        )
        provider = provider_factory(provider)(config)
    owns_store = store is None or isinstance(store, str)
    try:
        resolved = (
            store_from_url(store or default_store_url())
            if store is None or isinstance(store, str)
            else store
        )
        if encryption_key is not None:
            keys = encryption_key.reveal() if isinstance(encryption_key, Secret) else encryption_key
            resolved = EncryptedStore(resolved, keys)
        else:  # an encrypted store refuses this process rather than losing its encryption
            resolved = PlaintextGuard(resolved)
    except BaseException:
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
        near_cache=NearCache(near_cache_size, near_cache_max_age) if near_cache else None,
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
    )
    return Parts(
        app_id=app_id,
        clock=clock,
        provider=provider,
        store=resolved,
        owns_store=owns_store,
        policy=policy,
        engine=engine,
        near_cache_size=max(near_cache_size, 1),
    )


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
    }


def registry_store(settings: Settings) -> Store:
    """The store ``settings`` name, wrapped for encryption when a key is set: all the
    registry commands need (no app secret, no provider)."""
    store = store_from_url(settings.store)
    if settings.encryption_key is not None:
        store = EncryptedStore(store, settings.encryption_key.reveal())
    return store
