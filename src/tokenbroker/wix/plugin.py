"""The Wix providers' registration: built-in plugins like any third party's.

``wix`` is Create Access Token (OAuth client credentials); ``wix-legacy`` is Wix's
legacy OAuth ("custom authentication"), whose refresh tokens this plugin also deletes
when Wix's webhook reports an installation removed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..plugins.hookspecs import hookimpl
from ..plugins.registry import RegisterProvider
from .legacy import LegacyProvider, legacy_provider
from .provider import wix_provider

if TYPE_CHECKING:
    from ..core.protocols import Broker, Event


@hookimpl
def tokenbroker_register_providers(register: RegisterProvider) -> None:
    register("wix", wix_provider, description="Wix OAuth client credentials (Create Access Token)")
    register(
        "wix-legacy",
        legacy_provider,
        description="Wix legacy OAuth (custom authentication): stored refresh tokens",
    )


@hookimpl
def tokenbroker_app_removed(event: Event, broker: Broker) -> None:
    """A removed installation's grant is gone (assumed: Wix ends it with the removal),
    and a refresh token is a credential: it is deleted, not kept. Only one obtained
    before the removal: a late delivery never deletes the grant of a later install."""
    provider = getattr(broker, "provider", None)
    if isinstance(provider, LegacyProvider) and provider.app_id == broker.app_id:
        provider.forget(event.instance_id, before=event.issued_at)
