"""What plugins registered: backends by URL scheme, providers by name.

A leaf: it knows neither the plugin manager nor any backend or provider.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ..core.errors import ConfigError
from ..core.protocols import ProviderConfig

if TYPE_CHECKING:
    from ..core.protocols import Store, TokenProvider

BackendFactory = Callable[[str], "Store"]


ProviderFactory = Callable[[ProviderConfig], "TokenProvider"]


class RegisterBackend(Protocol):
    def __call__(self, scheme: str, factory: BackendFactory, *, description: str = "") -> None: ...


class RegisterProvider(Protocol):
    def __call__(self, name: str, factory: ProviderFactory, *, description: str = "") -> None: ...


@attrs.frozen
class Registration:
    """One registered thing and the plugin that registered it."""

    name: str
    factory: Callable[..., Any] = attrs.field(repr=False)
    plugin: str
    description: str = ""


Implementations = Callable[[], "list[tuple[str, Callable[..., Any]]]"]
"""Where a registry finds its hook: (plugin name, function) pairs, in registration order."""


class Registry:
    """Collects the registrations made through one registration hook, once, lazily.

    A leaf: it knows no plugin manager. Whoever builds it says where the hook's
    implementations come from (the manager, for the two built-in registries).
    """

    def __init__(self, what: str, implementations: Implementations) -> None:
        self._what = what
        self._implementations = implementations
        self._entries: dict[str, Registration] | None = None
        self._lock = threading.Lock()

    def entries(self) -> Mapping[str, Registration]:
        entries = self._entries
        if entries is None:
            with self._lock:
                if self._entries is None:
                    self._entries = self._collect()
                entries = self._entries
        return entries

    def reset(self) -> None:
        with self._lock:
            self._entries = None

    def _collect(self) -> dict[str, Registration]:
        found: dict[str, Registration] = {}
        for plugin, function in self._implementations():

            def register(
                name: str,
                factory: Callable[..., Any],
                *,
                description: str = "",
                _plugin: str = plugin,
            ) -> None:
                key = name.lower()
                if key in found:
                    raise ConfigError(
                        f"{self._what} {name!r} is registered by both plugin "
                        f"{found[key].plugin!r} and plugin {_plugin!r}"
                    )
                found[key] = Registration(key, factory, _plugin, description)

            function(register=register)
        return found
