"""The ASGI service: webhooks and health (``tokenbroker serve``, or mount it), and
the identity of your app's own frontend requests (``IdentityDependency``,
``IdentityMiddleware``: see ``tokenbroker.service.identity``).

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
from .identity import (  # noqa: E402
    IdentityDependency,
    IdentityHTTPException,
    IdentityMiddleware,
    add_identity_errors,
    credential_from,
    identity_exception_handler,
    identity_of,
)

__all__ = [
    "SERVER_EXTRA",
    "IdentityDependency",
    "IdentityHTTPException",
    "IdentityMiddleware",
    "MissingServerExtra",
    "add_identity_errors",
    "create_app",
    "credential_from",
    "identity_exception_handler",
    "identity_of",
]
