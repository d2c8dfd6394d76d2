"""The ASGI service: webhooks and health (``tokenbroker serve``, or mount it)."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
