"""The conformance tests of fenced leases: fences that grow, renewals, refused
stale writes (``tokenbroker.core.fencing``)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from tokenbroker.core.protocols import Lease, Store
from tokenbroker.core.token import TokenKey

from .base import _ConformanceBase
from .helpers import _BASE, _acquire_within, _contend, _new_key, _token


def _taken(store: Store, key: TokenKey, ttl: float = 30) -> Lease:
    lease = store.acquire_lease(key, ttl)
    assert lease is not None
    return lease


class _FencingConformance(_ConformanceBase):
    """Fences, ``renew_lease`` and ``put_token(fence=...)``."""

    def _lapsed(self, store: Store, key: TokenKey) -> tuple[Lease, Lease]:
        """A short lease on ``key``, and the lease a second holder took once it lapsed."""
        old = _taken(store, key, self.short_ttl)
        return old, _acquire_within(store, key, 30, self.short_ttl + self.lapse_deadline)

    def test_every_lease_carries_a_fence(self, store: Store) -> None:
        assert _taken(store, _new_key()).fence > 0

    def test_fences_grow_per_key_across_release_and_lapse(self, store: Store) -> None:
        key = _new_key()
        first = _taken(store, key)
        assert store.release_lease(first) is True
        second = _taken(store, key, self.short_ttl)
        third = _acquire_within(store, key, 30, self.short_ttl + self.lapse_deadline)
        assert first.fence < second.fence < third.fence

    def test_threads_contending_for_a_released_lease_produce_exactly_one_winner(
        self, store: Store
    ) -> None:
        key = _new_key()
        released = _taken(store, key)
        assert store.release_lease(released) is True  # the record stays, free
        winners = _contend(store, key, self.threads)
        assert len(winners) == 1
        assert winners[0].fence > released.fence

    def test_renew_extends_a_held_lease_past_its_ttl(self, store: Store) -> None:
        key = _new_key()
        # long enough that the renewal surely comes first, on a loaded machine too
        lease = _taken(store, key, 5 * self.short_ttl)
        renewed = store.renew_lease(lease, 30)
        assert renewed is not None
        assert (renewed.owner, renewed.fence) == (lease.owner, lease.fence)
        assert renewed.expires_at > lease.expires_at
        give_up = time.monotonic() + self.lapse_deadline
        while time.time() < lease.expires_at + 0.1:  # past the first ttl, by the clock
            assert time.monotonic() < give_up, "the clock did not pass the first ttl"
            time.sleep(0.02)
        assert store.acquire_lease(key, 30) is None
        assert store.release_lease(renewed) is True

    def test_renew_fails_once_the_lease_was_taken_over_or_released(self, store: Store) -> None:
        key = _new_key()
        old, new = self._lapsed(store, key)
        assert store.renew_lease(old, 30) is None
        assert store.acquire_lease(key, 30) is None  # the failed renewal took nothing
        assert store.renew_lease(new, 30) is not None
        assert store.release_lease(new) is True
        assert store.renew_lease(new, 30) is None

    def test_a_put_under_an_older_fence_is_refused_even_when_obtained_later(
        self, store: Store
    ) -> None:
        key = _new_key()
        old, new = self._lapsed(store, key)
        # the later lease exists, nothing written under it yet: the lease refuses
        late = _token(key, obtained=_BASE + timedelta(hours=1))
        assert store.put_token(late, fence=old.fence) is False
        assert store.get_token(key) is None
        current = _token(key)
        assert store.put_token(current, fence=new.fence) is True
        assert store.put_token(late, fence=old.fence) is False
        assert store.get_token(key) == current

    def test_a_token_written_under_a_later_fence_refuses_older_ones_after_release(
        self, store: Store
    ) -> None:
        key = _new_key()
        old, new = self._lapsed(store, key)
        current = _token(key)
        assert store.put_token(current, fence=new.fence) is True
        assert store.release_lease(new) is True
        assert (
            store.put_token(_token(key, obtained=_BASE + timedelta(hours=1)), fence=old.fence)
            is False
        )
        assert store.get_token(key) == current

    def test_a_put_under_the_current_fence_is_compare_and_set_as_usual(self, store: Store) -> None:
        key = _new_key()
        lease = _taken(store, key)
        token = _token(key)
        assert store.put_token(token, fence=lease.fence) is True
        older = _token(key, obtained=_BASE - timedelta(seconds=1))
        assert store.put_token(older, fence=lease.fence) is False
        newer = _token(key, obtained=_BASE + timedelta(seconds=1))
        assert store.put_token(newer, fence=lease.fence) is True
        assert store.get_token(key) == newer

    def test_an_unfenced_put_is_compare_and_set_alone(self, store: Store) -> None:
        key = _new_key()
        old, new = self._lapsed(store, key)
        token = _token(key)
        assert store.put_token(token, fence=new.fence) is True
        assert store.put_token(_token(key, obtained=_BASE - timedelta(seconds=1))) is False
        newer = _token(key, obtained=_BASE + timedelta(seconds=1))
        assert store.put_token(newer) is True
        assert store.get_token(key) == newer
        # and the key still remembers the later fence: the stale holder stays refused
        assert (
            store.put_token(_token(key, obtained=_BASE + timedelta(hours=1)), fence=old.fence)
            is False
        )
        assert store.get_token(key) == newer

    @pytest.mark.asyncio
    async def test_async_renew_and_fenced_put(self, store: Store) -> None:
        key = _new_key()
        old = await store.aacquire_lease(key, 30)
        assert old is not None
        shortened = await store.arenew_lease(old, self.short_ttl)  # now + ttl: shorter
        assert shortened is not None
        new = _acquire_within(store, key, 30, self.short_ttl + self.lapse_deadline)
        assert await store.arenew_lease(old, 30) is None
        current = _token(key)
        assert await store.aput_token(current, fence=new.fence) is True
        late = _token(key, obtained=_BASE + timedelta(hours=1))
        assert await store.aput_token(late, fence=old.fence) is False
        assert await store.aget_token(key) == current
        assert await store.arelease_lease(new) is True
