"""Protocols and values: the parts every other module builds on."""

from __future__ import annotations

from .clock import Clock, ManualClock, OffsetClock, SystemClock
from .engine import TokenEngine
from .errors import (
    ConfigError,
    InstanceNotInstalled,
    InvalidCredentials,
    ProviderError,
    RateLimited,
    StorageError,
    StoreUnavailable,
    TokenBrokerError,
    TransientProviderError,
)
from .health import HealthState, InstallationHealth
from .health_policy import Backoff
from .installation import Installation, InstallationStatus
from .policy import RefreshPolicy, TokenState
from .protocols import (
    Broker,
    Event,
    InstallationStore,
    Lease,
    ProviderConfig,
    Store,
    TokenProvider,
    TokenStore,
)
from .secret import Secret
from .token import Token, TokenKey, validate_id

__all__ = [
    "Backoff",
    "Broker",
    "Clock",
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
    "OffsetClock",
    "ProviderConfig",
    "ProviderError",
    "RateLimited",
    "RefreshPolicy",
    "Secret",
    "StorageError",
    "StoreUnavailable",
    "Store",
    "SystemClock",
    "Token",
    "TokenBrokerError",
    "TokenEngine",
    "TokenKey",
    "TokenProvider",
    "TokenState",
    "TokenStore",
    "TransientProviderError",
    "validate_id",
]
