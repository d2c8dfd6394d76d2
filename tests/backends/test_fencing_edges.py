"""Lease fencing at its edges on the real backends: upgrades that race, fences that
must stay above what the store remembers, a clock that steps back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tokenbroker import ManualClock, store_from_url
from tokenbroker.backends.memory import LEASE_SWEEP_MIN, MemoryStore
from tokenbroker.backends.sql import SQLStore
from tokenbroker.core.protocols import Store
from tokenbroker.testing.conformance.helpers import _acquire_within, _new_key, _token

from .test_sql_schema import OLD_KEY, database, make_v1_tables

PROCESSES = 6


__all__ = ["database"]  # the fixture, imported for pytest


class TestUpgradesThatRace:
    def test_stores_opening_version_1_tables_together_all_upgrade(
        self, database: str, unique_prefix: str
    ) -> None:
        # A rolling deploy starts several new processes on the old tables at once:
        # each must come up, whichever of them runs the upgrade.
        make_v1_tables(database, unique_prefix)
        stores = [SQLStore(database, table_prefix=unique_prefix) for _ in range(PROCESSES)]
        start = threading.Barrier(PROCESSES)

        def open_store(store: SQLStore) -> tuple[int | None, int]:
            start.wait()
            return store.upgrade()

        try:
            with ThreadPoolExecutor(PROCESSES) as pool:
                results = list(pool.map(open_store, stores))
            assert all(after == 2 for _, after in results)
            assert all(store.get_token(OLD_KEY) is not None for store in stores)
        finally:
            for store in stores:
                store.close()


@pytest.fixture(params=["memory", "sqlite", "postgres", "mysql", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path, unique_prefix: str) -> Iterator[Store]:
    kind = request.param
    if kind == "memory":
        url = "memory://"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'fences.db'}"
    elif kind == "redis":
        url = f"{request.getfixturevalue('redis_url')}?key_prefix={unique_prefix}:"
    else:
        url = f"{request.getfixturevalue(f'{kind}_url')}?table_prefix={unique_prefix}"
    opened = store_from_url(url)
    yield opened
    opened.close()


def in_the_future(seconds: float) -> int:
    """A fence as a host whose clock is ``seconds`` ahead would grant it now."""
    return int((datetime.now(UTC) + timedelta(seconds=seconds)).timestamp() * 1_000_000)


class TestFencesStayAboveTheTokensFence:
    def test_a_lease_taken_after_a_token_written_under_a_later_fence_outranks_it(
        self, store: Store
    ) -> None:
        # The token was written under a fence from a clock ahead of this one (a host
        # within the skew the stores allow, or a Redis master before a failover) and
        # its lease record is gone (swept, or lapsed): the next holder must still be
        # able to write, so its fence must be above the one the token remembers.
        key = _new_key()
        ahead = in_the_future(20)
        assert store.put_token(_token(key), fence=ahead) is True
        lease = store.acquire_lease(key, 30)
        assert lease is not None
        assert lease.fence > ahead
        newer = _token(key, obtained=datetime.now(UTC) + timedelta(days=3650))
        assert store.put_token(newer, fence=lease.fence) is True
        assert store.get_token(key) == newer

    def test_a_sql_host_behind_another_takes_over_a_released_and_swept_key_and_writes(
        self, tmp_path: Path
    ) -> None:
        url = f"sqlite:///{tmp_path / 'skew.db'}"
        now = datetime.now(UTC).timestamp()
        ahead = SQLStore(url, clock=ManualClock(start=now + 20))  # within a lease TTL
        behind = SQLStore(url, clock=ManualClock(start=now))
        key = _new_key()
        try:
            first = ahead.acquire_lease(key, 30)
            assert first is not None
            assert ahead.put_token(_token(key), fence=first.fence) is True
            assert ahead.release_lease(first) is True
            # this store's first acquire sweeps: the released row goes at once
            assert behind.acquire_lease(_new_key(), 30) is not None
            lease = behind.acquire_lease(key, 30)
            assert lease is not None
            newer = _token(key, obtained=datetime.now(UTC) + timedelta(days=3650))
            assert behind.put_token(newer, fence=lease.fence) is True
        finally:
            ahead.close()
            behind.close()


class TestAClockThatStepsBack:
    def test_memory_fences_keep_growing_when_the_clock_steps_back_past_a_swept_lease(
        self,
    ) -> None:
        clock = ManualClock(start=datetime(2031, 1, 1, tzinfo=UTC).timestamp())
        store = MemoryStore(clock=clock)
        key = _new_key()
        stale = store.acquire_lease(key, 1)
        assert stale is not None
        clock.advance(2)  # the holder stalled past its lease
        for _ in range(LEASE_SWEEP_MIN + 1):  # enough leases that one acquire sweeps
            assert store.acquire_lease(_new_key(), 1) is not None
        assert key not in store._leases  # swept with the other lapsed ones
        clock.advance(-3600)  # the host's clock is stepped back
        taker = store.acquire_lease(key, 30)
        assert taker is not None
        assert taker.fence > stale.fence
        late = _token(key, obtained=datetime.now(UTC) + timedelta(days=3650))
        assert store.put_token(late, fence=stale.fence) is False
        current = _token(key)
        assert store.put_token(current, fence=taker.fence) is True
        assert store.get_token(key) == current


class TestAStaleHolderAfterANewHolderLetGo:
    def test_a_holder_that_lapsed_stays_refused_after_the_next_released_without_writing(
        self, store: Store
    ) -> None:
        key = _new_key()
        stale = store.acquire_lease(key, 0.2)
        assert stale is not None
        taker = _acquire_within(store, key, 30, 15)
        assert store.release_lease(taker) is True  # its fetch failed: nothing written
        late = _token(key, obtained=datetime.now(UTC) + timedelta(days=3650))
        assert store.put_token(late, fence=stale.fence) is False
        assert store.get_token(key) is None
        assert store.renew_lease(stale, 30) is None
        again = store.acquire_lease(key, 30)
        assert again is not None
        assert again.fence > taker.fence
