"""Calling event hooks so that one broken plugin cannot hurt anything else."""

from __future__ import annotations

import logging
from typing import Any

from .manager import plugin_manager

log = logging.getLogger("tokenbroker.plugins")


def call_hook(name: str, **kwargs: Any) -> int:
    """Call every implementation of hook ``name``; return how many failed.

    Each implementation runs in its own ``try``: an exception is logged with
    the plugin's name and the next implementation still runs (pluggy's own
    call would stop at the first exception).
    """
    caller = getattr(plugin_manager().hook, name)
    failed = 0
    for impl in reversed(caller.get_hookimpls()):  # pluggy's order: last registered first
        try:
            impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
        except Exception:
            failed += 1
            log.exception("plugin %r failed in hook %s", impl.plugin_name, name)
    return failed


def has_impls(name: str) -> bool:
    return bool(getattr(plugin_manager().hook, name).get_hookimpls())
