"""What plugins registered: backends by URL scheme, providers by name."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ..core.clock import Clock, SystemClock
from ..core.errors import ConfigError
from ..core.secret import Secret

if TYPE_CHECKING:
    from ..core.protocols import Store, TokenProvider

BackendFactory = Callable[[str], "Store"]


@attrs.frozen
class ProviderConfig:
    """What a provider factory is given."""

    app_id: str
    app_secret: Secret = attrs.field(repr=False)
    api_url: str
    timeout: float = 10.0
    max_attempts: int = 3
    clock: Clock = attrs.field(factory=SystemClock)
    transport: Any = attrs.field(default=None, repr=False)
    """An ``httpx`` transport for tests (``httpx.MockTransport``), or ``None``."""


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


class Registry:
    """Collects registrations from one registration hook, once, lazily."""

    def __init__(self, hook_name: str, what: str) -> None:
        self._hook_name = hook_name
        self._what = what
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
        from .manager import plugin_manager  # noqa: PLC0415 - the manager imports us

        found: dict[str, Registration] = {}
        caller = getattr(plugin_manager().hook, self._hook_name)
        for impl in caller.get_hookimpls():  # registration order

            def register(
                name: str,
                factory: Callable[..., Any],
                *,
                description: str = "",
                _plugin: str = impl.plugin_name,
            ) -> None:
                key = name.lower()
                if key in found:
                    raise ConfigError(
                        f"{self._what} {name!r} is registered by both plugin "
                        f"{found[key].plugin!r} and plugin {_plugin!r}"
                    )
                found[key] = Registration(key, factory, _plugin, description)

            impl.function(register=register)
        return found


backends = Registry("tokenbroker_register_backends", "backend scheme")
providers = Registry("tokenbroker_register_providers", "provider")


def provider_factory(name: str) -> ProviderFactory:
    entry = providers.entries().get(name.lower())
    if entry is None:
        known = ", ".join(sorted(providers.entries())) or "none"
        raise ConfigError(f"unknown token provider {name!r}; registered providers: {known}")
    factory: ProviderFactory = entry.factory
    return factory
