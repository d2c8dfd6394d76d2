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
    from ..core.health import InstallationHealth
    from ..core.protocols import Broker, Event
    from ..core.token import Token, TokenKey
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


# -- events ------------------------------------------------------------------
# Every event hook is called once per implementation, each in its own
# try/except: a plugin that raises is logged with its name and neither stops
# the other plugins nor breaks token handling or the recording of the event.


@hookspec
def tokenbroker_app_installed(event: Event, broker: Broker) -> None:
    """A verified install was recorded as news: ``AppInstalled``, App Installation
    Created, or App Installation Updated with status ``INSTALLED``.

    Fires after the installation is durably stored, once per installation
    event: a repeated delivery, or one older than what is recorded (the JWT's
    ``iat`` decides), does not fire it again. Behind the web service it runs
    after the 200 has been sent, so a slow hook cannot make Wix retry.
    """


@hookspec
def tokenbroker_app_removed(event: Event, broker: Broker) -> None:
    """A verified removal was recorded as news: ``AppRemoved``, or App Installation
    Updated with status ``UNINSTALLED``.

    Fires after the installation is marked removed and its tokens purged from
    the store and this process's near cache. Same once-only rules as
    ``tokenbroker_app_installed``.
    """


@hookspec
def tokenbroker_webhook_event(event: Event, broker: Broker) -> None:
    """Any verified webhook event, of any type, known or not.

    Fires after the type-specific hook. Installation events fire it only when
    they were news; other types fire it once per delivery fleet-wide: a
    duplicate (the same event ``id``, or the same body when there is none) is
    dropped for 48 h by every process sharing the store.
    """


@hookspec
def tokenbroker_token_acquired(key: TokenKey, token: Token, source: str) -> None:
    """A token was obtained on the slow path: ``source`` is ``"provider"`` (a new
    token from Wix) or ``"store"`` (found in the shared store, e.g. written by
    another process). Near-cache hits do not fire it: they are the hot path.
    Never log ``token.access_token``; ``token.fingerprint`` is safe.
    """


@hookspec
def tokenbroker_token_failed(key: TokenKey, error: BaseException) -> None:
    """Getting a token failed: a refresh in the advisory window that fell back to
    the still-valid token, or a failure the caller sees (fired once per flight,
    not once per waiting caller)."""


@hookspec
def tokenbroker_store_degraded(store_url: str, error: BaseException) -> None:
    """The shared store stopped answering; the broker is now in degraded mode.

    ``store_url`` has no password. Fires once per outage, from the call that
    noticed it. Meanwhile tokens in the near cache keep being served and misses
    are fetched from Wix directly (single-flight within each process only).
    """


@hookspec
def tokenbroker_store_recovered(store_url: str) -> None:
    """The store answers again and degraded mode is over (once per outage)."""


@hookspec
def tokenbroker_installation_health_changed(
    app_id: str, instance_id: str, old: InstallationHealth, new: InstallationHealth
) -> None:
    """An installation's health changed state: ``healthy``, ``failing`` or ``dead``.

    ``old`` and ``new`` are ``tokenbroker.core.health.InstallationHealth`` values
    (``new.to_json()`` is safe to log: it holds Wix's error message and request
    id, never a token or the secret). Fires once per change, not once per
    failure: healthy to failing on the first failed fetch that counts, failing
    (or healthy) to dead when Wix says the app is not installed or the
    installation is removed, failing to healthy on the first token after
    failures, dead to healthy when it is installed again (at once on
    ``installations add`` or an ``AppInstalled`` webhook).
    With several replicas on one store, the replica whose write recorded the
    change fires it. It runs on the thread (or event loop) that made the fetch
    or the change: keep it short.
    """
