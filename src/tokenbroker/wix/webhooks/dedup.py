"""Deduplicating webhook deliveries across every process that shares the store.

Wix delivers at least once: it resends a delivery that failed (a non-200, or no
answer within 1250 ms) up to 12 times over about 47 hours (documented: "Webhook
Resend Policy", dev.wix.com/docs/rest/articles/getting-started/webhook-resend-policy),
and a standardized event carries an ``id`` documented as the way to "ignore
duplicate events". A delivery is named by that id when it has one, else by the
SHA-256 of its body (the JWT: a resend of one delivery is the same bytes,
assumed), per app.

The mark lives in the store, so every replica sees it, and uses the one
primitive every backend has: the lease, an atomic set-if-absent with a TTL
(memory, SQL, Redis). Two leases per delivery, under reserved app ids that no
token key uses (``RESERVED``):

* the **claim**, for ``CLAIM_TTL`` (30 s) while this process records the
  delivery. Another process that finds it held answers 409 ("delivery in
  progress"): Wix resends after a minute, by when the claim is settled. A
  process that dies mid-way leaves a claim that lapses before that resend.
* the **done** mark, for ``DEDUP_TTL`` (48 h), set only once the delivery is
  recorded. Looking for it is itself an acquire (with a 1 s TTL, released at
  once): a found mark means a duplicate, answered 200 with no news.

So a failure before the delivery is recorded (the store fails, the process
dies) never leaves a mark that would swallow Wix's resend; a mark that cannot
be set after recording only makes a later duplicate be recorded again (the
registry's own ordering keeps that harmless). A small bounded cache of the
deliveries this process settled saves the round trips for repeats it sees
itself; it never holds a delivery that another process merely had in progress.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import attrs

from ...core.errors import ConfigError, TokenBrokerError
from ...core.flow import Flow
from ...core.ops import AcquireLease, ReleaseLease
from ...core.protocols import Lease
from ...core.token import MAX_ID_LENGTH, TokenKey
from ..errors import WebhookRejected
from .events import DomainEvent, WebhookEvent

log = logging.getLogger("tokenbroker.webhooks")

DEDUP_TTL: Final = 48 * 3600.0 + 600.0
"""How long a recorded delivery is remembered: 48 h and 10 min, longer than Wix's
resend schedule (1 min + 10 min + 1 h + 3 x 2 h + 3 x 4 h + 2 x 8 h + 12 h, about 47 h
12 min, documented) and than the verifier's ``RETRY_HORIZON`` plus its default
leeway, past which an event without ``exp`` is refused as stale anyway."""
CLAIM_TTL: Final = 30.0
"""How long one process may take to record a delivery before another may; shorter
than the minute Wix waits before its first resend."""
PROBE_TTL: Final = 1.0
"""The TTL of the lease that looks for the done mark (released at once)."""
DEFAULT_CACHE_SIZE: Final = 10_000

RESERVED: Final = "tokenbroker~event"
"""The provider and app id of the done marks; claims use ``RESERVED + "~claim"``.
No token key has them (Wix app ids are GUIDs), so they never meet a token lease."""
_CLAIMS: Final = RESERVED + "~claim"


def delivery_id(event: WebhookEvent, body: bytes) -> str:
    """What names a delivery: Wix's event id, else the digest of the JWT."""
    if isinstance(event, DomainEvent) and event.id is not None:
        return f"id:{event.id}"
    return "jwt:" + hashlib.sha256(body.strip()).hexdigest()


@attrs.frozen
class Claim:
    """This process's hold on one delivery while it records it."""

    ident: str
    claim: Lease
    done: Lease | None = None


class Deduplicator:
    """The fleet-wide memory of recorded deliveries of one app (see the module).

    Its flows run on any port whose ``store`` has leases (``Installations``).
    ``clock`` dates the in-process cache, which holds ``cache_size`` deliveries at
    most, each for ``ttl`` seconds.
    """

    def __init__(
        self,
        *,
        app_id: str,
        clock: Callable[[], float],
        ttl: float = DEDUP_TTL,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            raise ConfigError(f"the deduplication ttl must be a number, not {type(ttl).__name__}")
        if not (math.isfinite(ttl) and ttl >= CLAIM_TTL):
            raise ConfigError(f"the deduplication ttl must be finite and at least {CLAIM_TTL:g} s")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ConfigError("the deduplication cache size must be a whole number >= 0")
        self.app_id = app_id
        self.ttl = float(ttl)
        self.cache_size = cache_size
        self._clock = clock
        self._settled: OrderedDict[str, float] = OrderedDict()  # ident -> forget after
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Deduplicator(app_id={self.app_id!r}, ttl={self.ttl!r})"

    # -- keys -------------------------------------------------------------------------
    def done_key(self, ident: str) -> TokenKey:
        """The store key of ``ident``'s done mark."""
        return TokenKey(RESERVED, RESERVED, self._instance(ident))

    def claim_key(self, ident: str) -> TokenKey:
        """The store key of ``ident``'s claim."""
        return TokenKey(_CLAIMS, _CLAIMS, self._instance(ident))

    def _instance(self, ident: str) -> str:
        name = f"{self.app_id}:{ident}"
        if len(name) > MAX_ID_LENGTH:  # the stores' key columns hold 256 characters
            name = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
        return name

    # -- flows ------------------------------------------------------------------------
    def claim_flow(self, ident: str) -> Flow[Claim | None]:
        """Hold ``ident`` for recording, or ``None`` if it is already recorded.

        Raises ``WebhookRejected(409)`` while another process holds it, and the
        store's errors as they come (nothing is left held then).
        """
        if self._known(ident):
            return None
        claim = yield from AcquireLease(self.claim_key(ident), CLAIM_TTL)
        if claim is None:
            raise WebhookRejected(409, "delivery in progress")
        try:
            probe = yield from AcquireLease(self.done_key(ident), PROBE_TTL)
            if probe is not None:
                yield from ReleaseLease(probe)
        except GeneratorExit:
            raise
        except BaseException:
            yield from _quietly(ReleaseLease(claim))
            raise
        if probe is None:  # done, by this process or another
            yield from _quietly(ReleaseLease(claim))
            self._remember(ident)
            return None
        return Claim(ident, claim)

    def settle_flow(self, held: Claim) -> Flow[Claim]:
        """``held`` is recorded: mark it done for ``ttl`` and let the claim go."""
        done: Lease | None = None
        try:
            done = yield from AcquireLease(self.done_key(held.ident), self.ttl)
        except TokenBrokerError as exc:
            log.warning("delivery recorded but not marked as such, a resend would be too: %s", exc)
        else:
            if done is None:
                log.warning("delivery recorded, but its done mark was already taken")
        yield from _quietly(ReleaseLease(held.claim))
        self._remember(held.ident)
        return attrs.evolve(held, done=done)

    def abandon_flow(self, held: Claim) -> Flow[None]:
        """Recording ``held`` failed (or its hooks did): forget it, so that Wix's
        resend is handled again. Release failures are logged; the leases lapse."""
        self._forget(held.ident)
        if held.done is not None:
            yield from _quietly(ReleaseLease(held.done))
        yield from _quietly(ReleaseLease(held.claim))

    # -- the in-process cache ----------------------------------------------------------
    def _known(self, ident: str) -> bool:
        now = self._clock()
        with self._lock:
            until = self._settled.get(ident)
            if until is None:
                return False
            if until <= now:
                del self._settled[ident]
                return False
            self._settled.move_to_end(ident)
            return True

    def _remember(self, ident: str) -> None:
        if self.cache_size == 0:
            return
        until = self._clock() + self.ttl
        with self._lock:
            self._settled[ident] = until
            self._settled.move_to_end(ident)
            while len(self._settled) > self.cache_size:
                self._settled.popitem(last=False)

    def _forget(self, ident: str) -> None:
        with self._lock:
            self._settled.pop(ident, None)


def _quietly(op: ReleaseLease) -> Flow[None]:
    """Release a lease; a store failure is logged, not raised (the lease lapses)."""
    try:
        yield from op
    except TokenBrokerError as exc:
        log.warning("could not release a webhook deduplication lease (it will lapse): %s", exc)
