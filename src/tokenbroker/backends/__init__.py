"""Storage backends, chosen by URL like ``limits.storage_from_string``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.errors import ConfigError

if TYPE_CHECKING:
    from ..core.protocols import Store

__all__ = ["store_from_url"]


def store_from_url(url: str) -> Store:
    """Build the store a URL names: ``memory://``, ``sqlite:///path``,
    ``postgresql+psycopg://…``, ``mysql+pymysql://…``, ``redis://…`` or any
    scheme a plugin registered. An unknown scheme is a ``ConfigError`` that
    lists the registered ones."""
    from ..plugins.registry import backends  # noqa: PLC0415 - plugins load lazily
    from .urls import redact_url, scheme_of  # noqa: PLC0415

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
