"""The conformance tests of a store's leases: exclusion, ownership, lapsing."""

from __future__ import annotations

import attrs

from tokenbroker.core.protocols import Store

from .base import _ConformanceBase
from .helpers import _acquire_within, _contend, _new_key


class _LeaseConformance(_ConformanceBase):
    """Leases: ``acquire_lease`` and ``release_lease``."""

    def test_acquire_lease_grants_a_lease_on_a_free_key(self, store: Store) -> None:
        key = _new_key()
        lease = store.acquire_lease(key, 30)
        assert lease is not None
        assert lease.key == key
        assert lease.owner

    def test_second_acquire_is_refused_while_the_lease_is_held(self, store: Store) -> None:
        key = _new_key()
        assert store.acquire_lease(key, 30) is not None
        assert store.acquire_lease(key, 30) is None

    def test_release_by_the_owner_frees_the_key(self, store: Store) -> None:
        key = _new_key()
        lease = store.acquire_lease(key, 30)
        assert lease is not None
        assert store.release_lease(lease) is True
        assert store.release_lease(lease) is False
        assert store.acquire_lease(key, 30) is not None

    def test_a_lease_forged_with_another_owner_cannot_release(self, store: Store) -> None:
        key = _new_key()
        lease = store.acquire_lease(key, 30)
        assert lease is not None
        forged = attrs.evolve(lease, owner=lease.owner + "-forged")
        assert store.release_lease(forged) is False
        assert store.acquire_lease(key, 30) is None

    def test_an_old_owner_cannot_release_the_lease_a_new_owner_took_after_the_ttl(
        self, store: Store
    ) -> None:
        key = _new_key()
        old = store.acquire_lease(key, self.short_ttl)
        assert old is not None
        new = _acquire_within(store, key, 30, self.short_ttl + self.lapse_deadline)
        assert store.release_lease(old) is False
        assert store.acquire_lease(key, 30) is None
        assert store.release_lease(new) is True

    def test_leases_on_different_keys_do_not_block_each_other(self, store: Store) -> None:
        assert store.acquire_lease(_new_key(), 30) is not None
        assert store.acquire_lease(_new_key(), 30) is not None

    def test_a_lease_lapses_after_its_ttl_even_if_never_released(self, store: Store) -> None:
        key = _new_key()
        assert store.acquire_lease(key, self.short_ttl) is not None
        _acquire_within(store, key, 30, self.short_ttl + self.lapse_deadline)

    def test_many_threads_contending_for_one_lease_produce_exactly_one_winner(
        self, store: Store
    ) -> None:
        assert len(_contend(store, _new_key(), self.threads)) == 1
