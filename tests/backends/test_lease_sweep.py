"""Lapsed leases are swept: keys nobody acquires again do not pile up.

Webhook deduplication takes a lease per delivery under a key that is never
acquired again; acquiring clears only its own key's lapsed row, so without a
sweep the memory map and the SQL ``leases`` table grow for good. Memory sweeps
by size (amortised), SQL once per interval by the store's clock, here a
``ManualClock`` the tests move. Redis expires its keys itself (``PX``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from tokenbroker.backends.memory import LEASE_SWEEP_MIN, MemoryStore
from tokenbroker.backends.redis import RedisStore
from tokenbroker.backends.sql import SCHEMA_VERSION, SQLStore
from tokenbroker.backends.sql.schema import Tables
from tokenbroker.backends.sql.sweep import (
    LEASE_SWEEP_BATCH,
    LEASE_SWEEP_CATCH_UP,
    LEASE_SWEEP_GRACE,
    LEASE_SWEEP_INTERVAL,
)
from tokenbroker.core.clock import ManualClock
from tokenbroker.core.errors import ConfigError
from tokenbroker.core.token import TokenKey

from ..polling import wait_until

START = 2_000_000_000.0  # a fixed moment: the stores judge leases by the manual clock


def unique_key(kind: str = "event") -> TokenKey:
    return TokenKey(f"tokenbroker~{kind}", "app", f"{kind}-{uuid.uuid4()}")


# --- memory -----------------------------------------------------------------------


class TestMemorySweep:
    def test_unique_leases_that_lapse_do_not_accumulate(self) -> None:
        clock = ManualClock(start=START)
        store = MemoryStore(clock=clock)
        for _ in range(10):
            for _ in range(500):
                assert store.acquire_lease(unique_key(), 10) is not None
            clock.advance(11)
        # 5000 leases taken, all but the last round lapsed: the map stays near the floor.
        assert len(store._leases) <= LEASE_SWEEP_MIN + 1

    def test_the_map_stays_within_twice_the_live_leases(self) -> None:
        clock = ManualClock(start=START)
        store = MemoryStore(clock=clock)
        live = 0
        for _ in range(30):
            for _ in range(100):  # each round adds 100 live leases and 100 that lapse
                assert store.acquire_lease(unique_key("long"), 3600) is not None
                assert store.acquire_lease(unique_key("short"), 1) is not None
            live += 100
            clock.advance(2)
            # Survivors of the last sweep: the long leases then, and one round of short ones.
            assert len(store._leases) <= max(LEASE_SWEEP_MIN, 2 * (live + 100)) + 1
        assert len(store._leases) < 2 * 30 * 100  # lapsed ones were dropped

    def test_a_sweep_keeps_every_live_lease(self) -> None:
        clock = ManualClock(start=START)
        store = MemoryStore(clock=clock)
        held = [store.acquire_lease(unique_key("live"), 60) for _ in range(50)]
        for _ in range(3 * LEASE_SWEEP_MIN):
            store.acquire_lease(unique_key(), 5)
            clock.advance(0.01)  # the oldest of these lapse while the live ones last
        assert len(store._leases) < 3 * LEASE_SWEEP_MIN
        for lease in held:
            assert lease is not None
            assert store.acquire_lease(lease.key, 60) is None
            assert store.release_lease(lease) is True

    def test_threads_taking_unique_leases_while_sweeps_run_stay_consistent(self) -> None:
        clock = ManualClock(start=START)
        store = MemoryStore(clock=clock)
        shared = unique_key("shared")
        guard = store.acquire_lease(shared, 3600)
        assert guard is not None
        start = threading.Barrier(8)

        def churn(_: int) -> int:
            start.wait()
            refused = 0
            for _ in range(500):
                assert store.acquire_lease(unique_key(), 0) is not None  # lapses at once
                refused += store.acquire_lease(shared, 60) is None
            return refused

        with ThreadPoolExecutor(8) as pool:
            refusals = list(pool.map(churn, range(8)))
        assert refusals == [500] * 8  # the live lease was never swept away
        assert len(store._leases) <= LEASE_SWEEP_MIN + 1
        assert store.release_lease(guard) is True

    def test_released_leases_keep_their_fence_until_a_sweep_and_stay_bounded(self) -> None:
        clock = ManualClock(start=START)
        store = MemoryStore(clock=clock)
        key = unique_key("kept")
        first = store.acquire_lease(key, 60)
        assert first is not None
        assert store.release_lease(first) is True
        assert len(store._leases) == 1  # free, but remembered for its fence
        second = store.acquire_lease(key, 60)
        assert second is not None
        assert second.fence > first.fence
        assert store.release_lease(second) is True
        for _ in range(3 * LEASE_SWEEP_MIN):  # released at once: each is sweepable
            lease = store.acquire_lease(unique_key(), 60)
            assert lease is not None
            assert store.release_lease(lease) is True
        assert len(store._leases) <= LEASE_SWEEP_MIN + 1

    def test_a_clock_without_time_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError, match="clock"):
            MemoryStore(clock=object())  # type: ignore[arg-type]


# --- SQL ---------------------------------------------------------------------------


def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite-file":
        return f"sqlite:///{tmp_path / 'tokens.db'}"
    if request.param == "sqlite-memory":
        return "sqlite:///:memory:"
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgres", "mysql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url(request, tmp_path)


@pytest.fixture(params=["sqlite-file", "postgres", "mysql"])
def lasting_sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database that outlives one store (not an in-memory SQLite)."""
    return database_url(request, tmp_path)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=START)


@pytest.fixture
def sql_store(sql_url: str, unique_prefix: str, clock: ManualClock) -> Iterator[SQLStore]:
    store = SQLStore(sql_url, table_prefix=unique_prefix, clock=clock)
    store.upgrade()
    yield store
    store.close()


def lease_rows(store: SQLStore) -> set[str]:
    """The instance ids of every row in the store's leases table."""
    leases = Tables(store.table_prefix).leases
    with store.engine.connect() as conn:
        return set(conn.execute(sa.select(leases.c.instance_id)).scalars())


def insert_lapsed(store: SQLStore, count: int, *, at: float, tag: str = "old") -> set[str]:
    """Rows as an earlier run, or an earlier release, left them: expired at ``at``."""
    leases = Tables(store.table_prefix).leases
    ids = [f"{tag}-{n}-{uuid.uuid4().hex[:8]}" for n in range(count)]
    rows = [
        {
            "provider": "tokenbroker~event",
            "app_id": "app",
            "instance_id": ident,
            "owner": "gone",
            "expires_at": int(at * 1_000_000),
        }
        for ident in ids
    ]
    with store.engine.begin() as conn:
        conn.execute(leases.insert(), rows)
    return set(ids)


class TestSQLSweep:
    def test_the_first_acquire_sweeps_what_lapsed_before_the_store_started(
        self, sql_store: SQLStore
    ) -> None:
        old = insert_lapsed(sql_store, 50, at=START - 3600)
        lease = sql_store.acquire_lease(unique_key(), 30)
        assert lease is not None
        assert lease_rows(sql_store) == {lease.key.instance_id}
        assert old.isdisjoint(lease_rows(sql_store))

    def test_unique_leases_that_lapse_are_swept_by_a_later_acquire(
        self, sql_store: SQLStore, clock: ManualClock
    ) -> None:
        taken = [sql_store.acquire_lease(unique_key(), 10) for _ in range(20)]
        assert all(taken)
        assert len(lease_rows(sql_store)) == 20  # nobody acquires these keys again
        clock.advance(10 + LEASE_SWEEP_GRACE + LEASE_SWEEP_INTERVAL)
        latest = sql_store.acquire_lease(unique_key(), 10)
        assert latest is not None
        assert lease_rows(sql_store) == {latest.key.instance_id}

    def test_a_released_row_keeps_its_fence_until_a_sweep_deletes_it(
        self, sql_store: SQLStore, clock: ManualClock
    ) -> None:
        key = unique_key("kept")
        first = sql_store.acquire_lease(key, 10)  # sweeps, at START
        assert first is not None
        assert sql_store.release_lease(first) is True
        assert key.instance_id in lease_rows(sql_store)  # free, but remembered
        second = sql_store.acquire_lease(key, 10)
        assert second is not None
        assert second.fence > first.fence
        assert sql_store.release_lease(second) is True
        clock.advance(LEASE_SWEEP_INTERVAL)
        other = sql_store.acquire_lease(unique_key(), 10)  # the next sweep
        assert other is not None
        assert key.instance_id not in lease_rows(sql_store)
        third = sql_store.acquire_lease(key, 10)  # forgotten: the clock still orders it
        assert third is not None
        assert third.fence > second.fence

    def test_sweeps_wait_for_the_interval(self, sql_store: SQLStore, clock: ManualClock) -> None:
        assert sql_store.acquire_lease(unique_key(), 3600) is not None  # sweeps, at START
        old = insert_lapsed(sql_store, 30, at=START - 3600)
        clock.advance(LEASE_SWEEP_INTERVAL - 1)
        assert sql_store.acquire_lease(unique_key(), 3600) is not None
        assert old <= lease_rows(sql_store)  # not due yet: left alone
        clock.advance(1)
        assert sql_store.acquire_lease(unique_key(), 3600) is not None
        assert old.isdisjoint(lease_rows(sql_store))
        assert len(lease_rows(sql_store)) == 3

    def test_live_leases_and_leases_within_the_grace_survive_a_sweep(
        self, sql_store: SQLStore, clock: ManualClock
    ) -> None:
        live = sql_store.acquire_lease(unique_key("live"), 3600)
        assert live is not None
        clock.advance(LEASE_SWEEP_INTERVAL)
        recent = insert_lapsed(sql_store, 5, at=clock.time() - LEASE_SWEEP_GRACE + 1, tag="recent")
        old = insert_lapsed(sql_store, 5, at=clock.time() - LEASE_SWEEP_GRACE, tag="old")
        trigger = sql_store.acquire_lease(unique_key(), 30)
        assert trigger is not None
        assert lease_rows(sql_store) == {live.key.instance_id, trigger.key.instance_id, *recent}
        assert old.isdisjoint(lease_rows(sql_store))
        assert sql_store.acquire_lease(live.key, 30) is None  # still held
        assert sql_store.release_lease(live) is True

    def test_a_sweep_deletes_one_batch_and_the_next_catches_up_soon(
        self, sql_store: SQLStore, clock: ManualClock
    ) -> None:
        old = insert_lapsed(sql_store, LEASE_SWEEP_BATCH + 40, at=START - 3600)
        first = sql_store.acquire_lease(unique_key(), 3600)
        assert first is not None
        assert len(lease_rows(sql_store) & old) == 40  # one batch went
        clock.advance(LEASE_SWEEP_CATCH_UP)
        assert sql_store.acquire_lease(unique_key(), 3600) is not None
        assert old.isdisjoint(lease_rows(sql_store))  # a backlog is not left for a minute
        later = insert_lapsed(sql_store, 10, at=START - 3600, tag="later")
        clock.advance(LEASE_SWEEP_CATCH_UP)
        assert sql_store.acquire_lease(unique_key(), 3600) is not None
        assert later <= lease_rows(sql_store)  # that batch was not full: the full interval

    async def test_the_async_acquire_sweeps_too(
        self, sql_store: SQLStore, clock: ManualClock
    ) -> None:
        first = await sql_store.aacquire_lease(unique_key(), 5)
        assert first is not None
        clock.advance(5 + LEASE_SWEEP_GRACE + LEASE_SWEEP_INTERVAL)
        leases = await asyncio.gather(
            *(sql_store.aacquire_lease(unique_key(), 5) for _ in range(4))
        )
        assert all(leases)
        rows = lease_rows(sql_store)
        assert first.key.instance_id not in rows
        assert rows == {lease.key.instance_id for lease in leases if lease is not None}

    def test_a_failing_sweep_is_logged_at_debug_and_the_acquire_still_succeeds(
        self, sql_store: SQLStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        stuck = insert_lapsed(sql_store, 1, at=START - 3600, tag="stuck")
        with (
            refusing_deletes_of_stuck_rows(sql_store),
            caplog.at_level(logging.DEBUG, logger="tokenbroker.store"),
        ):
            lease = sql_store.acquire_lease(unique_key(), 30)
        assert lease is not None
        assert sql_store.acquire_lease(lease.key, 30) is None  # the lease was really taken
        assert stuck <= lease_rows(sql_store)
        failed = [r for r in caplog.records if "sweeping lapsed leases" in r.getMessage()]
        assert failed
        assert {r.levelno for r in failed} == {logging.DEBUG}

    def test_a_clock_without_time_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError, match="clock"):
            SQLStore("sqlite:///:memory:", clock=object())  # type: ignore[arg-type]


@contextmanager
def refusing_deletes_of_stuck_rows(store: SQLStore) -> Iterator[None]:
    """A trigger that makes any DELETE touching a ``stuck-`` row fail, as a
    database refusing the sweep would; acquires of other keys are untouched.
    Dropped afterwards (PostgreSQL's function would outlive the table)."""
    table = f"{store.table_prefix}leases"
    name = f"{store.table_prefix}no_sweep"
    stuck = "substr(OLD.instance_id, 1, 6) = 'stuck-'"
    dialect = store.engine.dialect.name
    with store.engine.begin() as conn:
        if dialect == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE DELETE ON {table} "
                f"WHEN {stuck} BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        elif dialect == "postgresql":
            conn.exec_driver_sql(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF {stuck} THEN RAISE EXCEPTION 'refused'; END IF; "
                "RETURN OLD; END $$"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {name}()"
            )
        else:
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE DELETE ON {table} FOR EACH ROW "
                f"IF {stuck} THEN "
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused'; END IF"
            )
    try:
        yield
    finally:
        with store.engine.begin() as conn:
            if dialect == "postgresql":
                conn.exec_driver_sql(f"DROP TRIGGER {name} ON {table}")
                conn.exec_driver_sql(f"DROP FUNCTION {name}()")
            else:
                conn.exec_driver_sql(f"DROP TRIGGER {name}")


class TestSQLExpiryIndex:
    def test_new_tables_have_the_expiry_index(self, sql_store: SQLStore) -> None:
        assert f"{sql_store.table_prefix}leases_expires_at" in lease_indexes(sql_store)

    def test_tables_made_without_the_index_get_it_and_keep_their_version(
        self, lasting_sql_url: str, unique_prefix: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        old = SQLStore(lasting_sql_url, table_prefix=unique_prefix)
        old.upgrade()
        index = next(iter(Tables(unique_prefix).leases.indexes))
        with old.engine.begin() as conn:
            index.drop(conn)  # the tables as the first release made them
        assert lease_indexes(old) == set()
        old.close()
        new = SQLStore(lasting_sql_url, table_prefix=unique_prefix)
        try:
            with caplog.at_level(logging.WARNING, logger="tokenbroker.store"):
                assert new.upgrade() == (SCHEMA_VERSION, SCHEMA_VERSION)
            assert lease_indexes(new) == {str(index.name)}
            assert any("adding index" in r.getMessage() for r in caplog.records)
        finally:
            new.close()


def lease_indexes(store: SQLStore) -> set[str]:
    """The names of the secondary indexes on the store's leases table."""
    with store.engine.connect() as conn:
        found = sa.inspect(conn).get_indexes(f"{store.table_prefix}leases")
    return {str(index["name"]) for index in found}


# --- Redis -------------------------------------------------------------------------


@pytest.mark.backend("redis")
def test_redis_lease_keys_carry_a_ttl_and_lapse_on_their_own(
    redis_url: str, session_prefix: str
) -> None:
    store = RedisStore(redis_url, key_prefix=f"{session_prefix}sweep{uuid.uuid4().hex[:8]}:")
    client = redis.Redis.from_url(redis_url)
    try:
        names = []
        for _ in range(20):
            key = unique_key()
            assert store.acquire_lease(key, 0.2) is not None
            names.append(store.lease_key(key))
        # -1: a key without expiry (-2: already gone, which is fine too).
        assert -1 not in [client.pttl(name) for name in names]
        wait_until(lambda: client.exists(*names) == 0, "the lease keys to expire", timeout=5)
    finally:
        client.close()
        store.close()
