"""The battery of tests every storage backend passes.

Subclass ``StoreConformance`` in a test module and give it a ``store`` fixture::

    from tokenbroker.testing.conformance import StoreConformance

    class TestMyStoreConformance(StoreConformance):
        @pytest.fixture
        def store(self):
            store = MyStore(...)
            yield store
            store.close()

Every test makes its own keys (uuid4), so the store may be shared with other
tests, other processes, or hold data from earlier runs. A backend that can
damage a stored record on purpose overrides ``corrupt_token`` to run the
"corrupted record reads as missing" test; otherwise that test is skipped.

Needs pytest and pytest-asyncio (the async tests carry the ``asyncio`` mark,
so they run in pytest-asyncio's strict mode as well as in auto mode).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import attrs
import pytest

from tokenbroker.core.installation import Installation, InstallationStatus
from tokenbroker.core.protocols import InstallationStore, Lease, Store, TokenStore
from tokenbroker.core.token import Token, TokenKey

__all__ = ["StoreConformance"]

# Microseconds that are not round: a store that drops them, or stores floats, shows.
_BASE = datetime(2031, 5, 17, 8, 30, 12, 345_678, tzinfo=UTC)


def _new_key(provider: str = "wix") -> TokenKey:
    return TokenKey(provider, f"app-{uuid.uuid4().hex[:12]}", f"inst-{uuid.uuid4()}")


def _token(
    key: TokenKey,
    *,
    obtained: datetime = _BASE,
    lifetime: timedelta = timedelta(hours=4),
    access_token: str | None = None,
    stamped: bool = True,
) -> Token:
    expires = obtained + lifetime
    return Token(
        key=key,
        access_token=access_token or f"OAUTH2.{uuid.uuid4().hex}",
        token_type="Bearer",  # noqa: S106 - a token type, not a password
        obtained_at=obtained,
        expires_at=expires,
        refresh_at=expires - timedelta(minutes=37, microseconds=123_457) if stamped else None,
        must_refresh_at=expires - timedelta(minutes=12, microseconds=1) if stamped else None,
    )


def _installation(
    app_id: str,
    instance_id: str | None = None,
    *,
    status: InstallationStatus = InstallationStatus.INSTALLED,
    updated: datetime | None = _BASE,
    **changes: Any,
) -> Installation:
    installation = Installation(
        app_id=app_id,
        instance_id=instance_id or f"inst-{uuid.uuid4()}",
        status=status,
        installed_at=_BASE - timedelta(days=3, microseconds=7),
        removed_at=_BASE if status is InstallationStatus.REMOVED else None,
        setup_finished_at=_BASE - timedelta(days=2, microseconds=999_999),
        updated_at=updated,
        extra={"plan": "premium", "seats": 3, "tags": ["a", "b"], "nested": {"x": None}},
    )
    return attrs.evolve(installation, **changes)


def _assert_aware(*moments: datetime | None) -> None:
    for moment in moments:
        if moment is not None:
            assert moment.tzinfo is not None
            assert moment.utcoffset() is not None


def _acquire_within(store: TokenStore, key: TokenKey, ttl: float, deadline: float) -> Lease:
    """Poll until the key's lease can be taken; fail once ``deadline`` seconds pass."""
    give_up = time.monotonic() + deadline
    while True:
        lease = store.acquire_lease(key, ttl)
        if lease is not None:
            return lease
        if time.monotonic() > give_up:
            pytest.fail(f"the lease on {key} was still held {deadline} s after its ttl")
        time.sleep(0.02)  # polling an observable state, not waiting a guessed time


class StoreConformance:
    """What every ``Store`` guarantees, as tests. Subclass it; provide ``store``.

    The name does not start with ``Test``: pytest collects the subclasses only.
    """

    #: how many threads fight over one lease, and write one token at once
    threads: ClassVar[int] = 20
    #: a lease ttl short enough to watch lapse
    short_ttl: ClassVar[float] = 0.2
    #: how long past ``short_ttl`` a lapsed lease may still look held
    lapse_deadline: ClassVar[float] = 10.0

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        raise NotImplementedError("a StoreConformance subclass must provide a `store` fixture")

    def corrupt_token(self, store: Store, key: TokenKey) -> object:
        """Damage the stored token for ``key`` so it cannot be read back.

        Return ``NotImplemented`` (the default) or raise ``NotImplementedError``
        when the backend cannot do that; the corruption test then skips.
        """
        return NotImplemented

    # --- the protocol ------------------------------------------------------

    def test_store_satisfies_the_store_protocols(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert isinstance(store, TokenStore)
        assert isinstance(store, InstallationStore)
        assert isinstance(store.shared, bool)
        assert isinstance(store.url, str)

    # --- tokens ------------------------------------------------------------

    def test_get_of_a_missing_token_returns_none(self, store: Store) -> None:
        assert store.get_token(_new_key()) is None

    def test_put_then_get_round_trips_every_field_exactly(self, store: Store) -> None:
        token = _token(_new_key())
        assert store.put_token(token) is True
        got = store.get_token(token.key)
        assert got == token
        assert got is not None
        _assert_aware(got.obtained_at, got.expires_at, got.refresh_at, got.must_refresh_at)

    def test_put_then_get_round_trips_a_token_without_refresh_stamps(self, store: Store) -> None:
        token = _token(_new_key(), stamped=False)
        store.put_token(token)
        assert store.get_token(token.key) == token

    def test_times_in_another_timezone_come_back_as_the_same_instants(self, store: Store) -> None:
        plus_two = timezone(timedelta(hours=2))
        token = _token(_new_key(), obtained=_BASE.astimezone(plus_two))
        store.put_token(token)
        got = store.get_token(token.key)
        assert got is not None
        assert got.obtained_at == _BASE
        assert got.expires_at == token.expires_at
        _assert_aware(got.obtained_at, got.expires_at)

    def test_tokens_are_kept_apart_by_provider_app_and_instance(self, store: Store) -> None:
        key = _new_key()
        neighbours = [
            attrs.evolve(key, provider="legacy"),
            attrs.evolve(key, app_id=key.app_id + "-other"),
            attrs.evolve(key, instance_id=key.instance_id + "-other"),
            attrs.evolve(key, instance_id=key.instance_id.upper()),
        ]
        token = _token(key)
        store.put_token(token)
        for other in neighbours:
            assert store.get_token(other) is None
        other_token = _token(neighbours[-1])
        store.put_token(other_token)
        assert store.get_token(key) == token
        assert store.get_token(neighbours[-1]) == other_token

    def test_put_refuses_a_token_obtained_before_the_stored_one(self, store: Store) -> None:
        key = _new_key()
        newer = _token(key, obtained=_BASE)
        older = _token(key, obtained=_BASE - timedelta(microseconds=1))
        assert store.put_token(newer) is True
        assert store.put_token(older) is False
        assert store.get_token(key) == newer

    def test_put_replaces_the_stored_token_with_one_obtained_later(self, store: Store) -> None:
        key = _new_key()
        first = _token(key, obtained=_BASE)
        later = _token(key, obtained=_BASE + timedelta(microseconds=1))
        assert store.put_token(first) is True
        assert store.put_token(later) is True
        assert store.get_token(key) == later

    def test_expired_tokens_are_still_returned_freshness_is_the_policys_call(
        self, store: Store
    ) -> None:
        long_ago = datetime(2001, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
        token = _token(_new_key(), obtained=long_ago, lifetime=timedelta(minutes=5))
        store.put_token(token)
        assert store.get_token(token.key) == token

    def test_delete_removes_the_token_and_says_so(self, store: Store) -> None:
        token = _token(_new_key())
        store.put_token(token)
        assert store.delete_token(token.key) is True
        assert store.get_token(token.key) is None
        assert store.delete_token(token.key) is False

    def test_delete_of_a_missing_token_returns_false(self, store: Store) -> None:
        assert store.delete_token(_new_key()) is False

    def test_delete_only_the_matching_access_token_deletes_it(self, store: Store) -> None:
        token = _token(_new_key())
        store.put_token(token)
        assert store.delete_token(token.key, only=token.access_token) is True
        assert store.get_token(token.key) is None

    def test_delete_only_another_access_token_keeps_the_stored_one(self, store: Store) -> None:
        token = _token(_new_key())
        store.put_token(token)
        assert store.delete_token(token.key, only=token.access_token + "-stale") is False
        assert store.get_token(token.key) == token

    def test_concurrent_puts_from_many_threads_leave_the_newest_token(self, store: Store) -> None:
        key = _new_key()
        tokens = [_token(key, obtained=_BASE + timedelta(seconds=i)) for i in range(self.threads)]
        random.shuffle(tokens)
        start = threading.Barrier(len(tokens))

        def put(token: Token) -> bool:
            start.wait()
            return store.put_token(token)

        with ThreadPoolExecutor(len(tokens)) as pool:
            written = list(pool.map(put, tokens))
        newest = max(tokens, key=lambda t: t.obtained_at)
        assert store.get_token(key) == newest
        assert written[tokens.index(newest)] is True

    def test_non_ascii_keys_and_tokens_round_trip(self, store: Store) -> None:
        key = TokenKey("wix", f"app-ünï-{uuid.uuid4().hex[:8]}", f"inst-😀-ß-{uuid.uuid4()}")
        token = _token(key, access_token=f"tök€n-😀-{uuid.uuid4().hex}")
        store.put_token(token)
        assert store.get_token(key) == token
        assert store.get_token(attrs.evolve(key, instance_id=key.instance_id.upper())) is None

    def test_corrupted_token_reads_as_missing_with_a_warning_and_put_overwrites_it(
        self, store: Store, caplog: pytest.LogCaptureFixture
    ) -> None:
        token = _token(_new_key())
        store.put_token(token)
        try:
            done = self.corrupt_token(store, token.key)
        except NotImplementedError:
            done = NotImplemented
        if done is NotImplemented:
            pytest.skip(f"{type(self).__name__} cannot corrupt a stored token")
        with caplog.at_level(logging.WARNING):
            assert store.get_token(token.key) is None
        assert any(record.levelno >= logging.WARNING for record in caplog.records)
        # Even a token obtained earlier than the damaged one replaces it.
        replacement = _token(token.key, obtained=_BASE - timedelta(days=1))
        assert store.put_token(replacement) is True
        assert store.get_token(token.key) == replacement

    # --- leases --------------------------------------------------------------

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
        key = _new_key()
        start = threading.Barrier(self.threads)

        def contend(_: int) -> Lease | None:
            start.wait()
            return store.acquire_lease(key, 60)

        with ThreadPoolExecutor(self.threads) as pool:
            results = list(pool.map(contend, range(self.threads)))
        winners = [lease for lease in results if lease is not None]
        assert len(winners) == 1

    # --- installations -------------------------------------------------------

    def test_get_of_a_missing_installation_returns_none(self, store: Store) -> None:
        assert store.get_installation(f"app-{uuid.uuid4()}", "inst-1") is None

    def test_put_then_get_installation_round_trips_every_field(self, store: Store) -> None:
        app = f"app-{uuid.uuid4()}"
        inst = _installation(app, origin_instance_id=f"origin-{uuid.uuid4()}")
        assert store.put_installation(inst) is True
        got = store.get_installation(app, inst.instance_id)
        assert got == inst
        assert got is not None
        _assert_aware(got.installed_at, got.setup_finished_at, got.updated_at)

    def test_put_of_the_identical_installation_returns_false(self, store: Store) -> None:
        inst = _installation(f"app-{uuid.uuid4()}")
        assert store.put_installation(inst) is True
        assert store.put_installation(attrs.evolve(inst)) is False

    def test_an_installation_with_older_updated_at_does_not_replace_a_newer_one(
        self, store: Store
    ) -> None:
        newer = _installation(f"app-{uuid.uuid4()}", status=InstallationStatus.REMOVED)
        older = attrs.evolve(
            newer,
            status=InstallationStatus.INSTALLED,
            removed_at=None,
            updated_at=_BASE - timedelta(microseconds=1),
        )
        assert store.put_installation(newer) is True
        assert store.put_installation(older) is False
        assert store.get_installation(newer.app_id, newer.instance_id) == newer

    def test_an_installation_with_newer_updated_at_replaces_the_stored_one(
        self, store: Store
    ) -> None:
        first = _installation(f"app-{uuid.uuid4()}")
        removed = attrs.evolve(
            first,
            status=InstallationStatus.REMOVED,
            removed_at=_BASE + timedelta(hours=1),
            updated_at=_BASE + timedelta(hours=1),
        )
        assert store.put_installation(first) is True
        assert store.put_installation(removed) is True
        assert store.get_installation(first.app_id, first.instance_id) == removed

    def test_a_record_without_updated_at_loses_to_a_stored_one_with_it(self, store: Store) -> None:
        dated = _installation(f"app-{uuid.uuid4()}")
        undated = attrs.evolve(dated, updated_at=None, extra={"from": "backfill"})
        assert store.put_installation(dated) is True
        assert store.put_installation(undated) is False
        assert store.get_installation(dated.app_id, dated.instance_id) == dated

    def test_concurrent_installation_puts_leave_the_latest_updated_at(self, store: Store) -> None:
        app = f"app-{uuid.uuid4()}"
        instance_id = f"inst-{uuid.uuid4()}"
        records = [
            _installation(app, instance_id, updated=_BASE + timedelta(seconds=i), extra={"i": i})
            for i in range(self.threads)
        ]
        random.shuffle(records)
        start = threading.Barrier(len(records))

        def put(record: Installation) -> bool:
            start.wait()
            return store.put_installation(record)

        with ThreadPoolExecutor(len(records)) as pool:
            written = list(pool.map(put, records))
        latest = max(records, key=lambda r: r.updated_at or _BASE)
        assert store.get_installation(app, instance_id) == latest
        assert written[records.index(latest)] is True

    def test_extra_with_non_ascii_text_round_trips(self, store: Store) -> None:
        inst = _installation(f"app-{uuid.uuid4()}", extra={"site": "Café 😀", "ß": ["ü"]})
        store.put_installation(inst)
        assert store.get_installation(inst.app_id, inst.instance_id) == inst

    def test_iter_installations_skips_removed_ones_unless_asked(self, store: Store) -> None:
        app = f"app-{uuid.uuid4()}"
        live = _installation(app, "inst-a")
        gone = _installation(app, "inst-b", status=InstallationStatus.REMOVED)
        store.put_installation(live)
        store.put_installation(gone)
        assert list(store.iter_installations(app)) == [live]
        assert list(store.iter_installations(app, include_removed=True)) == [live, gone]

    def test_iter_installations_is_ordered_by_instance_id_and_scoped_to_the_app(
        self, store: Store
    ) -> None:
        app = f"app-{uuid.uuid4()}"
        ids = ["inst-B", "inst-a", "inst-0", "inst-a-2", "inst-Z", f"inst-{uuid.uuid4()}"]
        for instance_id in random.sample(ids, len(ids)):
            store.put_installation(_installation(app, instance_id))
        store.put_installation(_installation(app + "-other", "inst-1"))
        found = [inst.instance_id for inst in store.iter_installations(app)]
        assert found == sorted(ids)

    def test_iter_installations_of_an_unknown_app_is_empty(self, store: Store) -> None:
        assert list(store.iter_installations(f"app-{uuid.uuid4()}")) == []

    # --- the async twins -------------------------------------------------------

    @pytest.mark.asyncio
    async def test_async_get_of_a_missing_token_returns_none(self, store: Store) -> None:
        assert await store.aget_token(_new_key()) is None

    @pytest.mark.asyncio
    async def test_async_put_then_get_round_trips_every_field_exactly(self, store: Store) -> None:
        token = _token(_new_key())
        assert await store.aput_token(token) is True
        assert await store.aget_token(token.key) == token
        assert store.get_token(token.key) == token

    @pytest.mark.asyncio
    async def test_async_put_refuses_older_and_accepts_newer_tokens(self, store: Store) -> None:
        key = _new_key()
        token = _token(key)
        assert await store.aput_token(token) is True
        assert await store.aput_token(_token(key, obtained=_BASE - timedelta(seconds=1))) is False
        newer = _token(key, obtained=_BASE + timedelta(seconds=1))
        assert await store.aput_token(newer) is True
        assert await store.aget_token(key) == newer

    @pytest.mark.asyncio
    async def test_async_delete_honours_only(self, store: Store) -> None:
        token = _token(_new_key())
        await store.aput_token(token)
        assert await store.adelete_token(token.key, only="someone-elses") is False
        assert await store.aget_token(token.key) == token
        assert await store.adelete_token(token.key, only=token.access_token) is True
        assert await store.aget_token(token.key) is None
        assert await store.adelete_token(token.key) is False

    @pytest.mark.asyncio
    async def test_async_lease_acquire_refuse_and_release(self, store: Store) -> None:
        key = _new_key()
        lease = await store.aacquire_lease(key, 30)
        assert lease is not None
        assert await store.aacquire_lease(key, 30) is None
        assert await store.arelease_lease(attrs.evolve(lease, owner="forged")) is False
        assert await store.arelease_lease(lease) is True
        assert await store.aacquire_lease(key, 30) is not None

    @pytest.mark.asyncio
    async def test_async_lease_contention_among_tasks_has_exactly_one_winner(
        self, store: Store
    ) -> None:
        key = _new_key()
        results = await asyncio.gather(
            *(store.aacquire_lease(key, 60) for _ in range(self.threads))
        )
        assert sum(lease is not None for lease in results) == 1

    @pytest.mark.asyncio
    async def test_async_put_then_get_installation_and_idempotent_put(self, store: Store) -> None:
        inst = _installation(f"app-{uuid.uuid4()}")
        assert await store.aput_installation(inst) is True
        assert await store.aput_installation(inst) is False
        assert await store.aget_installation(inst.app_id, inst.instance_id) == inst
        older = attrs.evolve(inst, updated_at=_BASE - timedelta(days=1), extra={})
        assert await store.aput_installation(older) is False
        assert await store.aget_installation(inst.app_id, f"inst-{uuid.uuid4()}") is None
