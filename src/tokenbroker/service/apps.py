"""The apps a service serves, by name, and the service keys over their store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..broker import TokenBroker, TokenBrokers
from ..config import DEFAULT_APP
from ..core.errors import ConfigError
from ..core.protocols import Store
from ..wix.facts import validate_api_url
from .keys import ServiceKeys, check_name

BrokerSource = TokenBroker | Mapping[str, TokenBroker]
"""One broker (served as the app ``default``), or brokers by app name
(``TokenBrokers``, or any mapping: then they must share one store)."""


def named(source: BrokerSource) -> dict[str, TokenBroker]:
    """``source`` as ``{app name: broker}``, each name a slug; a ``ConfigError`` else."""
    if isinstance(source, TokenBroker):
        return {DEFAULT_APP: source}
    if not isinstance(source, Mapping):
        raise ConfigError(
            f"create_app needs a TokenBroker or TokenBrokers, not {type(source).__name__}"
        )
    found: dict[str, TokenBroker] = {}
    for name, broker in source.items():
        if not isinstance(broker, TokenBroker):
            raise ConfigError(f"app {name!r} is a {type(broker).__name__}, not a TokenBroker")
        found[check_name(name, "app name")] = broker
    if not found:
        raise ConfigError("create_app was given no apps")
    return found


def shared_store(source: BrokerSource, brokers: Mapping[str, TokenBroker]) -> Store:
    """The one store the apps share (where the service keys are kept)."""
    if isinstance(source, TokenBrokers):
        return source.store
    stores = {id(broker.store): broker.store for broker in brokers.values()}
    if len(stores) != 1:
        raise ConfigError(
            "the apps use different stores; build them as TokenBrokers (one store), "
            "or give create_app keys=ServiceKeys(store)"
        )
    return next(iter(stores.values()))


def api_url_of(broker: TokenBroker) -> str | None:
    """The app's API URL: where the proxy sends its calls (``None``: it has none)."""
    for holder in (broker, broker.provider):
        url: Any = getattr(holder, "api_url", None)
        if isinstance(url, str) and url:
            return validate_api_url(url)
    return None


class Served:
    """What the running service holds: the brokers by name, and the service keys.

    Filled when the app starts (``create_app`` without brokers builds them from the
    config or the environment then, and closes them when it stops)."""

    def __init__(self) -> None:
        self.brokers: dict[str, TokenBroker] = {}
        self.keys: ServiceKeys | None = None
        self.owned: TokenBrokers | None = None
        self._api_urls: dict[str, str | None] = {}

    def load(self, source: BrokerSource, keys: ServiceKeys | None, *, token_api: bool) -> None:
        """Serve ``source``'s apps; with the token API, check keys with ``keys`` (default:
        ``ServiceKeys`` on the apps' one store)."""
        brokers = named(source)
        if token_api and keys is None:
            first = next(iter(brokers.values()))
            keys = ServiceKeys(shared_store(source, brokers), clock=first.clock)
        self.brokers = brokers
        self.keys = keys
        self._api_urls = {name: api_url_of(broker) for name, broker in brokers.items()}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.brokers)

    def get(self, name: str) -> TokenBroker | None:
        return self.brokers.get(name)

    def only(self) -> TokenBroker | None:
        """The broker when one app is served; ``None`` with several."""
        if len(self.brokers) != 1:
            return None
        return next(iter(self.brokers.values()))

    def api_url(self, name: str) -> str | None:
        return self._api_urls.get(name)
