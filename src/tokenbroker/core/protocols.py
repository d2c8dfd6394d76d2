"""The extension points: what providers and stores must guarantee."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import attrs

from .clock import Clock, SystemClock
from .installation import Installation
from .secret import Secret
from .token import Token, TokenKey


@attrs.frozen
class Lease:
    """Proof that one caller, fleet-wide, may refresh ``key`` until ``expires_at``
    (wall-clock seconds since the epoch, as the store reckons them).

    ``fence`` grows with every lease the store grants on ``key``
    (``tokenbroker.core.fencing``); a token written with it is refused once a
    later lease exists. ``0``: the store does not fence.
    """

    key: TokenKey
    owner: str
    expires_at: float
    fence: int = 0


def _frozen_options(options: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy of provider options (``None`` is none)."""
    return MappingProxyType(dict(options or {}))


@attrs.frozen
class ProviderConfig:
    """What a provider factory is given.

    ``app_secret`` is empty (``Secret("")``, which is falsy) when the app has none:
    only providers other than ``wix`` may be configured without one, and a provider
    that needs one refuses an empty one with a ``ConfigError``.
    """

    app_id: str
    app_secret: Secret = attrs.field(repr=False)
    api_url: str
    timeout: float = 10.0
    max_attempts: int = 3
    clock: Clock = attrs.field(factory=SystemClock)
    transport: Any = attrs.field(default=None, repr=False)
    """An ``httpx2`` transport for tests (``httpx2.MockTransport``), or ``None``."""
    not_installed: tuple[str, ...] = ()
    """More signs that the provider means "not installed on this instance": error
    codes, or ``text:<phrase>`` entries matched in its error text. The provider
    checks them (a ``ConfigError``); one with no such rules ignores them."""
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_options, repr=False)
    """The app's provider options (``[apps.NAME.provider_options]`` in the config
    file), passed verbatim: the provider validates them (a ``ConfigError`` naming
    the option). Read-only; kept out of reprs, since they may hold a client secret."""
    store: Store | None = attrs.field(default=None, repr=False, eq=False)
    """The broker's store (encrypting when a key is set), for providers that keep
    per-instance state such as a refresh token; ``None`` when built by hand."""


@runtime_checkable
class TokenProvider(Protocol):
    """Gets new tokens from upstream.

    Implementers guarantee: ``acquire`` either returns a complete, unexpired
    ``Token`` for ``key`` (refresh stamps may be left ``None``; the policy sets
    them) or raises a ``ProviderError`` subclass; it never returns garbage and
    never puts the app secret into an exception, log line or repr. Both methods
    are safe to call from many threads/tasks at once. ``aacquire`` does no
    blocking I/O on the event loop.
    """

    name: str

    def acquire(self, key: TokenKey) -> Token: ...

    async def aacquire(self, key: TokenKey) -> Token: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TokenStore(Protocol):
    """Keeps tokens, and leases that make one refresh per key fleet-wide.

    Implementers guarantee:

    * every method is atomic and thread-safe; async twins never block the loop;
    * ``put_token`` is compare-and-set: it does not replace a stored token whose
      ``obtained_at`` is later than the new one's (an equal one is replaced), and
      says whether it wrote; with ``fence > 0`` it first refuses (``False``,
      nothing written) when the store has granted a lease on the key with a
      later fence, or holds a token written with one;
    * ``delete_token(key, only=...)`` deletes only if the stored access token
      equals ``only`` (so dropping a rejected token cannot delete a newer one);
    * ``acquire_lease`` gives at most one live lease per key across every
      process sharing the store; a lease lapses after ``ttl`` seconds even if
      its holder died; ``release_lease`` releases only the owner's lease;
    * leases carry fences that grow per key (0 only from stores that do not fence);
      ``renew_lease`` extends a lease that is still the owner's and has not
      lapsed, and says ``None`` once it was lost;
    * a corrupted record reads as missing (with a warning), never as an error.

    ``shared`` says whether other processes see the same data (then the broker
    keeps a near cache in front of it); ``url`` is printable (no password).
    """

    shared: bool
    url: str

    def get_token(self, key: TokenKey) -> Token | None: ...

    def put_token(self, token: Token, *, fence: int = 0) -> bool: ...

    def delete_token(self, key: TokenKey, *, only: str | None = None) -> bool: ...

    def acquire_lease(self, key: TokenKey, ttl: float) -> Lease | None: ...

    def renew_lease(self, lease: Lease, ttl: float) -> Lease | None: ...

    def release_lease(self, lease: Lease) -> bool: ...

    async def aget_token(self, key: TokenKey) -> Token | None: ...

    async def aput_token(self, token: Token, *, fence: int = 0) -> bool: ...

    async def adelete_token(self, key: TokenKey, *, only: str | None = None) -> bool: ...

    async def aacquire_lease(self, key: TokenKey, ttl: float) -> Lease | None: ...

    async def arenew_lease(self, lease: Lease, ttl: float) -> Lease | None: ...

    async def arelease_lease(self, lease: Lease) -> bool: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class InstallationStore(Protocol):
    """Keeps the registry of installations.

    Implementers guarantee: ``put_installation`` is atomic and keeps the record
    with the latest ``updated_at`` (a record without one always wins over
    nothing, and loses to nothing newer); it returns whether it wrote, so a
    repeated delivery is recognisable. ``iter_installations`` yields in
    code-point order of ``instance_id`` and holds no transaction open between
    items. Records are never hard-deleted by the broker: removal is a status.
    """

    def get_installation(self, app_id: str, instance_id: str) -> Installation | None: ...

    def put_installation(self, installation: Installation) -> bool: ...

    def iter_installations(
        self, app_id: str, *, include_removed: bool = False
    ) -> Iterator[Installation]: ...

    async def aget_installation(self, app_id: str, instance_id: str) -> Installation | None: ...

    async def aput_installation(self, installation: Installation) -> bool: ...


@runtime_checkable
class Store(TokenStore, InstallationStore, Protocol):
    """A backend: both stores behind one URL."""


@runtime_checkable
class Broker(Protocol):
    """What a plugin may rely on of the broker its event hooks are handed.

    The facade (``tokenbroker.TokenBroker``) satisfies it; plugins and the Wix
    part type against this, never against the facade, so that the layers stay
    one-way. Every method is safe to call from a hook, on any thread.
    """

    @property
    def app_id(self) -> str: ...

    @property
    def auto_finish_setup(self) -> bool: ...

    def token(self, instance_id: str) -> Token: ...

    async def atoken(self, instance_id: str) -> Token: ...

    def finish_setup(self, instance_id: str) -> Installation: ...

    def mark_setup_pending(self, instance_id: str) -> None: ...


@runtime_checkable
class Event(Protocol):
    """A verified webhook event, as event hooks receive it.

    The Wix part's typed events (``tokenbroker.wix.webhooks.events``) satisfy it;
    hooks type against this so that the plugin layer knows no provider.
    ``issued_at`` orders events for one instance (the JWT's ``iat``).
    """

    @property
    def event_type(self) -> str: ...

    @property
    def instance_id(self) -> str: ...

    @property
    def app_id(self) -> str | None: ...

    @property
    def issued_at(self) -> datetime: ...

    @property
    def data(self) -> Mapping[str, Any]: ...

    @property
    def identity(self) -> Mapping[str, Any]: ...
