"""The refresh-token record on every shared backend: kept with its far-future expiry,
encrypted at rest, rotated by compare-and-set, and a herd of threads of two brokers
still costs one refresh."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenbroker import TokenBroker, store_from_url
from tokenbroker.backends.encrypted import PREFIX, new_key
from tokenbroker.core.clock import ManualClock
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.wix.legacy import refresh_key
from tokenbroker.wix.legacy_wire import NEVER

# The backend tests' servers and prefixes (fixtures, found by name below).
from ..backends.conftest import (  # noqa: F401
    mysql_url,
    postgres_url,
    redis_url,
    session_prefix,
    unique_prefix,
)
from .test_legacy import APP_ID, APP_SECRET, DUE, INSTANCE, assert_newest_kept, install


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[WixEmulator]:
    with WixEmulator(APP_ID, APP_SECRET, clock=clock.time) as emu:
        yield emu


@pytest.fixture(params=["sqlite", "postgres", "mysql", "redis"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of a cold shared store, with a prefix of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'legacy.db'}"
    prefix: str = request.getfixturevalue("unique_prefix")
    base: str = request.getfixturevalue(f"{request.param}_url")
    if request.param == "redis":
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}key_prefix={prefix}"
    return f"{base}?table_prefix={prefix}"


def test_rotation_is_kept_encrypted_and_a_herd_makes_one_refresh(
    emulator: WixEmulator, shared_store: str, clock: ManualClock
) -> None:
    key = new_key()

    def broker() -> TokenBroker:
        return TokenBroker(
            app_id=APP_ID,
            app_secret=APP_SECRET,
            store=shared_store,
            api_url=emulator.url,
            provider="wix-legacy",
            clock=clock,
            encryption_key=key,
        )

    with broker() as one, broker() as two:
        install(one, emulator)
        clock.advance(DUE)
        emulator.latency = 0.2  # the leader's request stays in flight while the herd asks
        seen: set[str] = set()

        def work(n: int) -> None:
            seen.add((one, two)[n % 2].token(INSTANCE).access_token)

        pool = [threading.Thread(target=work, args=(n,)) for n in range(20)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(60)
        assert len(seen) == 1
        assert emulator.access_requests == 2
        assert_newest_kept(two, emulator)
        record = one.store.get_token(refresh_key(one.key(INSTANCE)))
        assert record is not None
        assert record.expires_at == NEVER
    raw_store = store_from_url(shared_store)
    try:
        raw = raw_store.get_token(refresh_key(one.key(INSTANCE)))
    finally:
        raw_store.close()
    assert raw is not None
    assert raw.access_token.startswith(PREFIX)
    assert record.access_token not in raw.access_token
