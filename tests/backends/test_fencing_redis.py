"""What the Redis store keeps for fencing: owners with fences, released markers,
fences on token documents, and lease values it did not write."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest

from tokenbroker.backends.redis import RedisStore
from tokenbroker.backends.redis.scripts import RELEASED_KEEP_MS
from tokenbroker.testing.conformance import _token
from tokenbroker.testing.conformance.helpers import _BASE, _new_key


@pytest.fixture
def store(redis_url: str, unique_prefix: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url, key_prefix=f"{unique_prefix}:")
    yield store
    store.close()


def test_a_lease_key_holds_its_owner_with_the_fence(store: RedisStore) -> None:
    key = _new_key()
    lease = store.acquire_lease(key, 30)
    assert lease is not None
    assert lease.owner.endswith(f":{lease.fence}")
    assert store.client.get(store.lease_key(key)) == lease.owner.encode()


def test_a_release_leaves_a_marker_with_the_fence_for_a_while(store: RedisStore) -> None:
    key = _new_key()
    lease = store.acquire_lease(key, 30)
    assert lease is not None
    assert store.release_lease(lease) is True
    name = store.lease_key(key)
    assert store.client.get(name) == f"~:{lease.fence}".encode()
    assert 0 < store.client.pttl(name) <= RELEASED_KEEP_MS
    again = store.acquire_lease(key, 30)
    assert again is not None
    assert again.fence > lease.fence


def test_a_lease_value_written_by_an_older_release_counts_as_held(store: RedisStore) -> None:
    key = _new_key()
    store.client.set(store.lease_key(key), "0123456789abcdef", px=30_000)  # no fence
    assert store.acquire_lease(key, 30) is None


def test_a_token_document_keeps_its_fence_through_an_unfenced_write(store: RedisStore) -> None:
    key = _new_key()
    lease = store.acquire_lease(key, 30)
    assert lease is not None
    assert store.put_token(_token(key), fence=lease.fence) is True
    newer = _token(key, obtained=_BASE + timedelta(seconds=1))
    assert store.put_token(newer) is True
    raw = store.client.get(store.token_key(key))
    assert raw is not None
    assert json.loads(raw)["fence"] == lease.fence
    assert store.get_token(key) == newer
