"""RedisStore through a private Sentinel group (``redis_topologies``): a master,
a replica and three sentinels.

The conformance suite (sync and async) and the 4 x 25 cold herd run through the
sentinels; then, on a group of its own, the master is SIGKILLed while threads
keep asking a broker for tokens: the broker rides out the failover in degraded
mode (docs/failure-model.md), hands out no expired token, raises nothing, makes
at most one extra upstream request per instance, and comes back onto the
promoted replica.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tokenbroker import StoreUnavailable, TokenBroker
from tokenbroker.backends.redis import RedisStore
from tokenbroker.core.token import TokenKey
from tokenbroker.testing.conformance import StoreConformance
from tokenbroker.testing.emulator import WixEmulator

from ..faults.conftest import Invariants
from ..polling import wait_until
from ..workers import collect, go
from .conftest_topologies import sentinel_group, start_sentinel_group
from .redis_topologies import SentinelGroup
from .test_herd import APP_ID, APP_SECRET, start_worker

__all__ = ["sentinel_group"]  # the fixture, imported for pytest

pytestmark = pytest.mark.backend("redis")

# Short timeouts: a dead master must be reported quickly.
TIMEOUTS = "socket_timeout=1&socket_connect_timeout=1"


def prefix() -> str:
    return f"tb_sentinel_{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def store(sentinel_group: SentinelGroup) -> AsyncIterator[RedisStore]:
    store = RedisStore(sentinel_group.url, key_prefix=prefix())
    yield store
    await store.aclose()


class TestSentinelConformance(StoreConformance):
    @pytest.fixture
    def store(self, store: RedisStore) -> RedisStore:
        return store

    def corrupt_token(self, store: Any, key: TokenKey) -> object:
        store.client.set(store.token_key(key), b"\x00garbage")
        return None


class TestSentinelHerd:
    def test_four_processes_of_25_threads_make_one_upstream_request(
        self, wix_emulator: WixEmulator, sentinel_group: SentinelGroup
    ) -> None:
        wix_emulator.latency = 0.2
        url = f"{sentinel_group.url}?key_prefix={prefix()}"
        workers = [start_worker(wix_emulator.url, url, "inst-1", 25, 30) for _ in range(4)]
        go(*workers)
        results = collect(workers, timeout=120)
        assert [r["errors"] for r in results] == [[], [], [], []]
        assert len({tok for r in results for tok in r["tokens"]}) == 1
        assert wix_emulator.token_requests == 1


@pytest.fixture
def doomed_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A Sentinel group of its own: the failover test kills its master."""
    group = start_sentinel_group(tmp_path / "doomed")
    try:
        yield group
    finally:
        group.stop()


WARM = [f"warm-{n}" for n in range(3)]  # fetched and replicated before the kill
COLD = [f"cold-{n}" for n in range(3)]  # first asked for while the master is dead
ASYNC_COLD = [f"acold-{n}" for n in range(2)]  # the same, through atoken() on a loop


class TestFailover:
    def test_the_master_killed_mid_run_costs_at_most_one_request_per_instance(
        self, wix_emulator: WixEmulator, doomed_group: SentinelGroup
    ) -> None:
        for instance in WARM + COLD + ASYNC_COLD:
            wix_emulator.install(instance)
        url = f"{doomed_group.url}?{TIMEOUTS}&key_prefix={prefix()}"
        broker = TokenBroker(
            app_id=APP_ID, app_secret=APP_SECRET, store=url, api_url=wix_emulator.url
        )
        guard = Invariants(broker, wix_emulator)
        errors: list[BaseException] = []
        degraded_seen = threading.Event()
        stop = threading.Event()

        def work(instance: str) -> None:
            while not stop.is_set():
                try:
                    guard.token(instance)
                except StoreUnavailable:
                    pass  # documented: refused while the store is out (degraded mode)
                except BaseException as error:  # anything else fails the test
                    errors.append(error)
                    return
                if broker.engine.health.error is not None:
                    degraded_seen.set()

        async def asking(instance: str) -> None:
            while not stop.is_set():
                try:
                    await guard.atoken(instance)
                except StoreUnavailable:
                    pass  # documented: refused while the store is out (degraded mode)
                except BaseException as error:
                    errors.append(error)
                    return
                await asyncio.sleep(0)  # let the loop's other tasks run between hits

        recovered = threading.Event()
        async_stored: list[bool] = []

        async def after_recovery() -> None:
            # this loop's client, made before the kill, reaches the promoted master
            while not recovered.is_set() and not stop.is_set():
                await asyncio.sleep(0.01)
            if recovered.is_set():
                wix_emulator.install("async-after")
                await guard.atoken("async-after")
                key = broker.key("async-after")
                async_stored.append(await broker.store.aget_token(key) is not None)

        async def async_work() -> None:
            await asyncio.gather(after_recovery(), *(asking(i) for i in WARM + ASYNC_COLD))

        with broker:
            for instance in WARM:
                guard.token(instance)
            master = doomed_group.master_port()
            with doomed_group.nodes[0].client() as client:  # the first master
                # the warm tokens reached the replica: replication is asynchronous,
                # and a write it had not carried yet would be lost to the failover
                assert client.wait(1, 5000) >= 1
            threads = [threading.Thread(target=work, args=(i,)) for i in WARM + COLD]
            threads.append(threading.Thread(target=asyncio.run, args=(async_work(),)))
            doomed_group.kill_master()
            for thread in threads:
                thread.start()
            try:
                wait_until(degraded_seen.is_set, "the broker to notice the dead master")
                promoted = doomed_group.wait_for_failover(master)
                # recovered: a new instance goes through the store on the promoted master
                probe = iter(range(1000))

                def back() -> bool:
                    instance = f"after-{next(probe)}"
                    wix_emulator.install(instance)
                    guard.token(instance)
                    return broker.engine.health.error is None and (
                        broker.store.get_token(broker.key(instance)) is not None
                    )

                wait_until(back, "the broker to come back onto the promoted replica", 30)
                recovered.set()
                wait_until(lambda: bool(async_stored), "the async client to write after it")
            finally:
                stop.set()
                for thread in threads:
                    thread.join(30)
            assert errors == []
            assert promoted != master
            assert async_stored == [True]

        # A fresh process reads what the failover kept: the warm tokens came
        # through it; a cold one, fetched while degraded, was never stored and
        # costs its one extra request now.
        with TokenBroker(
            app_id=APP_ID, app_secret=APP_SECRET, store=url, api_url=wix_emulator.url
        ) as fresh:
            again = Invariants(fresh, wix_emulator)
            for instance in WARM + COLD + ASYNC_COLD:
                again.token(instance)
        for instance in WARM:
            assert len(wix_emulator.issued_tokens_for(instance)) == 1, instance
        for instance in COLD + ASYNC_COLD:
            assert len(wix_emulator.issued_tokens_for(instance)) <= 2, instance
