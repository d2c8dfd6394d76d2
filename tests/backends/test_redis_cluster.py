"""RedisStore on a private 3-master Redis Cluster (``redis_topologies``).

The conformance suite (sync and async) and the 4 x 25 cold herd run on it, and a
slot moves under a running broker: redis-py follows the ASK and MOVED redirects,
every token keeps being served, nothing is fetched twice and nothing is lost. On a
cluster of its own with a replica per master, a master is SIGKILLed mid-run and
its replica takes over: the broker rides it out in degraded mode and comes back.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from tokenbroker import StoreUnavailable, TokenBroker
from tokenbroker.backends.redis import RedisStore
from tokenbroker.core.installation import Installation
from tokenbroker.core.token import TokenKey
from tokenbroker.testing.conformance import StoreConformance
from tokenbroker.testing.emulator import WixEmulator

from ..faults.conftest import Invariants
from ..polling import wait_until
from ..workers import collect, go
from .conftest import server_unavailable
from .conftest_topologies import redis_cluster
from .redis_topologies import RedisCluster, TopologyError
from .test_herd import APP_ID, APP_SECRET, start_worker

__all__ = ["redis_cluster"]  # the fixture, imported for pytest

pytestmark = pytest.mark.backend("redis")


def prefix() -> str:
    return f"tb_cluster_{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def store(redis_cluster: RedisCluster) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_cluster.url, key_prefix=prefix())
    yield store
    await store.aclose()


class TestClusterConformance(StoreConformance):
    @pytest.fixture
    def store(self, store: RedisStore) -> RedisStore:
        return store

    def corrupt_token(self, store: Any, key: TokenKey) -> object:
        store.client.set(store.token_key(key), b'{"access_token": "half a recor')
        return None


class TestClusterKeys:
    def test_the_keys_of_one_token_share_a_slot_and_tokens_spread_over_the_masters(
        self, store: RedisStore, redis_cluster: RedisCluster
    ) -> None:
        owners = set()
        for n in range(30):
            key = TokenKey("wix", "app", f"inst-{n}")
            assert key_slot(store.token_key(key).encode()) == key_slot(
                store.lease_key(key).encode()
            )
            owners.add(redis_cluster.owner_of(store.token_key(key)).port)
        assert len(owners) == 3

    def test_installations_of_one_app_are_listed_from_one_slot(self, store: RedisStore) -> None:
        for n in range(5):
            store.put_installation(Installation(app_id="app", instance_id=f"inst-{n}"))
        listed = {i.instance_id for i in store.iter_installations("app")}
        assert listed == {f"inst-{n}" for n in range(5)}


class TestAsyncClusterClient:
    async def test_tasks_that_start_together_on_a_new_client_all_get_answers(
        self, redis_cluster: RedisCluster
    ) -> None:
        # redis-py 8.1's async cluster client, left to discover the cluster on its
        # first commands, broke some of 20 such tasks most times (AttributeError)
        for _ in range(5):
            store = RedisStore(redis_cluster.url, key_prefix=prefix())
            key = TokenKey("wix", "app", "inst-1")
            try:
                leases = await asyncio.gather(
                    *(store.aacquire_lease(key, 30) for _ in range(20)), return_exceptions=True
                )
            finally:
                await store.aclose()
            assert [type(x) for x in leases if isinstance(x, BaseException)] == []
            assert sum(lease is not None for lease in leases) == 1


class TestClusterHerd:
    def test_four_processes_of_25_threads_make_one_upstream_request(
        self, wix_emulator: WixEmulator, redis_cluster: RedisCluster
    ) -> None:
        wix_emulator.latency = 0.2
        url = f"{redis_cluster.url}?key_prefix={prefix()}"
        workers = [start_worker(wix_emulator.url, url, "inst-1", 25, 30) for _ in range(4)]
        go(*workers)
        results = collect(workers, timeout=120)
        assert [r["errors"] for r in results] == [[], [], [], []]
        assert len({tok for r in results for tok in r["tokens"]}) == 1
        assert wix_emulator.token_requests == 1


class TestSlotMigration:
    def test_a_slot_moved_during_a_run_keeps_every_token_served_and_stored(
        self, wix_emulator: WixEmulator, redis_cluster: RedisCluster
    ) -> None:
        instances = [f"move-{n}" for n in range(4)]
        for instance in instances:
            wix_emulator.install(instance)
        store = RedisStore(redis_cluster.url, key_prefix=prefix())
        # no near cache: every call reads the store
        broker = TokenBroker(
            app_id=APP_ID,
            app_secret=APP_SECRET,
            store=store,
            api_url=wix_emulator.url,
            near_cache=False,
        )
        errors: list[BaseException] = []
        served: dict[str, set[str]] = {i: set() for i in instances}
        calls = dict.fromkeys(instances, 0)
        stop = threading.Event()

        def work(instance: str) -> None:
            while not stop.is_set():
                try:
                    served[instance].add(broker.token(instance).access_token)
                    calls[instance] += 1
                except BaseException as error:  # any escape fails the test
                    errors.append(error)
                    return

        with broker:
            for instance in instances:
                broker.token(instance)
            name = store.token_key(broker.key(instances[0]))
            source = redis_cluster.owner_of(name)
            target = next(n for n in redis_cluster.nodes if n is not source)
            threads = [threading.Thread(target=work, args=(i,)) for i in instances]
            for thread in threads:
                thread.start()
            try:
                wait_until(lambda: all(calls.values()), "tokens served before the move")
                moved = redis_cluster.migrate_slot(key_slot(name.encode()), source, target)
                after = dict(calls)
                wait_until(
                    lambda: bool(errors) or all(calls[i] >= after[i] + 20 for i in instances),
                    "20 more store reads of every instance after the move",
                )
            finally:
                stop.set()
                for thread in threads:
                    thread.join(30)
            assert errors == []
            assert moved >= 1  # the token key (and maybe others) went with its slot
            assert redis_cluster.owner_of(name) is target
            stored = store.get_token(broker.key(instances[0]))
            assert stored is not None
            # one request per instance: the move lost nothing that had to be fetched again
            assert wix_emulator.token_requests == len(instances)
            for instance in instances:
                assert served[instance] == set(wix_emulator.issued_tokens_for(instance))


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """3 masters with a replica each (node timeout 1 s): one master will be killed."""
    cluster = RedisCluster(tmp_path / "replicated", replicas=1, node_timeout_ms=1000)
    try:
        try:
            cluster.start()
        except TopologyError as error:
            server_unavailable(f"the private replicated Redis Cluster did not start: {error}")
        yield cluster
    finally:
        cluster.stop()


WARM = [f"warm-{n}" for n in range(3)]  # fetched and replicated before the kill


class TestMasterFailover:
    def test_a_master_killed_mid_run_is_replaced_by_its_replica_at_one_request_at_most(
        self, wix_emulator: WixEmulator, replicated_cluster: RedisCluster
    ) -> None:
        store = RedisStore(
            f"{replicated_cluster.url}?socket_timeout=1&socket_connect_timeout=1",
            key_prefix=prefix(),
        )
        broker = TokenBroker(
            app_id=APP_ID, app_secret=APP_SECRET, store=store, api_url=wix_emulator.url
        )
        name = store.token_key(broker.key(WARM[0]))
        doomed = replicated_cluster.owner_of(name)
        # first asked for while the master is dead: three whose slots it served
        candidates = (f"cold-{n}" for n in range(1000))
        colds = [
            i
            for i in candidates
            if replicated_cluster.owner_of(store.token_key(broker.key(i))) is doomed
        ][:3]
        for instance in WARM + colds:
            wix_emulator.install(instance)
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

        with broker:
            for instance in WARM:
                guard.token(instance)
            for node in replicated_cluster.nodes:  # the warm tokens reached the replicas
                with node.client() as client:
                    if client.info("replication").get("role") == "master":
                        assert client.wait(1, 5000) >= 1
            threads = [threading.Thread(target=work, args=(i,)) for i in WARM + colds]
            dead = replicated_cluster.kill_owner(name)
            for thread in threads:
                thread.start()
            try:
                wait_until(degraded_seen.is_set, "the broker to notice the dead master")
                promoted = replicated_cluster.wait_for_promotion(name, dead)
                probe = iter(range(1000))

                def back() -> bool:
                    instance = f"after-{next(probe)}"
                    wix_emulator.install(instance)
                    guard.token(instance)
                    return broker.engine.health.error is None and (
                        store.get_token(broker.key(instance)) is not None
                    )

                wait_until(back, "the broker to come back onto the promoted replica", 30)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(30)
            assert errors == []
            assert promoted is not dead
            assert store.get_token(broker.key(WARM[0])) is not None  # kept by the replica

        # A fresh broker: the warm tokens survived; a cold one fetched while degraded
        # was never stored and costs its one extra request now.
        with TokenBroker(
            app_id=APP_ID, app_secret=APP_SECRET, store=store, api_url=wix_emulator.url
        ) as fresh:
            again = Invariants(fresh, wix_emulator)
            for instance in WARM + colds:
                again.token(instance)
        for instance in WARM:
            assert len(wix_emulator.issued_tokens_for(instance)) == 1, instance
        for instance in colds:
            assert len(wix_emulator.issued_tokens_for(instance)) <= 2, instance
