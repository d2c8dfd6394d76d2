"""Deduplication of webhook deliveries, kept in the store and shared by every replica:
by Wix's event id when there is one, by the digest of the body otherwise."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tokenbroker import ConfigError, StoreUnavailable, TokenBroker, hookimpl
from tokenbroker.backends.memory import MemoryStore
from tokenbroker.core.installation import Installation
from tokenbroker.plugins import plugin_manager
from tokenbroker.testing.servers import REDIS_URLS, delete_redis_keys, first_reachable
from tokenbroker.testing.webhooks import (
    domain_event,
    make_key_pair,
    sign_domain_event,
    sign_webhook,
)
from tokenbroker.wix import WebhookRejected
from tokenbroker.wix.webhooks.dedup import DEDUP_TTL, Deduplicator, delivery_id
from tokenbroker.wix.webhooks.verify import RETRY_HORIZON, WebhookVerifier

from .backends.conftest import server_unavailable
from .conftest import APP_ID, APP_SECRET
from .polling import wait_until
from .webhook_helpers import HookLog, hook_log

PRIVATE, PUBLIC = make_key_pair()
INSTANCE = "inst-dedup"
CONTACT = "wix.contacts.v4.contact"


def new_broker(store: Any, app_id: str = APP_ID) -> TokenBroker:
    return TokenBroker(app_id=app_id, app_secret=APP_SECRET, store=store, public_key=PUBLIC)


def contact_created(
    event_id: str | None = "evt-1", *, name: str = "Ada", iat: float | None = None
) -> str:
    data = domain_event(CONTACT, "created", entity={"id": "c-1", "name": name}, event_id=event_id)
    return sign_domain_event(PRIVATE, data, instance_id=INSTANCE, iat=iat)


def plan_purchased(*, iat: float | None = None, product: str = "premium") -> str:
    return sign_webhook(
        PRIVATE,
        event_type="PaidPlanPurchased",
        instance_id=INSTANCE,
        data={"appId": APP_ID, "vendorProductId": product, "cycle": "MONTHLY"},
        iat=iat,
    )


@pytest.fixture
def log() -> Iterator[HookLog]:
    with hook_log() as found:
        yield found


@pytest.fixture
def broker() -> Iterator[TokenBroker]:
    with new_broker("memory://") as found:
        yield found


class CountingStore:
    """A real memory store that counts the lease calls made on it."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.leases = 0

    def acquire_lease(self, *args: Any) -> Any:
        self.leases += 1
        return self.inner.acquire_lease(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class PutFailsOnce(CountingStore):
    """...whose first installation write fails as an outage would."""

    failed = False

    def put_installation(self, installation: Installation) -> bool:
        if not self.failed:
            self.failed = True
            raise StoreUnavailable("memory://: connection reset (injected)")
        return self.inner.put_installation(installation)


class TestInOneBroker:
    def test_a_standardized_event_delivered_twice_fires_the_hooks_once(
        self, broker: TokenBroker, log: HookLog
    ) -> None:
        body = contact_created()
        first, again = broker.handle_webhook(body), broker.handle_webhook(body)
        assert (first.news, first.duplicate) == (True, False)
        assert (again.news, again.duplicate) == (False, True)
        assert log.hooks("event") == ["wix.contacts.v4.contact_created"]

    def test_the_same_event_id_with_another_body_is_still_a_duplicate(
        self, broker: TokenBroker, log: HookLog
    ) -> None:
        now = time.time()
        assert broker.handle_webhook(contact_created("evt-7", name="Ada", iat=now - 5)).news
        other = broker.handle_webhook(contact_created("evt-7", name="Bo", iat=now))
        assert other.duplicate
        assert [e.entity["name"] for e in log.events] == ["Ada"]

    def test_another_event_id_is_news(self, broker: TokenBroker, log: HookLog) -> None:
        broker.handle_webhook(contact_created("evt-1"))
        assert broker.handle_webhook(contact_created("evt-2")).news
        assert len(log.hooks("event")) == 2

    def test_an_event_without_an_id_is_deduplicated_by_the_digest_of_its_body(
        self, broker: TokenBroker, log: HookLog
    ) -> None:
        body = contact_created(event_id=None)
        assert broker.handle_webhook(body).news
        assert broker.handle_webhook(body + "\n").duplicate  # the same JWT
        assert len(log.hooks("event")) == 1
        # Signed again (another iat), it is another delivery: no id says otherwise.
        assert broker.handle_webhook(contact_created(event_id=None, iat=time.time() + 1)).news
        assert len(log.hooks("event")) == 2

    def test_a_paid_plan_event_is_deduplicated_by_its_digest(
        self, broker: TokenBroker, log: HookLog
    ) -> None:
        body = plan_purchased()
        assert not broker.handle_webhook(body).duplicate
        assert broker.handle_webhook(body).duplicate
        assert log.hooks("event") == ["PaidPlanPurchased"]

    async def test_the_async_twin_shares_the_marks(self, broker: TokenBroker, log: HookLog) -> None:
        body = contact_created()
        assert (await broker.ahandle_webhook(body)).news
        assert broker.handle_webhook(body).duplicate
        assert (await broker.ahandle_webhook(body)).duplicate
        assert len(log.hooks("event")) == 1

    def test_the_same_event_id_for_another_app_on_the_same_store_is_not_a_duplicate(
        self, log: HookLog
    ) -> None:
        store = MemoryStore()
        other_app = "other-app-id"
        data = domain_event(CONTACT, "created", event_id="evt-shared")
        body = sign_domain_event(PRIVATE, data, instance_id=INSTANCE)
        with new_broker(store) as ours, new_broker(store, app_id=other_app) as theirs:
            assert ours.handle_webhook(body).news
            assert theirs.handle_webhook(body).news
        assert len(log.hooks("event")) == 2

    def test_a_repeat_this_process_settled_costs_no_round_trip(self, log: HookLog) -> None:
        store = CountingStore()
        with new_broker(store) as broker:
            body = contact_created()
            broker.handle_webhook(body)
            leases = store.leases
            assert leases > 0
            assert broker.handle_webhook(body).duplicate
            assert store.leases == leases

    def test_a_repeat_settled_by_another_process_is_found_in_the_store(self, log: HookLog) -> None:
        store = CountingStore()
        body = contact_created()
        with new_broker(store) as one, new_broker(store) as other:
            one.handle_webhook(body)
            before = store.leases
            assert other.handle_webhook(body).duplicate
            assert store.leases > before
        assert len(log.hooks("event")) == 1


class TestConfiguration:
    @pytest.mark.parametrize("ttl", [0, 29.9, float("nan"), float("inf"), True, "48h"])
    def test_a_ttl_shorter_than_a_claim_or_not_a_number_is_refused(self, ttl: Any) -> None:
        with pytest.raises(ConfigError, match="deduplication ttl"):
            Deduplicator(app_id=APP_ID, clock=time.time, ttl=ttl)

    @pytest.mark.parametrize("size", [-1, 1.5, True])
    def test_a_bad_cache_size_is_refused(self, size: Any) -> None:
        with pytest.raises(ConfigError, match="cache size"):
            Deduplicator(app_id=APP_ID, clock=time.time, cache_size=size)

    def test_without_a_cache_every_repeat_asks_the_store(self, log: HookLog) -> None:
        store = CountingStore()
        with new_broker(store) as broker:
            broker.webhooks.dedup = Deduplicator(app_id=APP_ID, clock=time.time, cache_size=0)
            body = contact_created()
            broker.handle_webhook(body)
            leases = store.leases
            assert broker.handle_webhook(body).duplicate
            assert store.leases > leases


class TestWhenHandlingFails:
    def test_a_store_failure_while_recording_lets_wix_s_resend_be_handled(
        self, log: HookLog
    ) -> None:
        store = PutFailsOnce()
        with new_broker(store) as broker:
            body = plan_purchased()
            with pytest.raises(StoreUnavailable):  # the service answers 503: Wix resends
                broker.handle_webhook(body)
            assert log.calls == []
            resent = broker.handle_webhook(body)
            assert (resent.news, resent.duplicate) == (True, False)
            assert broker.handle_webhook(body).duplicate
            record = broker.installations.get(INSTANCE)
        assert record is not None
        assert record.extra["plan"]["vendor_product_id"] == "premium"
        assert log.hooks("event") == ["PaidPlanPurchased"]

    def test_a_failing_hook_lets_the_delivery_go_so_a_resend_fires_it_again(
        self, broker: TokenBroker
    ) -> None:
        class FailsOnce:
            def __init__(self) -> None:
                self.calls = 0

            @hookimpl
            def tokenbroker_webhook_event(self, event: Any) -> None:
                self.calls += 1
                if self.calls == 1:
                    raise RuntimeError("plugin bug (injected)")

        plugin = FailsOnce()
        plugin_manager().register(plugin, name="fails-once")
        try:
            body = contact_created()
            first = broker.handle_webhook(body)
            assert (first.news, first.failed_hooks) == (True, 1)
            resent = broker.handle_webhook(body)
            assert (resent.news, resent.duplicate, resent.failed_hooks) == (True, False, 0)
            assert broker.handle_webhook(body).duplicate
        finally:
            plugin_manager().unregister(name="fails-once")
        assert plugin.calls == 2

    def test_deferred_hooks_that_fail_let_the_delivery_go_too(self, broker: TokenBroker) -> None:
        calls: list[str] = []

        class Fails:
            @hookimpl
            def tokenbroker_webhook_event(self, event: Any) -> None:
                calls.append(event.event_type)
                raise RuntimeError("plugin bug (injected)")

        plugin_manager().register(Fails(), name="fails")
        try:
            body = contact_created()
            outcome = broker.handle_webhook(body, defer_hooks=True)
            assert outcome.run_hooks() == 1
            resent = broker.handle_webhook(body, defer_hooks=True)
            assert not resent.duplicate
            assert resent.run_hooks() == 1
        finally:
            plugin_manager().unregister(name="fails")
        assert calls == ["wix.contacts.v4.contact_created"] * 2

    def test_a_delivery_another_process_is_recording_is_answered_409(
        self, broker: TokenBroker, log: HookLog
    ) -> None:
        body = contact_created()
        ident = delivery_id(broker.verifier.verify(body), body.encode())
        held = broker.store.acquire_lease(broker.webhooks.dedup.claim_key(ident), 30)
        assert held is not None
        with pytest.raises(WebhookRejected) as info:
            broker.handle_webhook(body)
        assert (info.value.status, info.value.reason) == (409, "delivery in progress")
        assert log.calls == []
        broker.store.release_lease(held)  # the other process failed, and let it go
        assert broker.handle_webhook(body).news

    def test_the_claim_of_a_process_that_died_lapses_and_the_resend_is_handled(
        self, broker: TokenBroker, log: HookLog
    ) -> None:
        body = contact_created()
        ident = delivery_id(broker.verifier.verify(body), body.encode())
        assert broker.store.acquire_lease(broker.webhooks.dedup.claim_key(ident), 0.3)

        refusals: list[int] = []

        def handled() -> bool:
            try:
                return broker.handle_webhook(body).news
            except WebhookRejected as exc:
                refusals.append(exc.status)
                return False

        wait_until(handled, "the dead process's claim to lapse")
        assert refusals
        assert set(refusals) == {409}
        assert len(log.hooks("event")) == 1

    def test_the_marks_never_meet_a_token_lease(self, broker: TokenBroker) -> None:
        body = contact_created()
        broker.handle_webhook(body)
        dedup = broker.webhooks.dedup
        ident = delivery_id(broker.verifier.verify(body), body.encode())
        done = dedup.done_key(ident)
        # The token lease of an instance named like the mark is another key...
        twin = broker.key(done.instance_id)
        assert twin != done
        lease = broker.store.acquire_lease(twin, 5)
        assert lease is not None
        broker.store.release_lease(lease)
        # ...and the mark is still held.
        assert broker.store.acquire_lease(done, 1) is None
        assert {done.provider, done.app_id} == {"tokenbroker~event"}
        assert dedup.claim_key(ident).app_id not in (done.app_id, APP_ID)


# -- on stores shared by processes -----------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'events.db'}"
        return
    url, reasons = first_reachable(REDIS_URLS, "TOKENBROKER_TEST_REDIS_URL", redis=True)
    if url is None:
        server_unavailable(f"Redis is not reachable ({'; '.join(reasons)})")
    prefix = f"tb_{secrets.token_hex(4)}_events:"
    yield f"{url}?key_prefix={prefix}"
    delete_redis_keys(url, prefix)


class TestTwoBrokersOnOneStore:
    def test_fire_the_hooks_once_for_an_event_delivered_to_both(
        self, shared_store: str, log: HookLog
    ) -> None:
        body = contact_created()
        with new_broker(shared_store) as one, new_broker(shared_store) as other:
            assert one.handle_webhook(body).news
            assert other.handle_webhook(body).duplicate
            assert one.handle_webhook(body).duplicate
        assert len(log.hooks("event")) == 1

    def test_racing_deliveries_are_recorded_once(self, shared_store: str, log: HookLog) -> None:
        body = contact_created()
        brokers = [new_broker(shared_store) for _ in range(2)]
        results: list[str] = []
        gate = threading.Barrier(6)

        def deliver(broker: TokenBroker) -> None:
            gate.wait()
            try:
                outcome = broker.handle_webhook(body)
            except WebhookRejected as exc:
                results.append(f"{exc.status}")
            else:
                results.append("news" if outcome.news else "duplicate")

        threads = [threading.Thread(target=deliver, args=(brokers[i % 2],)) for i in range(6)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert results.count("news") == 1
            assert set(results) <= {"news", "duplicate", "409"}
            # Wix resends what was answered 409: by then it is a duplicate.
            assert all(b.handle_webhook(body).duplicate for b in brokers)
        finally:
            for broker in brokers:
                broker.close()
        assert len(log.hooks("event")) == 1

    def test_the_mark_is_kept_for_48_hours(self, shared_store: str, log: HookLog) -> None:
        body = contact_created()
        with new_broker(shared_store) as broker:
            before = time.time()
            broker.handle_webhook(body)
            ident = delivery_id(broker.verifier.verify(body), body.encode())
            done = broker.webhooks.dedup.done_key(ident)
            remaining = _lease_seconds_left(broker, done) - (time.time() - before)
        assert DEDUP_TTL - 60 < remaining <= DEDUP_TTL + 1

    def test_the_marks_outlast_what_the_verifier_still_accepts(self) -> None:
        # Wix resends for about 47 h; an event without exp is refused after RETRY_HORIZON
        # (and the leeway): a mark must not lapse while its delivery can still verify.
        assert DEDUP_TTL >= 48 * 3600
        assert RETRY_HORIZON + WebhookVerifier(PUBLIC).leeway < DEDUP_TTL


def _lease_seconds_left(broker: TokenBroker, key: Any) -> float:
    """How long the store will keep ``key``'s lease, read from the store itself."""
    store: Any = getattr(broker.store, "inner", broker.store)  # under the plaintext guard
    if store.url.startswith("sqlite"):
        engine = sa.create_engine(store.url)
        table = f"{store.table_prefix}leases"
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    f"SELECT expires_at FROM {table} "
                    "WHERE provider = :p AND app_id = :a AND instance_id = :i"
                ),
                {"p": key.provider, "a": key.app_id, "i": key.instance_id},
            ).one()
        engine.dispose()
        return float(row[0]) / 1_000_000 - time.time()
    import redis

    client = redis.Redis.from_url(store.url.split("?")[0])
    try:
        return float(client.pttl(store.lease_key(key))) / 1000
    finally:
        client.close()
