"""Handling a Wix webhook: verify it, record what it says, tell the plugins.

The record is one flow (read the current installation, ask
``tokenbroker.wix.webhooks.records.apply`` for the new one, write it with the
store's compare-and-set, purge tokens on a removal), driven sync or async. The
installation is stored before the caller answers Wix; plugin hooks can be
deferred until after the answer, so a slow hook never makes Wix retry.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import attrs

from ..core.errors import ConfigError
from ..core.flow import Flow, run_async, run_sync
from ..core.ops import GetInstallation, PutInstallation
from ..core.protocols import Broker
from ..plugins.calls import call_hook
from ..wix.webhooks import records
from ..wix.webhooks.events import AppInstalled, AppRemoved, WebhookEvent
from .installations import Installations

if TYPE_CHECKING:
    from ..wix.webhooks.verify import WebhookVerifier


class SeenDeliveries:
    """Digests of the last deliveries of events that have no registry record to
    deduplicate them (paid-plan events, unknown types). In-process only."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, body: bytes) -> bool:
        digest = hashlib.sha256(body).digest()
        with self._lock:
            if digest in self._seen:
                self._seen.move_to_end(digest)
                return False
            self._seen[digest] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True


@attrs.frozen
class WebhookOutcome:
    """What handling one webhook did. ``news`` is False for a repeated or
    out-of-date delivery; ``hooks`` are the plugin calls still to make (empty
    once run, or when there was no news)."""

    event: WebhookEvent
    news: bool
    hooks: tuple[Callable[[], int], ...] = ()

    def run_hooks(self) -> int:
        """Call the plugin hooks; return how many implementations failed (logged)."""
        return sum(call() for call in self.hooks)


class Webhooks:
    """``broker.webhooks``: verification with the app's public key, and bookkeeping."""

    def __init__(
        self,
        *,
        app_id: str,
        public_key: str | None,
        installations: Installations,
        broker: Broker,
    ) -> None:
        self.app_id = app_id
        self._public_key = public_key
        self._installations = installations
        self._broker = broker  # handed to the event hooks
        self._verifier: WebhookVerifier | None = None
        self._seen = SeenDeliveries()

    @property
    def verifier(self) -> WebhookVerifier:
        """Checks webhook JWTs against the app's public key (``public_key=`` or
        ``TOKENBROKER_APP_PUBLIC_KEY``)."""
        if self._verifier is None:
            if not self._public_key:
                raise ConfigError(
                    "webhooks need the app's public key: set TOKENBROKER_APP_PUBLIC_KEY "
                    "(PEM, base64-wrapped PEM or a file path)"
                )
            try:
                from ..wix.webhooks.verify import WebhookVerifier  # noqa: PLC0415 - needs PyJWT
            except ImportError:
                raise ConfigError(
                    "webhooks need PyJWT; install it with: pip install 'tokenbroker[webhooks]'"
                ) from None
            self._verifier = WebhookVerifier(
                self._public_key, app_id=self.app_id, clock=self._installations.clock
            )
        return self._verifier

    def handle(self, body: bytes | str, *, defer_hooks: bool = False) -> WebhookOutcome:
        """Verify a Wix webhook body, record what it says, and tell the plugins.

        Raises ``WebhookRejected`` (with the HTTP status to answer) for anything
        unverifiable. The installation is stored before this returns; with
        ``defer_hooks=True`` the plugin hooks are left in ``outcome.hooks`` for
        the caller to run after answering Wix.
        """
        raw = body.encode() if isinstance(body, str) else body
        event = self.verifier.verify(raw)
        news = run_sync(self._record_flow(event, raw), self._installations)
        return self._outcome(event, news, defer_hooks)

    async def ahandle(self, body: bytes | str, *, defer_hooks: bool = False) -> WebhookOutcome:
        """The async twin of ``handle``; hooks run in a worker thread unless deferred."""
        raw = body.encode() if isinstance(body, str) else body
        event = self.verifier.verify(raw)
        news = await run_async(self._record_flow(event, raw), self._installations)
        outcome = self._outcome(event, news, defer_hooks=True)
        if not defer_hooks:
            await asyncio.to_thread(outcome.run_hooks)  # hooks are sync and may block
            return WebhookOutcome(event, news)
        return outcome

    def _record_flow(self, event: WebhookEvent, body: bytes) -> Flow[bool]:
        if not records.touches_registry(event):
            return self._seen.first_time(body)
        current = yield from GetInstallation(self.app_id, event.instance_id)
        change = records.apply(event, self.app_id, current)
        news = False
        if change is not None and change.record != current:
            written = yield from PutInstallation(change.record)
            news = written and change.news
            current = change.record if written else current
        if isinstance(event, AppRemoved) and current is not None and not current.active:
            # Every delivery of a removal purges, news or not: if an earlier purge
            # failed (and Wix was answered 503), its redelivery finishes the job.
            yield from self._installations.forget_flow(self._installations.key(event.instance_id))
        return news

    def _outcome(self, event: WebhookEvent, news: bool, defer_hooks: bool) -> WebhookOutcome:
        hooks: list[Callable[[], int]] = []
        if news:
            broker = self._broker
            if isinstance(event, AppInstalled):
                hooks.append(
                    partial(call_hook, "tokenbroker_app_installed", event=event, broker=broker)
                )
            elif isinstance(event, AppRemoved):
                hooks.append(
                    partial(call_hook, "tokenbroker_app_removed", event=event, broker=broker)
                )
            hooks.append(
                partial(call_hook, "tokenbroker_webhook_event", event=event, broker=broker)
            )
        outcome = WebhookOutcome(event, news, tuple(hooks))
        if defer_hooks:
            return outcome
        outcome.run_hooks()
        return WebhookOutcome(event, news)
