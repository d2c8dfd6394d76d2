"""Whatever Wix answers, a broker method raises a TokenBrokerError or returns a
valid token, and nothing unusable reaches the store."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenbroker import ManualClock, TokenBroker, TokenBrokerError

APP_ID = "garbage-app"
INSTANCE = "inst-1"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
)
token_texts = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
    st.integers(16_380, 16_390).map(lambda n: "t" * n),
)
bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "access_token": st.one_of(token_texts, scalars),
            "token_type": st.one_of(st.sampled_from(["Bearer", "B" * 40, "a b", ""]), scalars),
            "expires_in": st.one_of(scalars, st.sampled_from([14400, 10**12, 1e308, 0.001, -1, 2])),
        },
    ),
    st.lists(scalars, max_size=3),
    scalars,
)
statuses = st.sampled_from([200, 200, 200, 201, 400, 401, 403, 404, 408, 429, 500, 503])


def encode(body: Any) -> bytes:
    # Python's json writes NaN and Infinity, as a broken server might.
    return json.dumps(body).encode()


def broker_answering(status: int, body: Any) -> TokenBroker:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            status, content=encode(body), headers={"Content-Type": "application/json"}
        )

    return TokenBroker(
        app_id=APP_ID,
        app_secret="s3cret",
        store="memory://",
        transport=httpx2.MockTransport(answer),
        clock=ManualClock(1_750_000_000.0),
        max_attempts=1,  # no backoff sleeps: each example is one request
        api_url="http://wix.test",
    )


class TestAnyAnswer:
    @given(status=statuses, body=bodies)
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_is_a_valid_token_or_a_tokenbroker_error_and_garbage_is_never_stored(
        self, status: int, body: Any
    ) -> None:
        with broker_answering(status, body) as broker:
            try:
                token = broker.token(INSTANCE)
            except TokenBrokerError:
                assert broker.store.get_token(broker.key(INSTANCE)) is None
                return
            now = broker.clock.time()
            assert token.expires_at.timestamp() > now
            assert token.access_token.isascii()
            assert token.access_token.isprintable()
            assert len(token.access_token) <= 16 * 1024
            assert " " not in token.access_token
            lifetime = token.expires_at.timestamp() - now
            assert math.isfinite(lifetime)


class TestTheBulkRefresher:
    def test_reports_an_instance_with_a_garbage_answer_as_failed_and_goes_on(self) -> None:
        def answer(request: httpx2.Request) -> httpx2.Response:
            instance = json.loads(request.content)["instance_id"]
            if instance == "bad":
                return httpx2.Response(200, json={"access_token": "t", "expires_in": 10**12})
            return httpx2.Response(
                200, json={"access_token": f"tok-{instance}", "expires_in": 14400}
            )

        with TokenBroker(
            app_id=APP_ID,
            app_secret="s3cret",
            store="memory://",
            transport=httpx2.MockTransport(answer),
            api_url="http://wix.test",
        ) as broker:
            broker.installations.add_many(["a", "bad", "c"])
            report = broker.refresh_due(within=1800, concurrency=2)
        assert sorted(report.refreshed) == ["a", "c"]
        assert [instance for instance, _ in report.failed] == ["bad"]
        assert "expires_in out of range" in report.failed[0][1]
