"""The conformance tests of a store's async methods, one per family of sync ones."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import attrs
import pytest

from tokenbroker.core.protocols import Store

from .base import _ConformanceBase
from .helpers import _BASE, _installation, _new_key, _token


class _AsyncConformance(_ConformanceBase):
    """The ``a``-prefixed twins of the token, lease and installation methods."""

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
