"""tokenbroker: a valid access token for every installation of your app."""

from __future__ import annotations

from .broker import BrokerAuth, TokenBroker, TokenBrokers
from .config import AppConfig, Config, load_config, resolve_config
from .core import (
    Backoff,
    Broker,
    Clock,
    ConfigError,
    Event,
    HealthState,
    Installation,
    InstallationHealth,
    InstallationStatus,
    InstallationStore,
    InstanceNotInstalled,
    InvalidCredentials,
    Lease,
    ManualClock,
    ProviderError,
    RateLimited,
    RefreshPolicy,
    Secret,
    StorageError,
    Store,
    StoreUnavailable,
    SystemClock,
    Token,
    TokenBrokerError,
    TokenKey,
    TokenProvider,
    TokenState,
    TokenStore,
    TransientProviderError,
)
from .core.breaker import CircuitBreaker, CircuitState
from .core.protocols import ProviderConfig
from .plugins import hookimpl
from .plugins.resolve import store_from_url
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AppConfig",
    "Backoff",
    "Broker",
    "BrokerAuth",
    "CircuitBreaker",
    "CircuitState",
    "Clock",
    "Config",
    "ConfigError",
    "Event",
    "HealthState",
    "Installation",
    "InstallationHealth",
    "InstallationStatus",
    "InstallationStore",
    "InstanceNotInstalled",
    "InvalidCredentials",
    "Lease",
    "ManualClock",
    "ProviderConfig",
    "ProviderError",
    "RateLimited",
    "RefreshPolicy",
    "Secret",
    "Settings",
    "StorageError",
    "StoreUnavailable",
    "Store",
    "SystemClock",
    "Token",
    "TokenBroker",
    "TokenBrokers",
    "TokenBrokerError",
    "TokenKey",
    "TokenProvider",
    "TokenState",
    "TokenStore",
    "TransientProviderError",
    "__version__",
    "hookimpl",
    "load_config",
    "resolve_config",
    "store_from_url",
]
