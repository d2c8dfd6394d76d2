"""The ``tokenbroker`` command: one module per command group, all on ``main``."""

from __future__ import annotations

from . import admin, apps, dev, identity, legacy, registry, serve, service_keys, tokens  # noqa: F401 - they register commands
from .app import main
from .refresh import parse_duration

__all__ = ["main", "parse_duration"]

if __name__ == "__main__":  # pragma: no cover
    main()
