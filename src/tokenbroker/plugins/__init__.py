"""Pluggy hookspecs, the plugin manager, and the built-in plugins."""

from __future__ import annotations

from ..core.protocols import ProviderConfig
from .hookspecs import hookimpl, hookspec
from .manager import (
    LoadedPlugin,
    backends,
    loaded_plugins,
    plugin_manager,
    providers,
    reset_plugins,
)
from .registry import Registration
from .resolve import provider_factory, store_from_url

__all__ = [
    "LoadedPlugin",
    "ProviderConfig",
    "Registration",
    "backends",
    "hookimpl",
    "hookspec",
    "loaded_plugins",
    "plugin_manager",
    "provider_factory",
    "providers",
    "reset_plugins",
    "store_from_url",
]
