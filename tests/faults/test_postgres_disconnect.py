"""The PostgreSQL store's connections terminated under it (``pg_terminate_backend``).

Only this store's own connections are terminated: they carry an
``application_name`` of their own. The next call must succeed on a new
connection without the broker falling back to degraded mode, and nothing
recorded before must be lost.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tokenbroker import TokenBroker
from tokenbroker.testing.emulator import WixEmulator

from .conftest import (
    APP_ID,
    APP_SECRET,
    HookRecorder,
    Invariants,
    PostgresTarget,
    Requests,
    in_background,
    in_threads,
    stored_token,
)

pytestmark = pytest.mark.backend("postgres")

INSTANCES = ("inst-1", "inst-2", "inst-3", "inst-4")


def make_broker(emulator: WixEmulator, target: PostgresTarget) -> TokenBroker:
    return TokenBroker(app_id=APP_ID, app_secret=APP_SECRET, store=target.url, api_url=emulator.url)


@pytest.fixture
def emulator(wix_emulator: WixEmulator) -> WixEmulator:
    for instance in INSTANCES:
        wix_emulator.install(instance)
    return wix_emulator


@pytest.fixture
def guard(emulator: WixEmulator, postgres_target: PostgresTarget) -> Iterator[Invariants]:
    """A broker whose registry and first token are recorded, with several pooled
    connections open (so that there is more than one to terminate)."""
    with make_broker(emulator, postgres_target) as broker:
        guard = Invariants(broker, emulator)
        broker.add_installations(INSTANCES[:3])
        guard.record_registry()
        guard.token(INSTANCES[0])
        in_threads(4, broker.installations)
        yield guard


def assert_not_degraded(guard: Invariants, hooks: HookRecorder) -> None:
    assert guard.broker.engine.degraded is None
    assert hooks.degraded == []


class TestConnectionsTerminated:
    def test_the_next_token_miss_reconnects_and_stores_its_token(
        self,
        guard: Invariants,
        postgres_target: PostgresTarget,
        hooks: HookRecorder,
    ) -> None:
        assert postgres_target.terminate() >= 1
        token = guard.token(INSTANCES[1])
        # served, and written: degraded mode would have served it too, unwritten
        assert stored_token(guard.broker, INSTANCES[1]) == token
        assert_not_degraded(guard, hooks)
        guard.assert_kept(INSTANCES[1])

    def test_the_next_installation_call_reconnects_and_nothing_is_lost(
        self,
        guard: Invariants,
        postgres_target: PostgresTarget,
        hooks: HookRecorder,
    ) -> None:
        assert postgres_target.terminate() >= 1
        guard.assert_registry_kept()
        assert postgres_target.terminate() >= 1
        guard.broker.add_installation(INSTANCES[3])
        assert guard.installed() == set(INSTANCES)
        assert postgres_target.terminate() >= 1
        assert guard.broker.get_installation(INSTANCES[0]) is not None
        assert_not_degraded(guard, hooks)
        guard.assert_kept()

    def test_a_stored_token_is_still_found_after_a_reconnect(
        self,
        guard: Invariants,
        postgres_target: PostgresTarget,
        emulator: WixEmulator,
        hooks: HookRecorder,
    ) -> None:
        first = stored_token(guard.broker, INSTANCES[0])
        assert first is not None
        assert postgres_target.terminate() >= 1
        # another process (a fresh broker on the same store) finds it: no new request
        requests = Requests(emulator)
        with make_broker(emulator, postgres_target) as other:
            assert Invariants(other, emulator).token(INSTANCES[0]) == first
            assert other.engine.degraded is None
        assert requests.count == 0
        assert_not_degraded(guard, hooks)

    def test_connections_killed_while_a_refresh_is_in_flight_do_not_lose_its_write(
        self,
        guard: Invariants,
        postgres_target: PostgresTarget,
        emulator: WixEmulator,
        hooks: HookRecorder,
    ) -> None:
        instance = INSTANCES[2]
        key = guard.broker.key(instance)
        emulator.pause()
        try:
            caller = in_background(lambda: guard.token(instance))
            # the lease is taken and committed; the request is held in the emulator
            assert emulator.wait_for_in_flight(1, timeout=15)
            assert postgres_target.terminate() >= 1
        finally:
            emulator.resume()
        token = caller.result(timeout=30)
        assert stored_token(guard.broker, instance) == token
        # the lease was released on a new connection: it can be taken at once
        lease = guard.broker.store.acquire_lease(key, 5.0)
        assert lease is not None
        guard.broker.store.release_lease(lease)
        assert_not_degraded(guard, hooks)
        guard.assert_kept(instance)

    def test_a_read_cut_off_mid_call_is_run_again_on_a_new_connection(
        self,
        guard: Invariants,
        postgres_target: PostgresTarget,
        emulator: WixEmulator,
        hooks: HookRecorder,
    ) -> None:
        with postgres_target.killed_at_statement(is_select) as cut:
            token = guard.token(INSTANCES[1])
        assert cut, "no statement was cut off"
        assert stored_token(guard.broker, INSTANCES[1]) == token
        assert_not_degraded(guard, hooks)
        with postgres_target.killed_at_statement(is_select) as cut:
            guard.assert_registry_kept()
        assert cut, "no statement was cut off"
        guard.assert_kept(INSTANCES[1])

    def test_a_write_cut_off_mid_transaction_is_run_again_and_lands(
        self,
        guard: Invariants,
        postgres_target: PostgresTarget,
        hooks: HookRecorder,
    ) -> None:
        with postgres_target.killed_at_statement(is_write) as cut:
            guard.broker.add_installation(INSTANCES[3])
        assert cut, "no statement was cut off"
        assert guard.installed() == set(INSTANCES)
        tokens_table = f"{postgres_target.table_prefix}tokens"
        with postgres_target.killed_at_statement(
            lambda sql: is_write(sql) and tokens_table in sql  # the token's write itself
        ) as cut:
            token = guard.token(INSTANCES[1])
        assert cut, "no statement was cut off"
        assert stored_token(guard.broker, INSTANCES[1]) == token
        assert_not_degraded(guard, hooks)
        guard.assert_kept(INSTANCES[1])

    async def test_an_async_call_reconnects_too(
        self,
        guard: Invariants,
        postgres_target: PostgresTarget,
        hooks: HookRecorder,
    ) -> None:
        assert postgres_target.terminate() >= 1
        token = await guard.atoken(INSTANCES[1])
        assert await guard.broker.store.aget_token(token.key) == token
        assert postgres_target.terminate() >= 1
        assert await guard.broker.store.aget_installation(APP_ID, INSTANCES[0]) is not None
        assert_not_degraded(guard, hooks)


def is_select(statement: str) -> bool:
    return statement.lstrip().upper().startswith("SELECT")


def is_write(statement: str) -> bool:
    return statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
