"""The first ``await broker.atoken()`` on a new event loop does not stall that loop.

Building the TLS context and importing the async HTTP backend take tens of
milliseconds; they run in a worker thread (``WixHttp.aready``), so a 5 ms ticker
on the same loop keeps ticking while the first token is fetched (the bench measures
that; these tests check where the work runs).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from typing import Any

import httpx2
import pytest

from tokenbroker import TokenBroker
from tokenbroker.testing.emulator import WixEmulator

from .conftest import APP_ID, APP_SECRET, INSTANCE


def test_the_first_atoken_on_a_new_loop_builds_no_tls_context_on_it(
    wix_emulator: WixEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a TLS context is the tens of milliseconds that stalled the loop: every
    one built during the first ``atoken`` on a new loop is built off the loop's thread.
    (How long the loop still blocks is measured by ``bench/cache_hit.py``'s ticker,
    not asserted here: a shared machine's timings are no test.)"""
    built_on: list[int] = []
    original = httpx2.create_ssl_context

    def create_ssl_context(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built_on.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(httpx2, "create_ssl_context", create_ssl_context)

    async def first_call(broker: TokenBroker) -> int:
        token = await broker.atoken(INSTANCE)
        assert token.access_token
        return threading.get_ident()

    broker = TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store="memory://", api_url=wix_emulator.url
    )
    try:
        loop_thread = asyncio.run(first_call(broker))
    finally:
        broker.close()
    assert built_on, "no TLS context was built at all: the test would prove nothing"
    assert loop_thread not in built_on


async def test_aready_prepares_once_in_a_thread(wix_emulator: WixEmulator) -> None:
    """``aready`` builds the TLS context in a worker thread, once per client holder."""
    from tokenbroker.wix.http import WixHttp

    broker = TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store="memory://", api_url=wix_emulator.url
    )
    try:
        http = broker.provider.http  # type: ignore[attr-defined]
        assert isinstance(http, WixHttp)
        seen: list[str] = []
        original = http.prepare

        def prepare() -> None:
            seen.append(threading.current_thread().name)
            original()

        http.prepare = prepare  # type: ignore[method-assign]
        await broker.atoken(INSTANCE)
        await http.aready()
        assert len(seen) == 1
        assert seen[0] != threading.current_thread().name
        assert http._ssl is not None
    finally:
        await broker.aclose()
