"""The ``wix-legacy`` provider's helpers: its options, the codes and refresh tokens in
flight (scrubbed from every text), refresh tokens the store could not take yet, and
the install's wait for the installation's fleet lease."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from ..core.errors import ConfigError, StorageError
from ..core.flow import Flow, Sleep
from ..core.ops import AcquireLease, ReleaseLease
from ..core.protocols import Lease
from ..core.token import Token, TokenKey
from .legacy_wire import DEFAULT_LIFETIME, MAX_DEFAULT_LIFETIME, MIN_LIFETIME

log = logging.getLogger("tokenbroker.wix")

NAME: Final = "wix-legacy"
OPTIONS: Final = ("default_lifetime",)
"""The provider options ``wix-legacy`` takes (``[apps.NAME.provider_options]``)."""
MAX_UNSAVED: Final = 10_000


def default_lifetime(options: Mapping[str, Any]) -> float:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(
            f"{NAME}: unknown provider option(s) {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(OPTIONS)})"
        )
    value = options.get("default_lifetime", DEFAULT_LIFETIME)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{NAME}: default_lifetime must be a number of seconds, not {value!r}")
    if not MIN_LIFETIME <= value <= MAX_DEFAULT_LIFETIME:  # also false for NaN
        raise ConfigError(
            f"{NAME}: default_lifetime must be between {MIN_LIFETIME:.0f} and "
            f"{MAX_DEFAULT_LIFETIME:.0f} seconds (Wix documents 300), not {value!r}"
        )
    return float(value)


class InFlight:
    """The codes and refresh tokens being sent now, by every thread and task: each is
    scrubbed from every text quoted from Wix meanwhile (hiding one too many costs
    nothing; quoting one would leak it)."""

    def __init__(self) -> None:
        self._values: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    @contextmanager
    def holding(self, value: str) -> Iterator[None]:
        with self._lock:
            self._values[value] += 1
        try:
            yield
        finally:
            with self._lock:
                self._values[value] -= 1
                if self._values[value] <= 0:
                    del self._values[value]

    def values(self) -> list[str]:
        with self._lock:
            return list(self._values)


class Unsaved:
    """Refresh tokens Wix answered that the store could not take, by key (bounded)."""

    def __init__(self, limit: int = MAX_UNSAVED) -> None:
        self._records: dict[TokenKey, Token] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def get(self, key: TokenKey) -> Token | None:
        with self._lock:
            return self._records.get(key)

    def keep(self, record: Token) -> None:
        with self._lock:
            self._records.pop(record.key, None)
            self._records[record.key] = record
            while len(self._records) > self._limit:
                lost = next(iter(self._records))
                del self._records[lost]
                log.error(
                    "the unsaved refresh token of %s was dropped (over %d)", lost, self._limit
                )

    def settled(self, record: Token) -> None:
        """Forget the unsaved one of ``record``'s key if ``record`` is as new."""
        with self._lock:
            held = self._records.get(record.key)
            if held is not None and held.obtained_at <= record.obtained_at:
                del self._records[record.key]

    def discard(self, key: TokenKey) -> None:
        with self._lock:
            self._records.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


def lease_flow(key: TokenKey, ttl: float, wait: float) -> Flow[Lease]:
    """Take ``key``'s fleet lease (the engine's, for the access token), waiting up to
    ``wait`` seconds for a holder to finish; the port is any object with a ``store``."""
    deadline = time.monotonic() + wait  # waiting is not wall-clock business
    pause = 0.02
    while True:
        lease = yield from AcquireLease(key, ttl)
        if lease is not None:
            return lease
        if time.monotonic() > deadline:
            raise StorageError(
                f"gave up after {wait:.0f}s waiting for another process to finish refreshing {key}"
            )
        yield from Sleep(pause)
        pause = min(pause * 1.5, 0.25)


def release_flow(lease: Lease) -> Flow[None]:
    """Give the lease back; a failure is logged, never raised (it lapses by itself)."""
    try:
        yield from ReleaseLease(lease)
    except StorageError as exc:
        log.warning("could not release the lease on %s: %s", lease.key, exc)
