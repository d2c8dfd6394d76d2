"""The engine's side of installation health: read before a fetch, written after one.

Nothing here runs on the token hit path (near cache, or a fresh token in the store):
the engine asks the tracker only once it has decided to fetch from the provider. A
fetch reads the health (twice: before taking the fleet-wide lease, so that a
back-off costs no lease, and again holding it, so that a replica that failed a
moment ago is seen), and writes it after the answer: after a failure that counts,
and after each minted token (``last_token_at``, ``next_refresh_at``: once per token
lifetime). The bulk refresher reads health with its listing and writes it only when
it changes (``failed_at``, ``recovered``), not after every success. Every read and
write goes through the engine's ``StoreHealth`` guard, so a store outage degrades as
the token path does, and a write that fails is logged and never masks the fetch's
own outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from .clock import Clock
from .degraded import StoreHealth
from .errors import ProviderError, StorageError
from .flow import Flow
from .health import InstallationHealth
from .health_policy import (
    Backoff,
    after_failure,
    after_success,
    cleared,
    reinstalled,
    remembered,
)
from .installation import Installation
from .ops import GetHealth, PutHealth
from .token import Token, TokenKey

log = logging.getLogger("tokenbroker")

HealthListener = Callable[[str, str, InstallationHealth, InstallationHealth], None]
"""``(app_id, instance_id, old, new)``: called once per change of state."""


def _ignore(*_: object) -> None:
    """The default listener."""


class HealthTracker:
    """Reads and writes installation health for the engine; tells ``on_changed`` of
    each change of state (healthy, failing, dead), not of each failure.

    Not ``active`` (an engine without a registry), it keeps nothing: ``current``
    is ``None`` and the other flows do nothing.
    """

    def __init__(
        self,
        backoff: Backoff,
        clock: Clock,
        guard: StoreHealth,
        on_changed: HealthListener = _ignore,
        *,
        active: bool = True,
    ) -> None:
        self.backoff = backoff
        self.clock = clock
        self.guard = guard
        self.on_changed = on_changed
        self.active = active

    def current(
        self, key: TokenKey, record: Installation | None
    ) -> Flow[InstallationHealth | None]:
        """The installation's health; a dead one that ``record`` shows installed again
        is made healthy here (and the change told)."""
        if not self.active:
            return None
        stored: InstallationHealth | None = yield from self.guard.guard(
            GetHealth(key.app_id, key.instance_id), None
        )
        health = stored if stored is not None else InstallationHealth(key.instance_id)
        if reinstalled(health, record):
            health = yield from self.write(key, health, cleared(health, self.clock.time()))
        return health

    def refusal(self, health: InstallationHealth | None) -> ProviderError | None:
        """The remembered error to raise instead of asking the provider, if any."""
        now = self.clock.time()
        if health is None or not health.backing_off(now):
            return None
        return remembered(health, now)

    def failed(
        self,
        key: TokenKey,
        current: InstallationHealth | None,
        error: BaseException,
        record: Installation | None,
    ) -> Flow[None]:
        """Note a failed fetch, if ``error`` says something about the installation."""
        registry_at = record.updated_at if record is not None else None
        yield from self.failed_at(key, current, error, registry_at)

    def failed_at(
        self,
        key: TokenKey,
        current: InstallationHealth | None,
        error: BaseException,
        registry_at: datetime | None,
    ) -> Flow[None]:
        """``failed``, given the registry record's ``updated_at`` rather than the
        record (the bulk refresher's listing reads only that)."""
        if current is None:
            return
        new = after_failure(current, error, self.clock.time(), self.backoff, registry_at)
        if new is not None:
            yield from self.write(key, current, new)

    def succeeded(
        self, key: TokenKey, current: InstallationHealth | None, token: Token
    ) -> Flow[None]:
        """Note a minted token."""
        if current is None:
            return
        yield from self.write(key, current, after_success(current, token, self.clock.time()))

    def recovered(
        self, key: TokenKey, current: InstallationHealth | None, token: Token
    ) -> Flow[None]:
        """Note a minted token only if that changes the record: a success after
        failures (the bulk refresher writes no health for each success)."""
        if current is not None and not current.healthy:
            yield from self.succeeded(key, current, token)

    def write(
        self, key: TokenKey, old: InstallationHealth, new: InstallationHealth
    ) -> Flow[InstallationHealth]:
        """Store ``new``; tell the listener when the state changed and the write took
        (a lost race means another replica wrote, and told, a newer change)."""
        try:
            written = yield from self.guard.guard(PutHealth(key.app_id, new), False)
        except StorageError as exc:
            log.warning("could not record the health of %s: %s", key, exc)
            return new
        if written and old.state is not new.state:
            _log_change(key, new)
            self.on_changed(key.app_id, key.instance_id, old, new)
        return new


def _log_change(key: TokenKey, new: InstallationHealth) -> None:
    if new.healthy:
        log.info("installation %s is healthy again", key)
        return
    error = f": {new.error.message}" if new.error is not None else ""
    if new.failing and new.next_attempt is not None:
        when = f"; Wix is asked again at {new.next_attempt.isoformat(timespec='seconds')}"
    else:
        when = "; no token is fetched for it until it is installed again"
    log.warning("installation %s is now %s%s%s", key, new.state.value, error, when)
