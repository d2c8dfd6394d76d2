"""The ``oauth2`` provider's registration: a built-in plugin like any third party's."""

from __future__ import annotations

from ..plugins.hookspecs import hookimpl
from ..plugins.registry import RegisterProvider
from .oauth2 import oauth2_provider


@hookimpl
def tokenbroker_register_providers(register: RegisterProvider) -> None:
    register(
        "oauth2",
        oauth2_provider,
        description="OAuth 2.0 client credentials (RFC 6749 4.4) from any token endpoint",
    )
