"""Typed flow operations on the stores and the provider, shared by every flow.

Each op calls the sync method on ``run`` and its async twin on ``arun``, on the
``store`` (or ``provider``) of the port it is given; the ports are Protocols, so
any object with the right attribute can drive these flows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Protocol

import attrs

from .flow import Op
from .health import InstallationHealth, from_record, health_app_id, to_record
from .installation import Installation
from .protocols import InstallationStore, Lease, TokenProvider, TokenStore
from .token import Token, TokenKey
from .watchdog import LoopWatch, ThreadWatchdog


class TokenStorePort(Protocol):
    """A port with a token store."""

    @property
    def store(self) -> TokenStore: ...


class InstallationStorePort(Protocol):
    """A port with an installation store."""

    @property
    def store(self) -> InstallationStore: ...


class HealthStorePort(Protocol):
    """A port with the installation store that keeps installation health."""

    @property
    def health_store(self) -> InstallationStore: ...


class RegistryPort(Protocol):
    """A port with an optional installation registry (the engine)."""

    @property
    def registry(self) -> InstallationStore | None: ...


class ProviderPort(Protocol):
    """A port with a token provider."""

    @property
    def provider(self) -> TokenProvider: ...


class HolderPort(ProviderPort, TokenStorePort, Protocol):
    """A port that fetches under a lease: a provider, the store, a watchdog."""

    @property
    def watchdog(self) -> ThreadWatchdog: ...


# -- tokens ------------------------------------------------------------------------
@attrs.frozen
class GetToken(Op["Token | None"]):
    """The stored token for ``key``, or ``None``."""

    key: TokenKey

    def run(self, port: TokenStorePort) -> Token | None:
        return port.store.get_token(self.key)

    async def arun(self, port: TokenStorePort) -> Token | None:
        return await port.store.aget_token(self.key)


@attrs.frozen
class PutToken(Op[bool]):
    """Write ``token`` with the store's compare-and-set, refused when ``fence`` (the
    writer's lease's) is older than one the store has seen; whether it was written.

    An unfenced write (``fence == 0``) calls the store without the argument, so a
    store that predates fencing still takes it.
    """

    token: Token
    fence: int = 0

    def run(self, port: TokenStorePort) -> bool:
        if self.fence:
            return port.store.put_token(self.token, fence=self.fence)
        return port.store.put_token(self.token)

    async def arun(self, port: TokenStorePort) -> bool:
        if self.fence:
            return await port.store.aput_token(self.token, fence=self.fence)
        return await port.store.aput_token(self.token)


@attrs.frozen
class DeleteToken(Op[bool]):
    """Delete ``key``'s token (only if it is ``only``, when given); whether one was."""

    key: TokenKey
    only: str | None = None

    def run(self, port: TokenStorePort) -> bool:
        return port.store.delete_token(self.key, only=self.only)

    async def arun(self, port: TokenStorePort) -> bool:
        return await port.store.adelete_token(self.key, only=self.only)


@attrs.frozen
class AcquireLease(Op["Lease | None"]):
    """Take ``key``'s fleet-wide lease for ``ttl`` seconds, or ``None`` if it is held."""

    key: TokenKey
    ttl: float

    def run(self, port: TokenStorePort) -> Lease | None:
        return port.store.acquire_lease(self.key, self.ttl)

    async def arun(self, port: TokenStorePort) -> Lease | None:
        return await port.store.aacquire_lease(self.key, self.ttl)


@attrs.frozen
class RenewLease(Op["Lease | None"]):
    """Extend ``lease`` to ``ttl`` seconds from now; ``None`` if it was lost."""

    lease: Lease
    ttl: float

    def run(self, port: TokenStorePort) -> Lease | None:
        return port.store.renew_lease(self.lease, self.ttl)

    async def arun(self, port: TokenStorePort) -> Lease | None:
        return await port.store.arenew_lease(self.lease, self.ttl)


@attrs.frozen
class ReleaseLease(Op[bool]):
    """Give the lease back (only its owner's); whether it was still held."""

    lease: Lease

    def run(self, port: TokenStorePort) -> bool:
        return port.store.release_lease(self.lease)

    async def arun(self, port: TokenStorePort) -> bool:
        return await port.store.arelease_lease(self.lease)


@attrs.frozen
class Acquire(Op[Token]):
    """A new token from the provider."""

    key: TokenKey

    def run(self, port: ProviderPort) -> Token:
        return port.provider.acquire(self.key)

    async def arun(self, port: ProviderPort) -> Token:
        return await port.provider.aacquire(self.key)


@attrs.frozen
class Fetched:
    """A new token fetched under a lease, and whether the lease was lost meanwhile."""

    token: Token
    lost: bool


@attrs.frozen
class AcquireHeld(Op[Fetched]):
    """A new token from the provider, renewing ``lease`` (for ``ttl`` seconds each
    time) while the fetch runs: on threads through the port's watchdog, on a
    loop through a ``LoopWatch`` of this fetch."""

    key: TokenKey
    lease: Lease
    ttl: float

    def run(self, port: HolderPort) -> Fetched:
        store = port.store
        watch = port.watchdog.watch(self.lease, self.ttl, store.renew_lease)
        try:
            token = port.provider.acquire(self.key)
        finally:
            port.watchdog.stop(watch)
        return Fetched(token, watch.lost)

    async def arun(self, port: HolderPort) -> Fetched:
        watch = LoopWatch(self.lease, self.ttl, port.store.arenew_lease)
        try:
            token = await port.provider.aacquire(self.key)
        finally:
            watch.stop()
        return Fetched(token, watch.lost)


# -- installations -------------------------------------------------------------------
@attrs.frozen
class GetInstallation(Op["Installation | None"]):
    """The installation's record, or ``None``."""

    app_id: str
    instance_id: str

    def run(self, port: InstallationStorePort) -> Installation | None:
        return port.store.get_installation(self.app_id, self.instance_id)

    async def arun(self, port: InstallationStorePort) -> Installation | None:
        return await port.store.aget_installation(self.app_id, self.instance_id)


@attrs.frozen
class Registered(Op["Installation | None"]):
    """The registry's record of ``key``'s installation (the port has a registry)."""

    key: TokenKey

    def run(self, port: RegistryPort) -> Installation | None:
        assert port.registry is not None
        return port.registry.get_installation(self.key.app_id, self.key.instance_id)

    async def arun(self, port: RegistryPort) -> Installation | None:
        assert port.registry is not None
        return await port.registry.aget_installation(self.key.app_id, self.key.instance_id)


@attrs.frozen
class PutInstallation(Op[bool]):
    """Write the record (the newest ``updated_at`` wins); whether it was news."""

    installation: Installation

    def run(self, port: InstallationStorePort) -> bool:
        return port.store.put_installation(self.installation)

    async def arun(self, port: InstallationStorePort) -> bool:
        return await port.store.aput_installation(self.installation)


@attrs.frozen
class ListInstallations(Op["list[Installation]"]):
    """Every installation of an app; the async twin walks the store in a worker
    thread (``iter_installations`` is sync only)."""

    app_id: str
    include_removed: bool = False

    def run(self, port: InstallationStorePort) -> list[Installation]:
        return list(self._iter(port))

    async def arun(self, port: InstallationStorePort) -> list[Installation]:
        return await asyncio.to_thread(lambda: list(self._iter(port)))

    def _iter(self, port: InstallationStorePort) -> Iterator[Installation]:
        return port.store.iter_installations(self.app_id, include_removed=self.include_removed)


# -- installation health (reserved records: see tokenbroker.core.health) ----------------
@attrs.frozen
class GetHealth(Op["InstallationHealth | None"]):
    """The stored health of one installation of ``app_id``, or ``None``."""

    app_id: str
    instance_id: str

    def run(self, port: HealthStorePort) -> InstallationHealth | None:
        return from_record(port.health_store.get_installation(self._app, self.instance_id))

    async def arun(self, port: HealthStorePort) -> InstallationHealth | None:
        record = await port.health_store.aget_installation(self._app, self.instance_id)
        return from_record(record)

    @property
    def _app(self) -> str:
        return health_app_id(self.app_id)


@attrs.frozen
class PutHealth(Op[bool]):
    """Write an installation's health (the newest ``updated_at`` wins); whether it was."""

    app_id: str
    health: InstallationHealth

    def run(self, port: HealthStorePort) -> bool:
        return port.health_store.put_installation(to_record(self.app_id, self.health))

    async def arun(self, port: HealthStorePort) -> bool:
        return await port.health_store.aput_installation(to_record(self.app_id, self.health))


@attrs.frozen
class ListHealth(Op["dict[str, InstallationHealth]"]):
    """Every stored health of ``app_id``'s installations, by instance id (one walk of
    the reserved records; the async twin walks in a worker thread)."""

    app_id: str

    def run(self, port: HealthStorePort) -> dict[str, InstallationHealth]:
        found = {}
        for record in port.health_store.iter_installations(
            health_app_id(self.app_id), include_removed=True
        ):
            health = from_record(record)
            if health is not None:
                found[health.instance_id] = health
        return found

    async def arun(self, port: HealthStorePort) -> dict[str, InstallationHealth]:
        return await asyncio.to_thread(self.run, port)
