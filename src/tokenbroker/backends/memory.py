"""``memory://``: a bounded, thread-safe store inside one process.

Useful for tests, scripts and single-process apps. Nothing is shared with
other processes, so the broker puts no near cache in front of it. Options in
the URL: ``memory://?max_tokens=10000`` (least recently used tokens are
evicted first; installations are never evicted).

Leases that lapse are dropped in sweeps: a key that is never acquired again
(a webhook delivery's deduplication mark, say) would otherwise stay in the map
for good. A sweep runs when an acquire finds the map past a threshold that
doubles with what survives, so it costs amortised O(1) per acquire and the map
holds at most about twice the leases that were live at the last sweep (or
``LEASE_SWEEP_MIN``).

Leases are fenced (``tokenbroker.core.fencing``): a released lease stays in the
map, marked free, so that the next one on its key gets a later fence; the sweep
drops released ones like lapsed ones. Each token keeps the fence it was
written with, and every new fence is above all this store granted before, so a
swept key stays fenced even if the clock steps back.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Final
from urllib.parse import parse_qs, urlsplit

import attrs

from ..core.clock import Clock, SystemClock
from ..core.errors import ConfigError
from ..core.fencing import next_fence
from ..core.installation import Installation
from ..core.protocols import Lease
from ..core.token import Token, TokenKey
from .base import installation_wins

DEFAULT_MAX_TOKENS: Final = 100_000
LEASE_SWEEP_MIN: Final = 1024
"""The fewest leases the map holds before an acquire sweeps out the lapsed ones."""


class MemoryStore:
    """Tokens, leases and installations in dictionaries behind one lock.

    ``clock`` dates the leases (the system clock unless a test moves its own).
    """

    shared = False

    def __init__(
        self,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        url: str = "memory://",
        clock: Clock | None = None,
    ) -> None:
        if max_tokens < 1:
            raise ConfigError(f"memory store max_tokens must be at least 1, not {max_tokens}")
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(
                f"memory store clock must have a time() method, not {type(clock).__name__}"
            )
        self.url = url
        self._max_tokens = max_tokens
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.Lock()
        # each token with the fence it was written with
        self._tokens: OrderedDict[TokenKey, tuple[Token, int]] = OrderedDict()
        # released leases stay (owner "", expires_at 0) to remember their fence
        self._leases: dict[TokenKey, Lease] = {}
        self._sweep_above = LEASE_SWEEP_MIN
        self._last_fence = 0
        self._installations: dict[tuple[str, str], Installation] = {}

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        """``memory://`` or ``memory://?max_tokens=N``."""
        query = parse_qs(urlsplit(url).query)
        raw = query.pop("max_tokens", [str(DEFAULT_MAX_TOKENS)])[-1]
        if query:
            raise ConfigError(f"unknown memory store option(s): {', '.join(sorted(query))}")
        try:
            max_tokens = int(raw)
        except ValueError:
            raise ConfigError(
                f"memory store max_tokens must be a whole number, not {raw!r}"
            ) from None
        return cls(max_tokens=max_tokens, url=url)

    def __repr__(self) -> str:
        return f"MemoryStore(url={self.url!r}, tokens={len(self._tokens)})"

    # tokens
    def get_token(self, key: TokenKey) -> Token | None:
        with self._lock:
            found = self._tokens.get(key)
            if found is None:
                return None
            self._tokens.move_to_end(key)
            return found[0]

    def put_token(self, token: Token, *, fence: int = 0) -> bool:
        with self._lock:
            found = self._tokens.get(token.key)
            stored, stored_fence = found if found is not None else (None, 0)
            if fence:
                held = self._leases.get(token.key)
                if stored_fence > fence or (held is not None and held.fence > fence):
                    return False
            else:
                fence = stored_fence  # an unfenced write keeps what the key had
            if stored is not None and stored.obtained_at > token.obtained_at:
                return False
            self._tokens[token.key] = (token, fence)
            self._tokens.move_to_end(token.key)
            while len(self._tokens) > self._max_tokens:
                self._tokens.popitem(last=False)
            return True

    def delete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        with self._lock:
            found = self._tokens.get(key)
            if found is None or (only is not None and found[0].access_token != only):
                return False
            del self._tokens[key]
            return True

    def acquire_lease(self, key: TokenKey, ttl: float) -> Lease | None:
        now = self._clock.time()
        with self._lock:
            held = self._leases.get(key)
            if held is not None and held.expires_at > now:
                return None
            found = self._tokens.get(key)
            previous = max(0 if held is None else held.fence, 0 if found is None else found[1])
            # Above every fence granted here: a swept key stays fenced if the clock steps back.
            fence = self._last_fence = next_fence(max(previous, self._last_fence), now)
            lease = Lease(key=key, owner=secrets.token_hex(8), expires_at=now + ttl, fence=fence)
            self._leases[key] = lease
            if len(self._leases) > self._sweep_above:
                self._sweep_leases(now)
            return lease

    def _sweep_leases(self, now: float) -> None:
        """Drop the lapsed leases (under the lock).

        The next sweep waits until the map holds twice what survived (at least
        ``LEASE_SWEEP_MIN``): that takes at least half as many new leases as
        that sweep will read entries, so sweeping costs O(1) per acquire,
        amortised, and the map never holds more than one entry past
        ``max(LEASE_SWEEP_MIN, 2 * survivors of the last sweep)``.
        """
        self._leases = {key: held for key, held in self._leases.items() if held.expires_at > now}
        self._sweep_above = max(LEASE_SWEEP_MIN, 2 * len(self._leases))

    def renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        now = self._clock.time()
        with self._lock:
            held = self._leases.get(lease.key)
            if (
                held is None
                or held.owner != lease.owner
                or held.fence != lease.fence
                or held.expires_at <= now
            ):
                return None
            renewed = Lease(key=lease.key, owner=held.owner, expires_at=now + ttl, fence=held.fence)
            self._leases[lease.key] = renewed
            return renewed

    def release_lease(self, lease: Lease) -> bool:
        with self._lock:
            held = self._leases.get(lease.key)
            if held is None or not held.owner or held.owner != lease.owner:
                return False
            # kept, free, for its fence: the sweep drops it
            self._leases[lease.key] = attrs.evolve(held, owner="", expires_at=0.0)
            return True

    # installations
    def get_installation(self, app_id: str, instance_id: str) -> Installation | None:
        with self._lock:
            return self._installations.get((app_id, instance_id))

    def put_installation(self, installation: Installation) -> bool:
        ident = (installation.app_id, installation.instance_id)
        with self._lock:
            if not installation_wins(installation, self._installations.get(ident)):
                return False
            self._installations[ident] = installation
            return True

    def iter_installations(
        self, app_id: str, *, include_removed: bool = False
    ) -> Iterator[Installation]:
        with self._lock:
            found = [
                inst
                for (app, _), inst in sorted(self._installations.items())
                if app == app_id and (include_removed or inst.active)
            ]
        return iter(found)

    def close(self) -> None:
        """Nothing to release; the data lives as long as the object."""

    # No I/O happens here, so the async twins call straight through.
    async def aget_token(self, key: TokenKey) -> Token | None:
        return self.get_token(key)

    async def aput_token(self, token: Token, *, fence: int = 0) -> bool:
        return self.put_token(token, fence=fence)

    async def adelete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        return self.delete_token(key, only=only)

    async def aacquire_lease(self, key: TokenKey, ttl: float) -> Lease | None:
        return self.acquire_lease(key, ttl)

    async def arenew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        return self.renew_lease(lease, ttl)

    async def arelease_lease(self, lease: Lease) -> bool:
        return self.release_lease(lease)

    async def aget_installation(self, app_id: str, instance_id: str) -> Installation | None:
        return self.get_installation(app_id, instance_id)

    async def aput_installation(self, installation: Installation) -> bool:
        return self.put_installation(installation)

    async def aclose(self) -> None:
        self.close()
