"""The records, keys and checks the conformance tests share."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from tokenbroker.core.installation import Installation, InstallationStatus
from tokenbroker.core.protocols import Lease, TokenStore
from tokenbroker.core.token import Token, TokenKey

# Microseconds that are not round: a store that drops them, or stores floats, shows.
_BASE = datetime(2031, 5, 17, 8, 30, 12, 345_678, tzinfo=UTC)


def _new_key(provider: str = "wix") -> TokenKey:
    return TokenKey(provider, f"app-{uuid.uuid4().hex[:12]}", f"inst-{uuid.uuid4()}")


def _token(
    key: TokenKey,
    *,
    obtained: datetime = _BASE,
    lifetime: timedelta = timedelta(hours=4),
    access_token: str | None = None,
    stamped: bool = True,
) -> Token:
    expires = obtained + lifetime
    return Token(
        key=key,
        access_token=access_token or f"OAUTH2.{uuid.uuid4().hex}",
        token_type="Bearer",  # noqa: S106 - a token type, not a password
        obtained_at=obtained,
        expires_at=expires,
        refresh_at=expires - timedelta(minutes=37, microseconds=123_457) if stamped else None,
        must_refresh_at=expires - timedelta(minutes=12, microseconds=1) if stamped else None,
    )


def _installation(
    app_id: str,
    instance_id: str | None = None,
    *,
    status: InstallationStatus = InstallationStatus.INSTALLED,
    updated: datetime | None = _BASE,
    **changes: Any,
) -> Installation:
    installation = Installation(
        app_id=app_id,
        instance_id=instance_id or f"inst-{uuid.uuid4()}",
        status=status,
        installed_at=_BASE - timedelta(days=3, microseconds=7),
        removed_at=_BASE if status is InstallationStatus.REMOVED else None,
        setup_finished_at=_BASE - timedelta(days=2, microseconds=999_999),
        updated_at=updated,
        extra={"plan": "premium", "seats": 3, "tags": ["a", "b"], "nested": {"x": None}},
    )
    return attrs.evolve(installation, **changes)


def _assert_aware(*moments: datetime | None) -> None:
    for moment in moments:
        if moment is not None:
            assert moment.tzinfo is not None
            assert moment.utcoffset() is not None


def _acquire_within(store: TokenStore, key: TokenKey, ttl: float, deadline: float) -> Lease:
    """Poll until the key's lease can be taken; fail once ``deadline`` seconds pass."""
    give_up = time.monotonic() + deadline
    while True:
        lease = store.acquire_lease(key, ttl)
        if lease is not None:
            return lease
        if time.monotonic() > give_up:
            pytest.fail(f"the lease on {key} was still held {deadline} s after its ttl")
        time.sleep(0.02)  # polling an observable state, not waiting a guessed time


def _contend(store: TokenStore, key: TokenKey, threads: int) -> list[Lease]:
    """``threads`` threads asking for the key's lease at the same moment: the winners."""
    start = threading.Barrier(threads)

    def contend(_: int) -> Lease | None:
        start.wait()
        return store.acquire_lease(key, 60)

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(contend, range(threads)))
    return [lease for lease in results if lease is not None]
