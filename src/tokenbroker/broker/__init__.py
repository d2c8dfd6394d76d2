"""The facade (``TokenBroker``), the many-apps one (``TokenBrokers``) and their
collaborators: assembly from settings, installations, webhook handling, Wix app
APIs, the bulk refresher, listeners."""

from __future__ import annotations

from .apps import WixApps
from .auth import BrokerAuth
from .broker import TokenBroker
from .brokers import TokenBrokers
from .installations import Installations
from .refresh import RateBudget, RateGuard, Refresher, RefreshReport, RefreshResult
from .webhooks import WebhookOutcome, Webhooks

__all__ = [
    "BrokerAuth",
    "Installations",
    "RateBudget",
    "RateGuard",
    "RefreshReport",
    "RefreshResult",
    "Refresher",
    "TokenBroker",
    "TokenBrokers",
    "WebhookOutcome",
    "Webhooks",
    "WixApps",
]
