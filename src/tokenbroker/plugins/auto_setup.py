"""Automatic finish-setup: a built-in plugin on the ``tokenbroker_app_installed`` hook.

With ``TOKENBROKER_AUTO_FINISH_SETUP=true`` (``TokenBroker(auto_finish_setup=True)``),
each new installation gets ``APP_FINISHED_CONFIGURATION``, for apps that need no
setup from the site owner. If Wix cannot be reached, the installation is marked
``setup_pending`` and ``broker.wix.retry_pending_setup()`` sends it later: the web
service does so every minute, and ``tokenbroker finish-setup --pending`` on demand.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..core.errors import TokenBrokerError
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from ..core.protocols import Broker, Event

log = logging.getLogger("tokenbroker.plugins")


@hookimpl
def tokenbroker_app_installed(event: Event, broker: Broker) -> None:
    if not broker.auto_finish_setup:
        return
    try:
        broker.finish_setup(event.instance_id)
    except TokenBrokerError as exc:
        log.warning("automatic finish-setup for %s failed, will retry: %s", event.instance_id, exc)
        broker.mark_setup_pending(event.instance_id)
