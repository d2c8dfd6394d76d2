"""The near cache: tokens kept inside the process, in front of the store.

A hit costs a dict lookup and one comparison with the clock. An entry is
served only while its token is fresh, and for at most ``max_age`` seconds
(60 by default) before the store is asked again, so news that reached the
store from another process (an uninstall purged the token) is seen within
that bound. From then on the engine decides; past the mandatory threshold an
entry is never served.
Bounded: when full, the oldest insertion is evicted (FIFO keeps hits
lock-free; an LRU would need a lock on every read).

Entries are kept twice, by ``TokenKey`` (the engine's view, and the insertion
order that eviction follows) and per provider and app by instance id
(``scope``): a broker is one app of one provider, so its hit path is one lookup
on the caller's own string, with no key to build or hash. Both views change
together, under the lock; reads take none.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from .token import Token, TokenKey


class Entry(float):
    """A kept token, read-only. The entry *is* its serve-until time (a ``float``): the
    token's own refresh time or ``max_age`` after it was kept, whichever comes first.

    Why a float: the hit path compares the clock with the entry itself, so a hit reads
    one object for its check and its token. A tuple holding a float is two objects, two
    cache lines; with 100,000 entries that second line is most of what a hit costs.
    ``refresh_at`` is the same time as an attribute, for readers that want the name.
    Always truthy (never test it as a number): ``if entry`` means "there is one".
    """

    __slots__ = ("expires_at", "must_refresh_at", "refresh_at", "token")
    token: Token
    refresh_at: float
    must_refresh_at: float
    expires_at: float

    def __new__(
        cls, token: Token, refresh_at: float, must_refresh_at: float, expires_at: float
    ) -> Entry:
        entry = super().__new__(cls, refresh_at)
        put = object.__setattr__
        put(entry, "token", token)
        put(entry, "refresh_at", refresh_at)
        put(entry, "must_refresh_at", must_refresh_at)
        put(entry, "expires_at", expires_at)
        return entry

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a near-cache entry is read-only (tried to set {name})")

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return (
            f"Entry(token={self.token!r}, refresh_at={self.refresh_at!r}, "
            f"must_refresh_at={self.must_refresh_at!r}, expires_at={self.expires_at!r})"
        )


class NearCache:
    __slots__ = ("_entries", "_lock", "_scopes", "max_age", "max_entries")

    def __init__(self, max_entries: int = 100_000, max_age: float = 60.0) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._entries: dict[TokenKey, Entry] = {}
        self._scopes: dict[tuple[str, str], dict[str, Entry]] = {}
        self._lock = threading.Lock()

    def get(self, key: TokenKey) -> Entry | None:
        return self._entries.get(key)

    def scope(self, provider: str, app_id: str) -> Mapping[str, Entry]:
        """The live entries of one provider's app, by instance id, for reading only.

        The same mapping for as long as the cache lives (``clear`` empties it), so a
        caller may keep it and read it without a lock, as ``get`` does. Only ids that
        came in through a ``TokenKey`` (validated by whoever built it) are in it.
        """
        with self._lock:
            return self._scope(provider, app_id)

    def _scope(self, provider: str, app_id: str) -> dict[str, Entry]:
        scope = self._scopes.get((provider, app_id))
        if scope is None:
            scope = self._scopes[provider, app_id] = {}
        return scope

    def put(self, token: Token, thresholds: tuple[float, float, float], now: float) -> None:
        refresh_at, must_refresh_at, expires_at = thresholds
        # "serve until": the token's own refresh time, or max_age from now
        entry = Entry(token, min(refresh_at, now + self.max_age), must_refresh_at, expires_at)
        key = token.key
        with self._lock:
            entries = self._entries
            current = entries.get(key)
            if current is not None and current.token.obtained_at > token.obtained_at:
                return
            if current is None:
                while len(entries) >= self.max_entries:
                    self._drop(next(iter(entries)))
            entries[key] = entry
            self._scope(key.provider, key.app_id)[key.instance_id] = entry

    def _drop(self, key: TokenKey) -> None:
        """Forget ``key`` in both views (the lock is held)."""
        del self._entries[key]
        scope = self._scopes.get((key.provider, key.app_id))
        if scope is not None:
            scope.pop(key.instance_id, None)

    def discard(self, key: TokenKey, *, only: str | None = None) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and (only is None or entry.token.access_token == only):
                self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            for scope in self._scopes.values():
                scope.clear()  # emptied, not replaced: brokers keep reading these

    def __len__(self) -> int:
        return len(self._entries)
