"""The bulk refresher's batch operations (``bulk_for``) on every backend.

Memory (per-key fallback), SQLite, PostgreSQL, MariaDB, Redis and a private Redis
Cluster: the due listing returns exactly the due, active installations; batched
leases skip keys another holder has; batched writes never overwrite a newer token
or a token of a newer lease; the wrappers' encryption and guard hold for batches.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tokenbroker import ConfigError
from tokenbroker.backends.bulk import bulk_for
from tokenbroker.backends.encrypted import EncryptedStore, PlaintextGuard, new_key
from tokenbroker.backends.memory import MemoryStore
from tokenbroker.backends.redis import RedisStore
from tokenbroker.backends.sql import SQLStore
from tokenbroker.core.bulk import BulkTokenStore, DuePage, PerKeyBulk
from tokenbroker.core.clock import to_datetime
from tokenbroker.core.health import HealthState, InstallationHealth, to_record
from tokenbroker.core.installation import Installation, InstallationStatus
from tokenbroker.core.policy import RefreshPolicy
from tokenbroker.core.protocols import Store
from tokenbroker.core.token import Token, TokenKey

from ..polling import wait_until
from .conftest_topologies import redis_cluster
from .redis_topologies import RedisCluster

__all__ = ["redis_cluster"]  # the fixture, imported for pytest

PROVIDER = "wix"
HOUR = 3600.0
POLICY = RefreshPolicy(jitter=0.0)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture(params=["memory", "sqlite", "postgres", "mysql", "redis", "redis-cluster"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    kind = request.param
    made: Any
    if kind == "memory":
        made = MemoryStore()
    elif kind == "sqlite":
        made = SQLStore(sqlite_url(tmp_path / "bulk.db"))
    elif kind in ("postgres", "mysql"):
        url = request.getfixturevalue(f"{kind}_url")
        made = SQLStore(url, table_prefix=request.getfixturevalue("session_prefix"))
    elif kind == "redis":
        url = request.getfixturevalue("redis_url")
        made = RedisStore(url, key_prefix=f"{request.getfixturevalue('session_prefix')}bulk:")
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        made = RedisStore(cluster.url, key_prefix=f"tb_bulk_{uuid.uuid4().hex[:8]}:")
    yield made
    made.close()


@pytest.fixture
def app() -> str:
    return f"bulk-{uuid.uuid4().hex[:10]}"  # every test its own app: shared tables stay apart


def key(app: str, instance_id: str) -> TokenKey:
    return TokenKey(PROVIDER, app, instance_id)


def token(k: TokenKey, obtained: float, lifetime: float = 4 * HOUR, tag: str = "") -> Token:
    raw = Token(
        key=k,
        access_token=f"tok-{k.instance_id}-{tag or obtained}",
        token_type="Bearer",
        obtained_at=to_datetime(obtained),
        expires_at=to_datetime(obtained + lifetime),
    )
    return POLICY.stamp(raw)


def install(store: Store, app: str, *ids: str, removed: bool = False) -> None:
    status = InstallationStatus.REMOVED if removed else InstallationStatus.INSTALLED
    for instance_id in ids:
        store.put_installation(Installation(app_id=app, instance_id=instance_id, status=status))


def listed(bulk: BulkTokenStore, app: str, now: float, until: float, page: int) -> list[DuePage]:
    return list(bulk.due_pages(PROVIDER, app, now=now, until=until, page=page))


class TestTheDueListing:
    def test_lists_exactly_the_due_active_installations(self, store: Store, app: str) -> None:
        now = time.time()
        install(store, app, "a-missing", "b-fresh", "c-expiring", "d-advisory", "f-failing")
        install(store, app, "e-removed", removed=True)
        store.put_token(token(key(app, "b-fresh"), now))
        store.put_token(token(key(app, "c-expiring"), now - 3.8 * HOUR))  # 12 min left
        # Past its advisory refresh time (12.5% of 4 h before expiry), yet it expires
        # after ``until``: due by the policy's stamp, not by ``within``.
        store.put_token(token(key(app, "d-advisory"), now - 3.6 * HOUR))
        failing = InstallationHealth(
            "f-failing", state=HealthState.FAILING, failures=2, updated_at=to_datetime(now)
        )
        store.put_installation(to_record(app, failing))
        pages = listed(bulk_for(store), app, now, now + 600, page=500)
        due = {row.key.instance_id: row for page in pages for row in page.due}
        fresh = [i for page in pages for i in page.fresh]
        assert sorted(due) == ["a-missing", "c-expiring", "d-advisory", "f-failing"]
        assert fresh == ["b-fresh"]
        assert due["a-missing"].token is None
        assert due["c-expiring"].token == token(key(app, "c-expiring"), now - 3.8 * HOUR)
        health = due["f-failing"].health
        assert health is not None
        assert health.failing
        assert health.failures == 2
        assert due["a-missing"].health is None

    def test_pages_cover_the_fleet_once_in_instance_id_order(self, store: Store, app: str) -> None:
        now = time.time()
        ids = [f"inst-{n:03d}" for n in range(23)]
        install(store, app, *ids)
        for instance_id in ids[::3]:
            store.put_token(token(key(app, instance_id), now))
        pages = listed(bulk_for(store), app, now, now + 600, page=5)
        assert len(pages) >= 5
        due = [row.key.instance_id for page in pages for row in page.due]
        fresh = [i for page in pages for i in page.fresh]
        assert due == [i for n, i in enumerate(ids) if n % 3]
        assert sorted(fresh) == ids[::3]

    def test_an_empty_app_lists_nothing(self, store: Store, app: str) -> None:
        now = time.time()
        assert listed(bulk_for(store), app, now, now + 600, page=10) == []


class TestBatchedLeases:
    def test_keys_held_by_another_holder_are_skipped(self, store: Store, app: str) -> None:
        keys = [key(app, f"i{n}") for n in range(4)]
        held = store.acquire_lease(keys[1], 30)
        assert held is not None
        bulk = bulk_for(store)
        leases = bulk.acquire_leases(keys, 30)
        assert leases[1] is None
        assert all(lease is not None for n, lease in enumerate(leases) if n != 1)
        assert bulk.acquire_leases(keys, 30) == [None] * 4  # all held now
        assert store.acquire_lease(keys[0], 30) is None  # the per-key call sees them too

    def test_released_leases_are_free_again_with_later_fences(self, store: Store, app: str) -> None:
        keys = [key(app, f"i{n}") for n in range(3)]
        bulk = bulk_for(store)
        first = bulk.acquire_leases(keys, 30)
        taken = [lease for lease in first if lease is not None]
        assert len(taken) == 3
        assert bulk.release_leases(taken) == 3
        again = bulk.acquire_leases(keys, 30)
        assert all(lease is not None for lease in again)
        for before, after in zip(taken, again, strict=True):
            assert after is not None
            assert after.fence > before.fence > 0
        assert bulk.release_leases(taken) == 0  # old leases release nothing

    def test_a_batch_lease_s_fence_stays_above_the_stored_token_s(
        self, store: Store, app: str
    ) -> None:
        k = key(app, "i1")
        ahead = int((time.time() + 3600) * 1_000_000)  # a writer whose clock ran an hour ahead
        assert store.put_token(token(k, time.time()), fence=ahead)
        (lease,) = bulk_for(store).acquire_leases([k], 30)
        assert lease is not None
        assert lease.fence > ahead


class TestBatchedWrites:
    def test_a_newer_stored_token_is_never_overwritten(self, store: Store, app: str) -> None:
        now = time.time()
        k1, k2 = key(app, "i1"), key(app, "i2")
        newer = token(k1, now, tag="newer")
        assert store.put_token(newer)
        bulk = bulk_for(store)
        written = bulk.put_tokens([(token(k1, now - 60, tag="older"), 0), (token(k2, now), 0)])
        assert written == [False, True]
        assert store.get_token(k1) == newer
        assert bulk.get_tokens([k1, k2, key(app, "none")]) == [newer, token(k2, now), None]

    def test_a_stale_holder_cannot_overwrite_a_newer_lease_s_token(
        self, store: Store, app: str
    ) -> None:
        now = time.time()
        k = key(app, "i1")
        bulk = bulk_for(store)
        (stale,) = bulk.acquire_leases([k], 0.001)  # lapses at once
        assert stale is not None
        current: list[Any] = []

        def taken_over() -> bool:
            current[:] = bulk.acquire_leases([k], 30)
            return current[0] is not None

        wait_until(taken_over, "the lapsed lease to be free")
        newer = current[0]
        assert newer.fence > stale.fence
        # The stale holder's token, obtained later, is refused by the fence...
        assert bulk.put_tokens([(token(k, now + 5, tag="stale"), stale.fence)]) == [False]
        assert store.get_token(k) is None
        assert bulk.put_tokens([(token(k, now, tag="holder"), newer.fence)]) == [True]
        # ...and so after the holder wrote: the stored token carries the newer fence.
        bulk.release_leases([newer])
        assert bulk.put_tokens([(token(k, now + 9, tag="stale"), stale.fence)]) == [False]
        stored = store.get_token(k)
        assert stored is not None
        assert stored.access_token.endswith("holder")


class TestWhichBatchOperations:
    def test_a_store_without_batches_gets_the_per_key_fallback(self) -> None:
        assert isinstance(bulk_for(MemoryStore()), PerKeyBulk)

    def test_the_sql_and_redis_stores_get_their_own(self, store: Store) -> None:
        name = type(bulk_for(store)).__name__
        assert name == {"MemoryStore": "PerKeyBulk"}.get(type(store).__name__, name)
        if isinstance(store, SQLStore | RedisStore):
            assert not isinstance(bulk_for(store), PerKeyBulk)


class TestWrappedStores:
    def test_an_encrypted_store_s_batches_are_encrypted(self, tmp_path: Path, app: str) -> None:
        inner = SQLStore(sqlite_url(tmp_path / "enc.db"))
        store = EncryptedStore(inner, new_key())
        now = time.time()
        k = key(app, "i1")
        install(store, app, "i1")
        bulk = bulk_for(store)
        assert bulk.put_tokens([(token(k, now - 3.9 * HOUR, tag="plain"), 0)]) == [True]
        raw = inner.get_token(k)
        assert raw is not None
        assert raw.access_token.startswith("fernet:")
        (page,) = listed(bulk, app, now, now + 600, page=10)
        opened = page.due[0].token
        assert opened is not None
        assert opened.access_token.endswith("plain")
        assert store.get_token(k) == opened
        inner.close()

    def test_the_plaintext_guard_refuses_an_encrypted_store(self, tmp_path: Path, app: str) -> None:
        inner = SQLStore(sqlite_url(tmp_path / "enc.db"))
        EncryptedStore(inner, new_key()).put_token(token(key(app, "i1"), time.time()))
        install(inner, app, "i1")
        bulk = bulk_for(PlaintextGuard(inner))
        with pytest.raises(ConfigError, match="encrypted"):
            listed(bulk, app, time.time(), time.time() + 600, page=10)
        with pytest.raises(ConfigError, match="encrypted"):
            bulk.put_tokens([(token(key(app, "i1"), time.time()), 0)])
        inner.close()


def test_tokens_judged_by_their_stamps_alone_are_listed_in_order() -> None:
    """A store without the refresh stamps (a third-party one) still lists due ones."""
    store = MemoryStore()
    now = time.time()
    install(store, "app", "a", "b")
    unstamped = attrs.evolve(token(key("app", "a"), now), refresh_at=None, must_refresh_at=None)
    store.put_token(unstamped)
    store.put_token(token(key("app", "b"), now - 10 * 60))
    (page,) = listed(bulk_for(store), "app", now, now + 600, page=10)
    assert [row.key.instance_id for row in page.due] == ["a"]  # unstamped: judged again
    assert page.fresh == ["b"]
