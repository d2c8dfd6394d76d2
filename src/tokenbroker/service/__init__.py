"""The ASGI service: webhooks and health (``tokenbroker serve``, or mount it).

It needs the ``server`` extra (Starlette; uvicorn to run it with ``tokenbroker
serve``). Without it, importing this package says which ``pip install`` to run
instead of a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

from ..core.errors import ConfigError

SERVER_EXTRA = "pip install 'tokenbroker[server]'"


class MissingServerExtra(ConfigError, ImportError):
    """The ``server`` extra is not installed.

    Both a :class:`ConfigError` (the CLI's usage status, 2) and an ``ImportError``
    (what code probing for an optional part catches)."""


def require(module: str, what: str) -> None:
    """Import ``module`` or raise :class:`MissingServerExtra` naming the extra to install."""
    try:
        __import__(module)
    except ImportError:
        raise MissingServerExtra(
            f"{what} needs {module}; install it with: {SERVER_EXTRA}"
        ) from None


require("starlette", "tokenbroker's webhook service")

from .app import create_app  # noqa: E402 - only once starlette is known to be there

__all__ = ["SERVER_EXTRA", "MissingServerExtra", "create_app"]
