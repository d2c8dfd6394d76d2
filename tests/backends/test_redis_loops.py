"""RedisStore's asyncio clients live exactly as long as their event loop.

A script, Celery task or sync view that calls ``asyncio.run(...)`` per request
makes a new loop each time; each loop gets an async client of its own, and
that client must be closed and forgotten when its loop shuts down, or each
call leaves a client, its socket and the loop behind. ``close()`` releases
what is left, on loops still running elsewhere too.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from tokenbroker.backends.redis import RedisStore
from tokenbroker.core.token import TokenKey

from ..polling import wait_until

pytestmark = pytest.mark.backend("redis")

# Room for what the interpreter itself may open meanwhile (a log file, a pipe).
FD_SLACK = 5


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def client_name() -> str:
    return f"tb-loops-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(redis_url: str, session_prefix: str, client_name: str) -> Iterator[RedisStore]:
    store = RedisStore(
        redis_url,
        key_prefix=f"{session_prefix}loops:",
        client_options={"client_name": client_name},
    )
    yield store
    store.close()


@pytest.fixture
def server_connections(redis_url: str, client_name: str) -> Iterator[Callable[[], int]]:
    """How many connections the server has open for this test's store now."""
    admin = redis.Redis.from_url(redis_url)

    def count() -> int:
        return sum(1 for c in admin.client_list() if c.get("name") == client_name)

    yield count
    admin.close()


def run_loops(store: RedisStore, key: TokenKey, count: int) -> None:
    for _ in range(count):
        assert asyncio.run(store.aget_token(key)) is None
    gc.collect()


class TestOneEventLoopPerCall:
    def test_300_loops_leave_neither_clients_nor_fds_nor_connections_behind(
        self, store: RedisStore, server_connections: Callable[[], int]
    ) -> None:
        key = TokenKey("wix", "app", f"inst-{uuid.uuid4()}")
        run_loops(store, key, 30)
        fds, served = open_fds(), store._clients.loops_served
        run_loops(store, key, 270)
        assert store._clients.loops_served <= served
        assert store._clients.loops_served == 0, "a finished loop still holds a client"
        assert open_fds() <= fds + FD_SLACK, f"{open_fds() - fds} fds more after 270 loops"
        assert server_connections() == 0
        store.close()
        assert open_fds() <= fds + FD_SLACK

    def test_a_loop_that_used_the_store_closes_its_connection_when_it_ends(
        self, store: RedisStore, server_connections: Callable[[], int]
    ) -> None:
        key = TokenKey("wix", "app", f"inst-{uuid.uuid4()}")

        async def use() -> int:
            await store.aget_token(key)
            return server_connections()

        assert asyncio.run(use()) == 1  # open while the loop runs
        assert server_connections() == 0
        assert store._clients.loops_served == 0


class TestClose:
    def test_close_asks_a_loop_running_in_another_thread_to_close_its_client(
        self, store: RedisStore, server_connections: Callable[[], int]
    ) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            key = TokenKey("wix", "app", f"inst-{uuid.uuid4()}")
            asyncio.run_coroutine_threadsafe(store.aget_token(key), loop).result(10)
            assert store._clients.loops_served == 1
            assert server_connections() == 1
            store.close()
            assert store._clients.loops_served == 0
            wait_until(lambda: server_connections() == 0, "the loop to close its client")
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    def test_the_store_stays_usable_on_a_loop_after_aclose(self, store: RedisStore) -> None:
        key = TokenKey("wix", "app", f"inst-{uuid.uuid4()}")

        async def twice() -> None:
            await store.aget_token(key)
            await store.aclose()
            assert store._clients.loops_served == 0
            assert await store.aget_token(key) is None  # a new client for this loop
            assert store._clients.loops_served == 1

        asyncio.run(twice())
        assert store._clients.loops_served == 0
