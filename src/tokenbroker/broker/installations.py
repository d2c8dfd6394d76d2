"""The installation registry of one app: add, remove, look up, list; sync and async.

Every operation is one flow of typed store ops (``tokenbroker.core.ops``),
driven by ``run_sync`` or ``run_async``: the async twins never block the loop.
It needs only a store and the app id, so the CLI's registry commands run
without the app secret.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final

import attrs

from ..core.clock import Clock, to_datetime
from ..core.flow import Flow, run_async, run_sync
from ..core.installation import Installation, InstallationStatus
from ..core.nearcache import NearCache
from ..core.ops import DeleteToken, GetInstallation, ListInstallations, PutInstallation
from ..core.protocols import Store
from ..core.token import TokenKey, validate_id

SETUP_PENDING: Final = "setup_pending"
"""The ``extra`` flag of an installation whose automatic finish-setup failed."""


class Installations:
    """The registry, as ``broker.installations``; ``broker.installations()`` lists it.

    ``key`` turns an instance id into the token key whose tokens a removal
    purges; ``near`` is the near cache to purge them from as well.
    """

    def __init__(
        self,
        *,
        app_id: str,
        store: Store,
        clock: Clock,
        key: Callable[[str], TokenKey],
        near: NearCache | None = None,
    ) -> None:
        self.app_id = app_id
        self.store = store  # the port the ops act on
        self.clock = clock
        self.key = key
        self.near = near

    def __repr__(self) -> str:
        return f"Installations(app_id={self.app_id!r}, store={self.store.url!r})"

    # -- flows ------------------------------------------------------------------------
    def _now(self) -> datetime:
        return to_datetime(self.clock.time())

    def add_flow(self, instance_id: str, fields: dict[str, Any]) -> Flow[Installation]:
        """The decisions of ``add`` and ``aadd``."""
        instance_id = validate_id(instance_id)
        current = yield from GetInstallation(self.app_id, instance_id)
        if current is not None and current.active:
            return current
        now = self._now()
        # A first manual record carries no event time, so the AppInstalled
        # webhook (with its iat) still counts as news when it arrives; re-adding
        # a removed installation is news of now.
        installation = Installation(
            app_id=self.app_id,
            instance_id=instance_id,
            installed_at=now,
            updated_at=None if current is None else now,
            **fields,
        )
        yield from PutInstallation(installation)
        return installation

    def forget_flow(self, key: TokenKey) -> Flow[None]:
        """Drop every token for ``key``: this process's near cache and the store."""
        if self.near is not None:
            self.near.discard(key)
        yield from DeleteToken(key)

    def remove_flow(self, instance_id: str) -> Flow[Installation | None]:
        """The decisions of ``remove`` and ``aremove``."""
        instance_id = validate_id(instance_id)
        current = yield from GetInstallation(self.app_id, instance_id)
        yield from self.forget_flow(self.key(instance_id))
        if current is None:
            return None
        if not current.active:
            return current
        now = self._now()
        removed = attrs.evolve(
            current, status=InstallationStatus.REMOVED, removed_at=now, updated_at=now
        )
        yield from PutInstallation(removed)
        return removed

    def record_setup_flow(self, instance_id: str) -> Flow[Installation]:
        """Note on the record that the installation's setup is finished."""
        now = self._now()
        current = yield from GetInstallation(self.app_id, instance_id)
        if current is None:
            current = Installation(
                app_id=self.app_id, instance_id=instance_id, installed_at=now, updated_at=now
            )
        extra = {k: v for k, v in current.extra.items() if k != SETUP_PENDING}
        updated = attrs.evolve(current, setup_finished_at=now, extra=extra)
        yield from PutInstallation(updated)
        return updated

    def mark_setup_pending_flow(self, instance_id: str) -> Flow[None]:
        """The decisions of ``mark_setup_pending`` and its twin."""
        current = yield from GetInstallation(self.app_id, instance_id)
        if current is not None and current.setup_finished_at is None:
            extra = {**current.extra, SETUP_PENDING: True}
            yield from PutInstallation(attrs.evolve(current, extra=extra))

    # -- sync -------------------------------------------------------------------------
    def add(self, instance_id: str, **fields: Any) -> Installation:
        """Record an installation (idempotent: adding a known one changes nothing)."""
        return run_sync(self.add_flow(instance_id, fields), self)

    def add_many(self, instance_ids: Iterable[str]) -> builtins.list[Installation]:
        """Record several installations (each idempotent)."""
        return [self.add(i) for i in instance_ids]

    def remove(self, instance_id: str) -> Installation | None:
        """Mark an installation removed and forget its tokens; ``None`` if unknown."""
        return run_sync(self.remove_flow(instance_id), self)

    def get(self, instance_id: str) -> Installation | None:
        """The installation's record, or ``None`` if it was never recorded."""
        return self.store.get_installation(self.app_id, validate_id(instance_id))

    def list(self, *, include_removed: bool = False) -> builtins.list[Installation]:
        """Every recorded installation, in instance-id order; removed ones on request."""
        return ListInstallations(self.app_id, include_removed).run(self)

    def __call__(self, *, include_removed: bool = False) -> builtins.list[Installation]:
        """``list``: so that ``broker.installations()`` reads as it always did."""
        return self.list(include_removed=include_removed)

    def record_setup(self, instance_id: str) -> Installation:
        """Note that the installation's setup is finished (``setup_finished_at``)."""
        return run_sync(self.record_setup_flow(instance_id), self)

    def mark_setup_pending(self, instance_id: str) -> None:
        """Flag the installation for ``retry_pending_setup`` (its finish-setup failed)."""
        run_sync(self.mark_setup_pending_flow(instance_id), self)

    # -- async ------------------------------------------------------------------------
    async def aadd(self, instance_id: str, **fields: Any) -> Installation:
        """The async twin of ``add``."""
        return await run_async(self.add_flow(instance_id, fields), self)

    async def aremove(self, instance_id: str) -> Installation | None:
        """The async twin of ``remove``."""
        return await run_async(self.remove_flow(instance_id), self)

    async def aget(self, instance_id: str) -> Installation | None:
        """The async twin of ``get``."""
        return await self.store.aget_installation(self.app_id, validate_id(instance_id))

    async def alist(self, *, include_removed: bool = False) -> builtins.list[Installation]:
        """The async twin of ``list`` (the store is walked in a worker thread)."""
        return await ListInstallations(self.app_id, include_removed).arun(self)

    async def arecord_setup(self, instance_id: str) -> Installation:
        """The async twin of ``record_setup``."""
        return await run_async(self.record_setup_flow(instance_id), self)

    async def amark_setup_pending(self, instance_id: str) -> None:
        """The async twin of ``mark_setup_pending``."""
        await run_async(self.mark_setup_pending_flow(instance_id), self)
