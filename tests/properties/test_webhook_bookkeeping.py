"""Webhook bookkeeping: the registry ends up the same whatever order Wix delivers in,
and the plugin hooks hear each piece of news once.

Every delivery here is a real RS256 JWT, signed with a test key pair and verified by
``TokenBroker.handle_webhook`` against its public half.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Literal

import attrs
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tokenbroker import Event, InstallationStatus, TokenBroker, hookimpl
from tokenbroker.core.clock import to_datetime
from tokenbroker.plugins import plugin_manager, reset_plugins
from tokenbroker.testing.webhooks import DEFAULT_TTL, make_key_pair, webhook_claims

APP_ID = "props-app"
PRIVATE, PUBLIC = make_key_pair()


def _signing_key() -> RSAPrivateKey:
    """The private key, loaded once: loading a PEM validates the RSA key (~50 ms),
    which ``sign_webhook`` would do for every body."""
    key = load_pem_private_key(PRIVATE.encode(), password=None)
    assert isinstance(key, RSAPrivateKey)
    return key


SIGNING_KEY = _signing_key()
INSTANCES = ["inst-1", "inst-2", "inst-3"]
# iat lies in [now - SPAN, now]: the verifier reads the system clock (the broker's
# clock does not reach it), and exp = iat + DEFAULT_TTL must not have passed.
SPAN = 240
assert SPAN < DEFAULT_TTL

# Each delivery verifies an RS256 JWT: keep the examples few and small.
WEBHOOKS = settings(max_examples=50, deadline=None, database=None)

Kind = Literal["AppInstalled", "AppRemoved"]


@attrs.frozen
class Delivery:
    instance: str
    kind: Kind
    age: int  # seconds before the example's "now": its iat, relative

    def iat(self, now: int) -> int:
        return now - self.age


@attrs.frozen
class Script:
    """Distinct deliveries (distinct iats per instance) and the order they arrive in,
    every one at least once, some repeated."""

    deliveries: tuple[Delivery, ...]
    arrivals: tuple[int, ...]


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    instances = INSTANCES[: draw(st.integers(1, len(INSTANCES)))]
    deliveries = draw(
        st.lists(
            st.builds(
                Delivery,
                st.sampled_from(instances),
                st.sampled_from(["AppInstalled", "AppRemoved"]),
                st.integers(0, SPAN),
            ),
            min_size=1,
            max_size=6,
            unique_by=lambda d: (d.instance, d.age),
        )
    )
    arrivals = list(draw(st.permutations(range(len(deliveries)))))
    for repeat in draw(st.lists(st.integers(0, len(deliveries) - 1), max_size=12 - len(arrivals))):
        arrivals.insert(draw(st.integers(0, len(arrivals))), repeat)
    return Script(tuple(deliveries), tuple(arrivals))


class HookCounter:
    """A plugin that notes every installation hook call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, datetime]] = []

    @hookimpl
    def tokenbroker_app_installed(self, event: Event) -> None:
        self.calls.append(("AppInstalled", event.instance_id, event.issued_at))

    @hookimpl
    def tokenbroker_app_removed(self, event: Event) -> None:
        self.calls.append(("AppRemoved", event.instance_id, event.issued_at))

    @hookimpl
    def tokenbroker_webhook_event(self, event: Event) -> None:
        self.calls.append(("any", event.instance_id, event.issued_at))


@pytest.fixture(scope="module", autouse=True)
def fresh_plugins() -> Iterator[None]:
    reset_plugins()
    yield
    reset_plugins()


def new_broker() -> TokenBroker:
    return TokenBroker(app_id=APP_ID, app_secret="secret", store="memory://", public_key=PUBLIC)


def sign(delivery: Delivery, now: int) -> str:
    """The body Wix would POST: ``sign_webhook``'s claims, signed RS256 with the test key."""
    claims = webhook_claims(
        event_type=delivery.kind,
        instance_id=delivery.instance,
        # what only this delivery knows: the record must keep the newest install's
        data={"appId": APP_ID, "originInstanceId": "" if delivery.age % 3 else f"o-{delivery.age}"},
        identity={"identityType": "WIX_USER", "wixUserId": f"u-{delivery.age}"},
        iat=delivery.iat(now),
    )
    return jwt.encode(claims, SIGNING_KEY, algorithm="RS256")


State = dict[str, tuple[object, ...]]


def registry(broker: TokenBroker, fields: tuple[str, ...]) -> State:
    state: State = {}
    for inst in broker.installations(include_removed=True):
        state[inst.instance_id] = tuple(getattr(inst, f) for f in fields)
    return state


def deliver_all(bodies: list[str], order: list[int]) -> TokenBroker:
    broker = new_broker()
    for i in order:
        broker.handle_webhook(bodies[i])
    return broker


def in_iat_order(script: Script, now: int) -> list[int]:
    return sorted(range(len(script.deliveries)), key=lambda i: script.deliveries[i].iat(now))


def assert_order_does_not_matter(script: Script, fields: tuple[str, ...]) -> None:
    now = int(time.time())
    bodies = [sign(d, now) for d in script.deliveries]
    arrived = deliver_all(bodies, list(script.arrivals))
    ordered = deliver_all(bodies, in_iat_order(script, now))
    with arrived, ordered:
        assert registry(arrived, fields) == registry(ordered, fields)


# Found by the property above: the removal is news first and the older install lost
# to it, so its installed_at never reached the record (in iat order it does).
REMOVAL_OVERTAKES_INSTALL = Script(
    (Delivery("inst-1", "AppInstalled", 20), Delivery("inst-1", "AppRemoved", 10)), (1, 0)
)


RECORD_FIELDS = (
    "status",
    "installed_at",
    "removed_at",
    "setup_finished_at",
    "origin_instance_id",
    "updated_at",
    "extra",
)


class TestArrivalOrder:
    @given(script=scripts())
    @example(script=REMOVAL_OVERTAKES_INSTALL)
    @WEBHOOKS
    def test_the_whole_record_is_that_of_delivery_once_each_in_iat_order(
        self, script: Script
    ) -> None:
        assert_order_does_not_matter(script, RECORD_FIELDS)


def expected_record(script: Script, now: int, instance: str) -> tuple[object, ...]:
    """What records.py documents, from the set of deliveries in iat order: the newest
    decides status, removed_at and updated_at; installed_at and the origin come from
    the first install of the last active period (the one before a final removal)."""
    mine = sorted((d for d in script.deliveries if d.instance == instance), key=lambda d: -d.age)
    last = mine[-1]
    start: Delivery | None = None
    period_start: Delivery | None = None
    for d in mine:
        if d.kind == "AppRemoved":
            start = None
        else:
            start = start or d
            period_start = start
    origin = None if period_start is None or period_start.age % 3 else f"o-{period_start.age}"
    return (
        InstallationStatus.REMOVED if last.kind == "AppRemoved" else InstallationStatus.INSTALLED,
        None if period_start is None else to_datetime(period_start.iat(now)),
        to_datetime(last.iat(now)) if last.kind == "AppRemoved" else None,
        origin,
        to_datetime(last.iat(now)),
    )


class TestRecord:
    @given(script=scripts())
    @WEBHOOKS
    def test_the_newest_delivery_decides_and_the_period_start_gives_installed_at(
        self, script: Script
    ) -> None:
        now = int(time.time())
        bodies = [sign(d, now) for d in script.deliveries]
        fields = ("status", "installed_at", "removed_at", "origin_instance_id", "updated_at")
        with deliver_all(bodies, list(script.arrivals)) as broker:
            got = registry(broker, fields)
        want = {i: expected_record(script, now, i) for i in {d.instance for d in script.deliveries}}
        assert got == want


def handle_all(
    broker: TokenBroker, bodies: list[str], order: list[int], via_async: bool
) -> list[bool]:
    """Deliver ``bodies`` in ``order``; return each delivery's news flag."""
    if not via_async:
        return [broker.handle_webhook(bodies[i]).news for i in order]

    async def run() -> list[bool]:
        return [(await broker.ahandle_webhook(bodies[i])).news for i in order]

    return asyncio.run(run())


class TestHooks:
    @given(script=scripts(), via_async=st.booleans())
    @WEBHOOKS
    def test_news_is_a_first_delivery_or_a_status_change_and_fires_each_hook_once(
        self, script: Script, via_async: bool
    ) -> None:
        now = int(time.time())
        bodies = [sign(d, now) for d in script.deliveries]
        counter = HookCounter()
        name = f"hook-counter-{id(counter)}"
        plugin_manager().register(counter, name=name)
        try:
            with new_broker() as broker:
                news = handle_all(broker, bodies, list(script.arrivals), via_async)
        finally:
            plugin_manager().unregister(name=name)

        # The model (records.py): news is the first delivery about an instance, or one
        # newer than all before it that flips the status; a repeat or a late delivery
        # never is. News fires its kind's hook, then the generic one; nothing else does.
        newest: dict[str, Delivery] = {}
        expected_calls: list[tuple[str, str, datetime]] = []
        for i, was_news in zip(script.arrivals, news, strict=True):
            d = script.deliveries[i]
            before = newest.get(d.instance)
            if before is None:
                expected = True
            else:
                expected = d.iat(now) > before.iat(now) and d.kind != before.kind
            assert was_news is expected, (d, before, was_news)
            if expected:
                issued = to_datetime(d.iat(now))
                expected_calls += [(d.kind, d.instance, issued), ("any", d.instance, issued)]
            if before is None or d.iat(now) > before.iat(now):
                newest[d.instance] = d
        assert counter.calls == expected_calls
        # so: at most once per delivery, and every instance's news starts with one call
        per_delivery = Counter(c for c in counter.calls if c[0] != "any")
        assert all(n == 1 for n in per_delivery.values())
        assert {c[1] for c in counter.calls} == {d.instance for d in script.deliveries}
