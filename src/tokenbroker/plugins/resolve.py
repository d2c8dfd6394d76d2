"""Resolution by name or URL: the store a URL names, the provider a name names.

Kept apart from the registry (a leaf that only holds registrations) and from
the backends (which know no plugins), like ``limits.storage_from_string``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..backends.urls import redact_url, scheme_of
from ..core.errors import ConfigError
from .manager import backends, providers

if TYPE_CHECKING:
    from ..core.protocols import Store
    from .registry import ProviderFactory

__all__ = ["provider_factory", "store_from_url"]


def store_from_url(url: str) -> Store:
    """Build the store a URL names: ``memory://``, ``sqlite:///path``,
    ``postgresql+psycopg://…``, ``mysql+pymysql://…``, ``redis://…`` or any
    scheme a plugin registered. An unknown scheme is a ``ConfigError`` that
    lists the registered ones."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"store URL {redact_url(str(url))!r} has no scheme; expected e.g. "
            "'sqlite:///path/to/tokens.db' or 'memory://'"
        )
    scheme = scheme_of(url)
    entries = backends.entries()
    entry = entries.get(scheme) or entries.get(scheme.split("+", 1)[0])
    if entry is None:
        known = ", ".join(sorted(entries)) or "none"
        raise ConfigError(
            f"unknown store scheme {scheme!r} in {redact_url(url)!r}; registered schemes: {known}"
        )
    store: Store = entry.factory(url)
    return store


def provider_factory(name: str) -> ProviderFactory:
    """The factory registered for provider ``name``; an unknown name is a
    ``ConfigError`` listing the registered ones."""
    entries = providers.entries()
    entry = entries.get(name.lower())
    if entry is None:
        known = ", ".join(sorted(entries)) or "none"
        raise ConfigError(f"unknown token provider {name!r}; registered providers: {known}")
    factory: ProviderFactory = entry.factory
    return factory
