"""``broker.wix``: Wix's app APIs for one installation, and the setup bookkeeping.

Finishing setup sends ``APP_FINISHED_CONFIGURATION`` and then notes it on the
installation's record; both steps are one flow, so the async twin never
touches the store on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import httpx2

from ..core.errors import ConfigError, TokenBrokerError
from ..core.flow import Flow, Op, run_async, run_sync
from ..core.installation import Installation
from ..core.ops import ListInstallations
from ..core.protocols import Store, TokenProvider
from ..wix.provider import WixProvider
from .installations import SETUP_PENDING, Installations

log = logging.getLogger("tokenbroker")


@attrs.frozen
class _SendFinished(Op[None]):
    auth: httpx2.Auth

    def run(self, port: WixApps) -> None:
        port.provider.send_finished_configuration(self.auth)

    async def arun(self, port: WixApps) -> None:
        await port.provider.asend_finished_configuration(self.auth)


class WixApps:
    """Send BI Event and Get App Instance with the installation's own token."""

    def __init__(
        self,
        *,
        provider: TokenProvider,
        installations: Installations,
        auth: Callable[[str], httpx2.Auth],
    ) -> None:
        self._provider = provider
        self._installations = installations
        self._auth = auth

    @property
    def provider(self) -> WixProvider:
        """The Wix provider (a ``ConfigError`` for any other provider)."""
        if not isinstance(self._provider, WixProvider):
            raise ConfigError(f"provider {self._provider.name!r} has no Wix app API")
        return self._provider

    @property
    def store(self) -> Store:
        return self._installations.store

    # -- finish setup --------------------------------------------------------------------
    def _finish_flow(self, instance_id: str) -> Flow[Installation]:
        yield from _SendFinished(self._auth(instance_id))
        return (yield from self._installations.record_setup_flow(instance_id))

    def finish_setup(self, instance_id: str) -> Installation:
        """Tell Wix the installation needs no more setup (``APP_FINISHED_CONFIGURATION``)
        and record it on the installation."""
        self.provider  # noqa: B018 - refuse before sending anything
        return run_sync(self._finish_flow(instance_id), self)

    async def afinish_setup(self, instance_id: str) -> Installation:
        """The async twin of ``finish_setup``."""
        self.provider  # noqa: B018
        return await run_async(self._finish_flow(instance_id), self)

    def _retry_flow(self) -> Flow[list[str]]:
        done = []
        installations = yield from ListInstallations(self._installations.app_id)
        for inst in installations:
            if inst.extra.get(SETUP_PENDING) and inst.setup_finished_at is None:
                try:
                    yield from self._finish_flow(inst.instance_id)
                except TokenBrokerError as exc:
                    log.warning("finish-setup for %s still failing: %s", inst.instance_id, exc)
                else:
                    done.append(inst.instance_id)
        return done

    def retry_pending_setup(self) -> list[str]:
        """Send ``APP_FINISHED_CONFIGURATION`` for installations whose automatic
        finish-setup failed earlier; returns the instance ids now done."""
        self.provider  # noqa: B018
        return run_sync(self._retry_flow(), self)

    async def aretry_pending_setup(self) -> list[str]:
        """The async twin of ``retry_pending_setup``."""
        self.provider  # noqa: B018
        return await run_async(self._retry_flow(), self)

    # -- Get App Instance -------------------------------------------------------------------
    def app_instance(self, instance_id: str) -> dict[str, Any]:
        """Wix's Get App Instance for the installation."""
        return self.provider.get_app_instance(self._auth(instance_id))

    async def aapp_instance(self, instance_id: str) -> dict[str, Any]:
        """The async twin of ``app_instance``."""
        return await self.provider.aget_app_instance(self._auth(instance_id))
