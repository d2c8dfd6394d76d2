"""The near cache: tokens kept inside the process, in front of the store.

A hit costs a dict lookup and one comparison with the clock. An entry is
served only while its token is fresh, and for at most ``max_age`` seconds
(60 by default) before the store is asked again, so news that reached the
store from another process (an uninstall purged the token) is seen within
that bound. From then on the engine decides; past the mandatory threshold an
entry is never served.
Bounded: when full, the oldest insertion is evicted (FIFO keeps hits
lock-free; an LRU would need a lock on every read).
"""

from __future__ import annotations

import threading
from typing import NamedTuple

from .token import Token, TokenKey


class Entry(NamedTuple):
    token: Token
    refresh_at: float
    must_refresh_at: float
    expires_at: float


class NearCache:
    __slots__ = ("_entries", "_lock", "max_age", "max_entries")

    def __init__(self, max_entries: int = 100_000, max_age: float = 60.0) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._entries: dict[TokenKey, Entry] = {}
        self._lock = threading.Lock()

    def get(self, key: TokenKey) -> Entry | None:
        return self._entries.get(key)

    def put(self, token: Token, thresholds: tuple[float, float, float], now: float) -> None:
        refresh_at, must_refresh_at, expires_at = thresholds
        # "serve until": the token's own refresh time, or max_age from now
        entry = Entry(token, min(refresh_at, now + self.max_age), must_refresh_at, expires_at)
        with self._lock:
            entries = self._entries
            current = entries.get(token.key)
            if current is not None and current.token.obtained_at > token.obtained_at:
                return
            if current is None:
                while len(entries) >= self.max_entries:
                    del entries[next(iter(entries))]
            entries[token.key] = entry

    def discard(self, key: TokenKey, *, only: str | None = None) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and (only is None or entry.token.access_token == only):
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
