"""Pluggy hookspecs, the plugin manager, and the built-in plugins."""

from __future__ import annotations

from .hookspecs import hookimpl, hookspec
from .manager import LoadedPlugin, loaded_plugins, plugin_manager, reset_plugins
from .registry import ProviderConfig, Registration, backends, providers

__all__ = [
    "LoadedPlugin",
    "ProviderConfig",
    "Registration",
    "backends",
    "hookimpl",
    "hookspec",
    "loaded_plugins",
    "plugin_manager",
    "providers",
    "reset_plugins",
]
