"""The hooks a tokenbroker plugin may implement.

A plugin is a module (or object) with functions marked ``@hookimpl``, found
through the ``tokenbroker`` entry-point group. Registration hooks receive a
``register`` callback rather than returning values (the ``llm``/``datasette``
pattern), so one plugin can register any number of things and the broker
knows which plugin registered each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .registry import RegisterBackend, RegisterProvider

PROJECT = "tokenbroker"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def tokenbroker_register_backends(register: RegisterBackend) -> None:
    """Register storage backends by URL scheme.

    Called once, the first time a store URL is resolved or the backends are
    listed. Call ``register(scheme, factory, description=...)`` for each
    scheme; ``factory(url)`` returns an object satisfying
    ``tokenbroker.Store``. A scheme may carry a driver (``postgresql+psycopg``);
    a URL whose full scheme is not registered falls back to the part before
    ``+``. Two plugins registering one scheme is a ``ConfigError``.
    """


@hookspec
def tokenbroker_register_providers(register: RegisterProvider) -> None:
    """Register token providers by name.

    Called once, the first time a provider is resolved or listed. Call
    ``register(name, factory, description=...)``; ``factory(config)``
    receives a ``ProviderConfig`` and returns a ``tokenbroker.TokenProvider``.
    """
