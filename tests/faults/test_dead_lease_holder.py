"""A lease holder SIGKILLed mid-refresh while Wix is failing too.

``tests/backends/test_herd.py`` covers the holder killed on a healthy Wix. Here
the emulator also fails once more: the caller taking over must still get a valid
token (its wait is bounded barely above the lease) within its own retry budget,
or, when the failure is one that is not retried, give the lease back at once so
that the call after it does not wait out a lease again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tokenbroker import ProviderConfig, ProviderError, Secret, TokenBroker
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.wix import RetryBudget, WixProvider

from .conftest import (
    APP_ID,
    APP_SECRET,
    BUDGET,
    Invariants,
    LeaseHolder,
    PostgresTarget,
    RedisServer,
    Requests,
    stored_token,
)

INSTANCE = "inst-1"
LEASE_TTL = 2.0
StartHolder = Callable[[str, str, str, float], LeaseHolder]


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.backend("postgres")),
        pytest.param("redis", marks=pytest.mark.backend("redis")),
    ]
)
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A cold store that several processes share."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lease.db'}"
    if request.param == "postgres":
        target: PostgresTarget = request.getfixturevalue("postgres_target")
        return target.url
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.store_url()


@pytest.fixture
def taker(wix_emulator: WixEmulator, shared_store: str) -> Iterator[Invariants]:
    """The caller that takes over: it waits for a lease at most 3 s beyond its ttl."""
    # A short lease needs a retry budget that fits in it (a longer one is refused).
    budget = RetryBudget(max_attempts=BUDGET, backoff_max=0.25, max_retry_after=0.25)
    config = ProviderConfig(
        app_id=APP_ID, app_secret=Secret(APP_SECRET), api_url=wix_emulator.url, timeout=0.4
    )
    with TokenBroker(
        app_id=APP_ID,
        app_secret=APP_SECRET,
        store=shared_store,
        provider=WixProvider(config, retry=budget),
        lease_ttl=LEASE_TTL,
        wait_timeout=LEASE_TTL + 3,
    ) as broker:
        broker.add_installation(INSTANCE)
        guard = Invariants(broker, wix_emulator)
        guard.record_registry()
        yield guard


def kill_holder_mid_refresh(
    emulator: WixEmulator, store: str, start_holder: StartHolder
) -> LeaseHolder:
    """Start a holder, let it take the lease and send its request, then SIGKILL it."""
    emulator.pause()  # the holder's request will hang in the emulator
    try:
        holder = start_holder(emulator.url, store, INSTANCE, LEASE_TTL)
        holder.go()
        assert emulator.wait_for_in_flight(1, timeout=30)
        holder.kill()
    finally:
        emulator.resume()
    return holder


class TestHolderKilledWhileWixFails:
    def test_the_next_caller_retries_past_the_failure_and_gets_a_valid_token(
        self,
        taker: Invariants,
        wix_emulator: WixEmulator,
        shared_store: str,
        start_holder: StartHolder,
    ) -> None:
        kill_holder_mid_refresh(wix_emulator, shared_store, start_holder)
        wix_emulator.fail_next(503)
        requests = Requests(wix_emulator)
        token = taker.token(INSTANCE)
        assert requests.count == 2  # the 503, then the token: within the budget
        assert requests.count <= BUDGET
        assert stored_token(taker.broker, INSTANCE) == token
        taker.assert_kept()

    def test_a_failure_that_is_not_retried_gives_the_lease_back_for_the_next_call(
        self,
        taker: Invariants,
        wix_emulator: WixEmulator,
        shared_store: str,
        start_holder: StartHolder,
    ) -> None:
        kill_holder_mid_refresh(wix_emulator, shared_store, start_holder)
        wix_emulator.garbage_next()
        requests = Requests(wix_emulator)
        with pytest.raises(ProviderError):
            taker.token(INSTANCE)
        assert requests.count == 1
        assert stored_token(taker.broker, INSTANCE) is None
        # the lease was released, not left to lapse
        key = taker.broker.key(INSTANCE)
        lease = taker.broker.store.acquire_lease(key, LEASE_TTL)
        assert lease is not None
        taker.broker.store.release_lease(lease)
        token = taker.token(INSTANCE)
        assert requests.count == 2
        assert stored_token(taker.broker, INSTANCE) == token
        taker.assert_kept()
