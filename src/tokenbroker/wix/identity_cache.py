"""A small cache of Token Info answers, so a frontend's burst of calls costs one lookup.

Keyed by the SHA-256 of the token, never the token itself: a heap dump or a
debugger shows no credential. An answer is kept at most ``max_age`` seconds
(60 by default) and never past the token's own ``exp``, so a revoked token is
accepted for at most a minute after Wix stops accepting it. Inactive answers
are kept too (an unknown token sent again and again costs Wix one call a
minute); an active answer whose ``exp`` has passed is not kept at all. The
cache is bounded (least recently used entries go first) and thread-safe.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from typing import Final

from ..core.clock import Clock, to_timestamp
from ..core.errors import ConfigError
from .identity_model import TokenInfo

DEFAULT_MAX_AGE: Final = 60.0
DEFAULT_MAX_SIZE: Final = 10_000


def cache_key(token: str) -> bytes:
    """What the cache files a token's answer under: its SHA-256."""
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenInfoCache:
    """Token Info answers by token hash; ``max_age`` 0 turns caching off."""

    def __init__(
        self,
        clock: Clock,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        if isinstance(max_age, bool) or not isinstance(max_age, int | float):
            raise ConfigError(f"max_age must be a number of seconds, not {type(max_age).__name__}")
        if not math.isfinite(max_age) or not 0 <= max_age <= DEFAULT_MAX_AGE:
            raise ConfigError(
                f"max_age must be between 0 and {DEFAULT_MAX_AGE:g} seconds, not {max_age}"
            )
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ConfigError(f"max_size must be a positive int, not {max_size!r}")
        self.max_age = float(max_age)
        self.max_size = max_size
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, TokenInfo]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"TokenInfoCache(max_age={self.max_age:g}, max_size={self.max_size}, size={len(self)})"
        )

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> TokenInfo | None:
        """The answer kept for ``token``, if it is still fresh."""
        key = cache_key(token)
        now = self._clock.time()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            until, info = entry
            if now >= until:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return info

    def put(self, token: str, info: TokenInfo) -> None:
        """Keep ``info`` for at most ``max_age`` seconds, and never past its ``exp``."""
        now = self._clock.time()
        until = now + self.max_age
        if info.exp is not None:
            until = min(until, to_timestamp(info.exp))
        if until <= now:
            return
        key = cache_key(token)
        with self._lock:
            self._entries[key] = (until, info)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
