"""The lease watchdog's lifecycle: its thread ends with its engine and outlives a
renewal that raises."""

from __future__ import annotations

import asyncio
import threading
import uuid

from tokenbroker.backends.memory import MemoryStore
from tokenbroker.core.engine import TokenEngine
from tokenbroker.core.protocols import Lease, TokenProvider
from tokenbroker.core.watchdog import ThreadWatchdog

from .polling import wait_until
from .test_fencing import KEY, engine_on, provider

__all__ = ["provider"]  # the fixture, imported for pytest


def watchdog_thread(engine: TokenEngine) -> threading.Thread:
    thread = engine.watchdog._thread
    assert isinstance(thread, threading.Thread)
    assert thread.is_alive()
    return thread


class TestTheWatchdogThreadEndsWithItsEngine:
    def test_closing_the_engine_ends_the_thread_its_fetches_started(
        self,
        provider: TokenProvider,
    ) -> None:
        engine = engine_on(provider, MemoryStore())
        engine.get(KEY)  # a fenced lease: its fetch was watched
        thread = watchdog_thread(engine)
        engine.close()
        assert not thread.is_alive()
        assert engine.watchdog._thread is None

    def test_async_close_ends_it_too_and_a_later_fetch_starts_another(
        self,
        provider: TokenProvider,
    ) -> None:
        store = MemoryStore()
        engine = engine_on(provider, store)
        engine.get(KEY)
        first = watchdog_thread(engine)
        asyncio.run(engine.aclose())
        assert not first.is_alive()
        assert store.delete_token(KEY) is True
        engine.get(KEY)
        second = watchdog_thread(engine)
        assert second is not first
        engine.close()
        assert not second.is_alive()


class Interrupted(BaseException):
    """Not an ``Exception``: what a store bridging to another runtime may raise."""


class TestTheWatchdogThreadSurvivesAnyRenewal:
    def test_a_renewal_that_raises_a_base_exception_does_not_end_every_renewal(self) -> None:
        store = MemoryStore()
        watchdog = ThreadWatchdog(name=f"watchdog-{uuid.uuid4().hex}")
        raised: list[Lease] = []

        def renew(lease: Lease, ttl: float) -> Lease | None:
            if not raised:
                raised.append(lease)
                raise Interrupted
            return store.renew_lease(lease, ttl)

        lease = store.acquire_lease(KEY, 0.3)
        assert lease is not None
        watch = watchdog.watch(lease, 0.3, renew)
        try:
            wait_until(lambda: watch.renewals >= 2, "renewals after the one that raised")
        finally:
            watchdog.stop(watch)
            watchdog.close()
        assert raised == [lease]
        assert not watch.lost
