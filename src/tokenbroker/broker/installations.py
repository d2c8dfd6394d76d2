"""The installation registry of one app: add, remove, look up, list; sync and async.

Every operation is one flow of typed store ops (``tokenbroker.core.ops``),
driven by ``run_sync`` or ``run_async``: the async twins never block the loop.
It needs only a store and the app id, so the CLI's registry commands run
without the app secret.

It also reads each installation's health (``tokenbroker.core.health``) and keeps
the two changes of it that the registry decides: a removal makes an installation
dead, and adding it again (or an ``AppInstalled`` webhook) makes a dead one healthy.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final

import attrs

from ..core.clock import Clock, to_datetime
from ..core.errors import ConfigError
from ..core.flow import Flow, run_async, run_sync
from ..core.health import REMOVED, HealthState, InstallationHealth, is_reserved
from ..core.health_policy import after_removal, cleared, effective, reinstalled
from ..core.health_tracker import HealthListener
from ..core.installation import Installation, InstallationStatus
from ..core.nearcache import NearCache
from ..core.ops import (
    DeleteToken,
    GetHealth,
    GetInstallation,
    ListHealth,
    ListInstallations,
    PutHealth,
    PutInstallation,
)
from ..core.protocols import InstallationStore, Store
from ..core.token import TokenKey, validate_id
from ..plugins.calls import call_hook

SETUP_PENDING: Final = "setup_pending"
"""The ``extra`` flag of an installation whose automatic finish-setup failed."""

WithHealth = tuple[Installation, InstallationHealth]


def health_changed(
    app_id: str, instance_id: str, old: InstallationHealth, new: InstallationHealth
) -> None:
    """Tell the plugins that an installation's health changed state."""
    call_hook(
        "tokenbroker_installation_health_changed",
        app_id=app_id,
        instance_id=instance_id,
        old=old,
        new=new,
    )


def _state(value: HealthState | str | None) -> HealthState | None:
    if value is None or isinstance(value, HealthState):
        return value
    try:
        return HealthState(value)
    except ValueError:
        names = ", ".join(s.value for s in HealthState)
        raise ConfigError(f"health state must be one of {names}, not {value!r}") from None


class Installations:
    """The registry, as ``broker.installations``; ``broker.installations()`` lists it.

    ``key`` turns an instance id into the token key whose tokens a removal
    purges; ``near`` is the near cache to purge them from as well;
    ``on_health_changed(app_id, instance_id, old, new)`` is told when a removal or
    a re-add changes an installation's health (by default, the plugins' hook).
    """

    def __init__(
        self,
        *,
        app_id: str,
        store: Store,
        clock: Clock,
        key: Callable[[str], TokenKey],
        near: NearCache | None = None,
        on_health_changed: HealthListener = health_changed,
    ) -> None:
        if is_reserved(app_id):
            raise ConfigError(f"app id {app_id!r} is reserved for tokenbroker's own records")
        self.app_id = app_id
        self.store = store  # the port the ops act on
        self.clock = clock
        self.key = key
        self.near = near
        self.on_health_changed = on_health_changed

    @property
    def health_store(self) -> InstallationStore:
        """Where installation health is kept (the port of the health ops)."""
        return self.store

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
            yield from self.revive_flow(instance_id)
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
        yield from self.revive_flow(instance_id)
        return installation

    def forget_flow(self, key: TokenKey) -> Flow[None]:
        """Drop every token for ``key``: this process's near cache and the store; and
        once the registry records the installation removed, record it dead."""
        if self.near is not None:
            self.near.discard(key)
        yield from DeleteToken(key)
        record = yield from GetInstallation(self.app_id, key.instance_id)
        if record is not None and not record.active:
            yield from self._removed_flow(record)

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
        yield from self._removed_flow(removed)
        return removed

    def _removed_flow(self, record: Installation) -> Flow[None]:
        """Record a removed installation dead (once per removal)."""
        stored = yield from GetHealth(self.app_id, record.instance_id)
        current = stored if stored is not None else InstallationHealth(record.instance_id)
        if current.dead and current.dead_reason == REMOVED:
            return
        yield from self._set_health_flow(
            current, after_removal(current, self.clock.time(), record.updated_at)
        )

    def revive_flow(
        self, instance_id: str, record: Installation | None = None
    ) -> Flow[InstallationHealth]:
        """Make a dead installation healthy: it was installed again. Without ``record``
        (a re-add) unconditionally; with the registry record an ``AppInstalled``
        webhook just wrote, only if it is newer than the one the installation died
        with (a late delivery of an older install revives nothing). Its health,
        unchanged if it was not dead."""
        stored = yield from GetHealth(self.app_id, instance_id)
        current = stored if stored is not None else InstallationHealth(instance_id)
        if not current.dead or (record is not None and not reinstalled(current, record)):
            return current
        return (yield from self._set_health_flow(current, cleared(current, self.clock.time())))

    def reset_health_flow(self, instance_id: str) -> Flow[InstallationHealth]:
        """Make a failing or dead installation healthy, so that the next fetch asks Wix
        at once (an operator fixed what was wrong). A removed one stays refused: that
        is the registry's record, not its health."""
        instance_id = validate_id(instance_id)
        stored = yield from GetHealth(self.app_id, instance_id)
        current = stored if stored is not None else InstallationHealth(instance_id)
        if current.healthy:
            return current
        return (yield from self._set_health_flow(current, cleared(current, self.clock.time())))

    def _set_health_flow(
        self, old: InstallationHealth, new: InstallationHealth
    ) -> Flow[InstallationHealth]:
        written = yield from PutHealth(self.app_id, new)
        if written and old.state is not new.state:
            self.on_health_changed(self.app_id, new.instance_id, old, new)
        return new

    def health_flow(self, instance_id: str) -> Flow[InstallationHealth]:
        """The decisions of ``health`` and ``ahealth``."""
        instance_id = validate_id(instance_id)
        record = yield from GetInstallation(self.app_id, instance_id)
        stored = yield from GetHealth(self.app_id, instance_id)
        return effective(stored, record, instance_id)

    @staticmethod
    def _joined(
        found: builtins.list[Installation],
        healths: dict[str, InstallationHealth],
        state: HealthState | None,
    ) -> builtins.list[WithHealth]:
        pairs = [(i, effective(healths.get(i.instance_id), i, i.instance_id)) for i in found]
        return [p for p in pairs if state is None or p[1].state is state]

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

    def health(self, instance_id: str) -> InstallationHealth:
        """The installation's health: ``healthy`` (also when nothing is recorded),
        ``failing`` (backing off) or ``dead`` (not installed, or removed)."""
        return run_sync(self.health_flow(instance_id), self)

    def list_with_health(
        self, *, include_removed: bool = False, state: HealthState | str | None = None
    ) -> builtins.list[WithHealth]:
        """``(installation, health)`` pairs in instance-id order, only those in
        ``state`` when given (``"healthy"``, ``"failing"``, ``"dead"``)."""
        wanted = _state(state)
        found = ListInstallations(self.app_id, include_removed).run(self)
        return self._joined(found, ListHealth(self.app_id).run(self), wanted)

    def revive(self, instance_id: str) -> InstallationHealth:
        """Make a dead installation healthy (it was installed again); see ``revive_flow``."""
        return run_sync(self.revive_flow(validate_id(instance_id)), self)

    def reset_health(self, instance_id: str) -> InstallationHealth:
        """Forget that an installation is failing or dead: the next fetch asks Wix."""
        return run_sync(self.reset_health_flow(instance_id), self)

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

    async def ahealth(self, instance_id: str) -> InstallationHealth:
        """The async twin of ``health``."""
        return await run_async(self.health_flow(instance_id), self)

    async def alist_with_health(
        self, *, include_removed: bool = False, state: HealthState | str | None = None
    ) -> builtins.list[WithHealth]:
        """The async twin of ``list_with_health`` (the store is walked in a worker thread)."""
        wanted = _state(state)
        found = await ListInstallations(self.app_id, include_removed).arun(self)
        return self._joined(found, await ListHealth(self.app_id).arun(self), wanted)

    async def arevive(self, instance_id: str) -> InstallationHealth:
        """The async twin of ``revive``."""
        return await run_async(self.revive_flow(validate_id(instance_id)), self)

    async def areset_health(self, instance_id: str) -> InstallationHealth:
        """The async twin of ``reset_health``."""
        return await run_async(self.reset_health_flow(instance_id), self)

    async def amark_setup_pending(self, instance_id: str) -> None:
        """The async twin of ``mark_setup_pending``."""
        await run_async(self.mark_setup_pending_flow(instance_id), self)
