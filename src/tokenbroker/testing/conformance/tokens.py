"""The conformance tests of a store's tokens: round trips, ordering, deletes, races."""

from __future__ import annotations

import logging
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest

from tokenbroker.core.protocols import Store
from tokenbroker.core.token import Token, TokenKey

from .base import _ConformanceBase
from .helpers import _BASE, _assert_aware, _new_key, _token


class _TokenConformance(_ConformanceBase):
    """Tokens: ``get_token``, ``put_token`` and ``delete_token``."""

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
