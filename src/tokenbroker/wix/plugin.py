"""The Wix provider's registration: a built-in plugin like any third party's."""

from __future__ import annotations

from ..plugins.hookspecs import hookimpl
from ..plugins.registry import RegisterProvider
from .provider import wix_provider


@hookimpl
def tokenbroker_register_providers(register: RegisterProvider) -> None:
    register("wix", wix_provider, description="Wix OAuth client credentials (Create Access Token)")
