"""A token that is already due when it arrives is never handed out."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx2
import pytest

from tokenbroker import ManualClock, ProviderError, TokenBroker

Answer = Callable[[httpx2.Request], httpx2.Response]


def broker_with(clock: ManualClock, lifetimes: list[float], latency: float = 0.0) -> TokenBroker:
    """A broker whose Wix answers with these lifetimes in turn, each after ``latency``."""
    sent: list[float] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        clock.advance(latency)  # the request takes this long, by the broker's clock
        lifetime = lifetimes[min(len(sent), len(lifetimes) - 1)]
        sent.append(lifetime)
        instance = json.loads(request.content)["instance_id"]
        return httpx2.Response(
            200, json={"access_token": f"tok-{instance}-{len(sent)}", "expires_in": lifetime}
        )

    broker = TokenBroker(
        app_id="app-1",
        app_secret="s3cret",
        store="memory://",
        clock=clock,
        transport=httpx2.MockTransport(answer),
        api_url="http://wix.test",
    )
    broker.sent = sent  # type: ignore[attr-defined]
    return broker


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_750_000_000.0)


class TestATokenDueOnArrival:
    def test_whose_life_ran_out_during_its_fetch_is_fetched_once_more(
        self, clock: ManualClock
    ) -> None:
        # 2 s of lifetime, 2.5 s of latency: expired before it arrived
        with broker_with(clock, [2.0, 14400.0], latency=2.5) as broker:
            token = broker.token("inst-1")
            assert broker.sent == [2.0, 14400.0]  # type: ignore[attr-defined]
            assert token.expires_at.timestamp() > clock.time()
            assert token.access_token == "tok-inst-1-2"

    def test_with_a_lifetime_below_the_mandatory_window_twice_is_a_provider_error(
        self, clock: ManualClock
    ) -> None:
        with broker_with(clock, [5.0]) as broker:  # the mandatory window is at least 10 s
            with pytest.raises(ProviderError, match=r"due before they can be used .* 5\.0s"):
                broker.token("inst-1")
            assert broker.sent == [5.0, 5.0]  # type: ignore[attr-defined]
            assert broker.store.get_token(broker.key("inst-1")) is None

    async def test_the_async_path_refetches_too(self, clock: ManualClock) -> None:
        async with broker_with(clock, [2.0, 14400.0], latency=2.5) as broker:
            token = await broker.atoken("inst-1")
            assert token.expires_at.timestamp() > clock.time()
            assert broker.sent == [2.0, 14400.0]  # type: ignore[attr-defined]
