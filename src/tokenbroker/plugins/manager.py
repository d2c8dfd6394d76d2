"""The plugin manager: built-ins and entry points, loaded once and lazily.

``TOKENBROKER_PLUGINS`` (comma-separated entry-point names) is an allow-list;
``TOKENBROKER_DISABLE_PLUGINS`` names plugins to skip. Built-in plugins are
registered through the same entry-point group; when tokenbroker runs from a
source tree without installed metadata they are registered directly, under
the same names.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .hookspecs import PROJECT
from .registry import Registry

log = logging.getLogger("tokenbroker.plugins")

BUILTIN = {
    "wix": "tokenbroker.wix.plugin",
    "builtin_backends": "tokenbroker.plugins.builtin_backends",
    "redis": "tokenbroker.plugins.redis_backend",
    "auto_finish_setup": "tokenbroker.plugins.auto_setup",
    "oauth2": "tokenbroker.providers.plugin",
}


@attrs.frozen
class LoadedPlugin:
    name: str
    module: str
    distribution: str | None
    version: str | None
    error: str | None = None


_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None
_loaded: dict[str, LoadedPlugin] = {}


def _names(value: str | None) -> set[str] | None:
    if value is None or not value.strip():
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _summary(exc: BaseException) -> str:
    """``Type: first line of the message``: what went wrong, on one line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__


def _build(environ: Mapping[str, str]) -> pluggy.PluginManager:
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    allowed = _names(environ.get("TOKENBROKER_PLUGINS"))
    disabled = _names(environ.get("TOKENBROKER_DISABLE_PLUGINS")) or set()

    def wanted(name: str) -> bool:
        return (allowed is None or name in allowed) and name not in disabled

    for ep in entry_points(group=PROJECT):
        if not wanted(ep.name) or manager.has_plugin(ep.name):
            continue
        dist = ep.dist
        try:
            manager.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin must not take the app down
            # One line, not a traceback: every command of the CLI prints it, and
            # `tokenbroker plugins` lists the plugin as FAILED with the same summary.
            error: str | None = _summary(exc)
            log.warning(
                "could not load tokenbroker plugin %r from %s: %s", ep.name, ep.value, error
            )
        else:
            error = None
        _loaded[ep.name] = LoadedPlugin(
            ep.name, ep.value, dist.name if dist else None, dist.version if dist else None, error
        )
    for name, module in BUILTIN.items():
        if wanted(name) and not manager.has_plugin(name):
            manager.register(importlib.import_module(module), name=name)
            _loaded[name] = LoadedPlugin(name, module, "tokenbroker", None)
    return manager


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _manager  # noqa: PLW0603 - one manager per process, built lazily
    manager = _manager
    if manager is None:
        with _lock:
            if _manager is None:
                _manager = _build(os.environ)
            manager = _manager
    return manager


def loaded_plugins() -> list[LoadedPlugin]:
    plugin_manager()
    return sorted(_loaded.values(), key=lambda p: p.name)


def _implementations(hook_name: str) -> list[tuple[str, Any]]:
    caller = getattr(plugin_manager().hook, hook_name)
    return [(impl.plugin_name, impl.function) for impl in caller.get_hookimpls()]


backends = Registry("backend scheme", lambda: _implementations("tokenbroker_register_backends"))
"""Store factories by URL scheme."""
providers = Registry("provider", lambda: _implementations("tokenbroker_register_providers"))
"""Token provider factories by name."""


def reset_plugins() -> None:
    """Forget the manager and every registry (tests, and after changing the env)."""
    global _manager  # noqa: PLW0603

    with _lock:
        _manager = None
        _loaded.clear()
    backends.reset()
    providers.reset()
