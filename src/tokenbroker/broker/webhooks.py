"""Handling a Wix webhook: verify it, deduplicate it, record what it says, tell the plugins.

One flow, driven sync or async: claim the delivery fleet-wide
(``tokenbroker.wix.webhooks.dedup``: a duplicate stops here), then record it:
an install or removal through ``tokenbroker.wix.webhooks.records`` (read the
current installation, write the new one with the store's compare-and-set, purge
tokens on a removal), a paid-plan event through
``tokenbroker.wix.webhooks.plans`` (the record's ``extra["plan"]``). The
delivery is marked done only once it is recorded; if recording fails, the claim
is let go so that Wix's resend is handled. The installation is stored before
the caller answers Wix; plugin hooks can be deferred until after the answer, so
a slow hook never makes Wix retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Final

import attrs

from ..core.errors import ConfigError
from ..core.flow import Flow, run_async, run_sync
from ..core.metrics import WEBHOOKS
from ..core.ops import GetInstallation, PutInstallation
from ..core.protocols import Broker
from ..core.tracing import span
from ..plugins.calls import call_hook
from ..wix.errors import WebhookRejected
from ..wix.webhooks import plans, records
from ..wix.webhooks.dedup import DEDUP_TTL, DEFAULT_CACHE_SIZE, Claim, Deduplicator, delivery_id
from ..wix.webhooks.events import PlanEvent, WebhookEvent
from .installations import Installations

if TYPE_CHECKING:
    from ..wix.webhooks.verify import WebhookVerifier

log = logging.getLogger("tokenbroker.webhooks")

_PLAN_WRITE_ATTEMPTS: Final = 3


@attrs.frozen
class WebhookOutcome:
    """What handling one webhook did.

    ``news`` is False for a duplicate (``duplicate`` says so: the same delivery,
    or the same event id, was already recorded by some process sharing the store)
    and for an out-of-date install or removal. ``hooks`` are the plugin calls
    still to make (empty once run, or when there was no news); ``failed_hooks``
    counts the implementations that raised when they were run here.
    """

    event: WebhookEvent
    news: bool
    hooks: tuple[Callable[[], int], ...] = ()
    duplicate: bool = False
    failed_hooks: int = 0
    on_hook_failure: Callable[[], None] | None = attrs.field(
        default=None, repr=False, eq=False, kw_only=True
    )
    """Called when a hook failed: lets the delivery go, so a resend is handled again."""

    def run_hooks(self) -> int:
        """Call the plugin hooks; return how many implementations failed (logged).

        If any failed, the delivery's done mark is let go: a resend of it (Wix
        resends whatever was not answered 200) fires the hooks again.
        """
        failed = sum(call() for call in self.hooks)
        if failed and self.on_hook_failure is not None:
            self.on_hook_failure()
        return failed


class Webhooks:
    """``broker.webhooks``: verification with the app's public key, and bookkeeping.

    ``dedup_ttl`` is how long a recorded delivery is remembered fleet-wide (at least
    Wix's 47-hour resend schedule, by default 48 h); ``dedup_cache_size`` how many
    this process also remembers itself, to spare the store the round trips.
    """

    def __init__(
        self,
        *,
        app_id: str,
        public_key: str | None,
        installations: Installations,
        broker: Broker,
        dedup_ttl: float = DEDUP_TTL,
        dedup_cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.app_id = app_id
        self._public_key = public_key
        self._installations = installations
        self._broker = broker  # handed to the event hooks
        self._verifier: WebhookVerifier | None = None
        self.dedup = Deduplicator(
            app_id=app_id,
            clock=installations.clock.time,
            ttl=dedup_ttl,
            cache_size=dedup_cache_size,
        )

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
        unverifiable, and with 409 while another process is recording the same
        delivery (Wix resends it later). The installation is stored before this
        returns; with ``defer_hooks=True`` the plugin hooks are left in
        ``outcome.hooks`` for the caller to run after answering Wix.
        """
        raw = body.encode() if isinstance(body, str) else body
        with span("tokenbroker.webhook", app=self.app_id) as current:
            event = self._verified(raw)
            current.set_attribute("event_type", event.event_type)
            current.set_attribute("instance", event.instance_id)
            try:
                news, held = run_sync(self._handle_flow(event, raw), self._installations)
            except Exception:
                self._count(event.event_type, "error")
                raise
            outcome = self._outcome(event, news, held)
            current.set_attribute("outcome", self._counted(outcome))
        if defer_hooks:
            return outcome
        return self._ran(outcome, outcome.run_hooks())

    async def ahandle(self, body: bytes | str, *, defer_hooks: bool = False) -> WebhookOutcome:
        """The async twin of ``handle``; hooks run in a worker thread unless deferred."""
        raw = body.encode() if isinstance(body, str) else body
        with span("tokenbroker.webhook", app=self.app_id) as current:
            event = self._verified(raw)
            current.set_attribute("event_type", event.event_type)
            current.set_attribute("instance", event.instance_id)
            try:
                news, held = await run_async(self._handle_flow(event, raw), self._installations)
            except Exception:
                self._count(event.event_type, "error")
                raise
            outcome = self._outcome(event, news, held)
            current.set_attribute("outcome", self._counted(outcome))
        if defer_hooks:
            return outcome
        failed = await asyncio.to_thread(outcome.run_hooks)  # hooks are sync and may block
        return self._ran(outcome, failed)

    # -- what it reports (tokenbroker_webhooks_total) ---------------------------------------
    def _count(self, event_type: str, outcome: str) -> None:
        WEBHOOKS.inc((self.app_id, event_type, outcome))

    def _verified(self, raw: bytes) -> WebhookEvent:
        try:
            return self.verifier.verify(raw)
        except WebhookRejected:
            # unverified: its event type is not to be trusted (nor to become a label)
            self._count("unknown", "rejected")
            raise

    def _counted(self, outcome: WebhookOutcome) -> str:
        """Count a handled webhook; return its outcome label."""
        label = "accepted" if outcome.news else "duplicate" if outcome.duplicate else "stale"
        self._count(outcome.event.event_type, label)
        return label

    # -- flows ----------------------------------------------------------------------------
    def _handle_flow(self, event: WebhookEvent, body: bytes) -> Flow[tuple[bool, Claim | None]]:
        held = yield from self.dedup.claim_flow(delivery_id(event, body))
        if held is None:
            log.debug("duplicate webhook: %s for instance %s", event.event_type, event.instance_id)
            return False, None
        try:
            news = yield from self._record_flow(event)
        except GeneratorExit:
            raise
        except BaseException:
            yield from self.dedup.abandon_flow(held)  # Wix's resend must be handled
            raise
        held = yield from self.dedup.settle_flow(held)
        return news, held

    def _record_flow(self, event: WebhookEvent) -> Flow[bool]:
        if isinstance(event, PlanEvent):
            yield from self._plan_flow(event)
            return True
        if not records.touches_registry(event):
            return True
        current = yield from GetInstallation(self.app_id, event.instance_id)
        change = records.apply(event, self.app_id, current)
        news = False
        if change is not None and change.record != current:
            written = yield from PutInstallation(change.record)
            news = written and change.news
            current = change.record if written else current
        if records.removes(event) and current is not None and not current.active:
            # Every delivery of a removal purges, news or not: if an earlier purge
            # failed (and Wix was answered 503), its redelivery finishes the job.
            yield from self._installations.forget_flow(self._installations.key(event.instance_id))
        elif not records.removes(event) and current is not None and current.active:
            # An install newer than an installation's death brings it back (its health).
            yield from self._installations.revive_flow(event.instance_id, current)
        return news

    def _plan_flow(self, event: PlanEvent) -> Flow[None]:
        # The store keeps the newest updated_at, which a plan leaves as it is: a write
        # refused because an install or removal landed meanwhile is tried again on it.
        for _ in range(_PLAN_WRITE_ATTEMPTS):
            current = yield from GetInstallation(self.app_id, event.instance_id)
            record = plans.apply_plan(event, self.app_id, current)
            if record is None:
                return
            written = yield from PutInstallation(record)
            if written:
                return
        log.warning(
            "%s for instance %s not recorded: the record kept changing",
            event.event_type,
            event.instance_id,
        )

    # -- hooks ----------------------------------------------------------------------------
    def _outcome(self, event: WebhookEvent, news: bool, held: Claim | None) -> WebhookOutcome:
        hooks: list[Callable[[], int]] = []
        if news:
            broker = self._broker
            if records.touches_registry(event):
                removal = records.removes(event)
                name = "tokenbroker_app_removed" if removal else "tokenbroker_app_installed"
                hooks.append(partial(call_hook, name, event=event, broker=broker))
            hooks.append(
                partial(call_hook, "tokenbroker_webhook_event", event=event, broker=broker)
            )
        release = None if held is None else partial(self._abandon, held)
        return WebhookOutcome(
            event, news, tuple(hooks), duplicate=held is None, on_hook_failure=release
        )

    def _abandon(self, held: Claim) -> None:
        try:
            run_sync(self.dedup.abandon_flow(held), self._installations)
        except Exception:  # abandon_flow logs store failures; this is for the unforeseen
            log.exception("letting a webhook delivery go after its hooks failed failed")

    @staticmethod
    def _ran(outcome: WebhookOutcome, failed: int) -> WebhookOutcome:
        return WebhookOutcome(
            outcome.event, outcome.news, duplicate=outcome.duplicate, failed_hooks=failed
        )
