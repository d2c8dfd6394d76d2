"""tokenbroker's metrics: the plain-number registry and what the token path counts.

Every test reads differences: the registry is the process's own and other tests
count into it too. Apps get names of their own so that their series are theirs.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator

import pytest

from tokenbroker import StoreUnavailable, TokenBroker, TransientProviderError
from tokenbroker.core.errors import ConfigError
from tokenbroker.core.metrics import REGISTRY, Registry, outcome_of, status_class
from tokenbroker.settings import Settings
from tokenbroker.testing.emulator import WixEmulator

from .conftest import APP_SECRET, INSTANCE

TOKENS = "tokenbroker_token_requests_total"
PROVIDER = "tokenbroker_provider_requests_total"
REFRESHES = "tokenbroker_refreshes_total"


def value(name: str, *labels: str) -> float:
    return REGISTRY.value(name, labels)


def histogram_count(name: str, *labels: str) -> int:
    for snapshot in REGISTRY.collect():
        if snapshot.name == name:
            for sample in snapshot.histograms:
                if sample.labels == labels:
                    return sample.count
            return 0
    raise KeyError(name)


@pytest.fixture
def emu() -> Iterator[WixEmulator]:
    """An emulator for an app id used by this test only (its series are its own)."""
    app_id = f"metrics-{uuid.uuid4().hex[:8]}"
    emulator = WixEmulator(app_id, APP_SECRET)
    emulator.install(INSTANCE)
    with emulator:
        yield emulator


def make_broker(emu: WixEmulator, store: str = "memory://", **options: object) -> TokenBroker:
    return TokenBroker(
        app_id=emu.app_id, app_secret=APP_SECRET, store=store, api_url=emu.url, **options
    )


# -- the registry ------------------------------------------------------------------------
def test_counter_gauge_and_histogram_read_what_was_counted() -> None:
    registry = Registry()
    counter = registry.counter("t_total", "help", ("a",))
    counter.inc(("x",))
    counter.inc(("x",), 2)
    gauge = registry.gauge("t_gauge", "help", ("a",))
    gauge.set(("y",), 5)
    histogram = registry.histogram("t_seconds", "help", ("a",))
    for seconds in (0.001, 0.02, 0.02, 30.0):
        histogram.observe(("z",), seconds)
    assert registry.value("t_total", ("x",)) == 3
    assert registry.value("t_gauge", ("y",)) == 5
    (snapshot,) = [s for s in registry.collect() if s.name == "t_seconds"]
    (sample,) = snapshot.histograms
    buckets = dict(sample.buckets)
    assert buckets[0.005] == 1
    assert buckets[0.025] == 3
    assert buckets[10.0] == 3  # 30 s lands only in +Inf
    assert sample.count == 4
    assert sample.total == pytest.approx(30.041)


def test_labels_must_match_the_family_and_names_their_kind() -> None:
    registry = Registry()
    registry.counter("t_total", "help", ("a",))
    with pytest.raises(ConfigError, match="already registered"):
        registry.gauge("t_total", "help", ("a",))
    with pytest.raises(ConfigError, match="already registered"):
        registry.counter("t_total", "help", ("a", "b"))


def test_sources_are_read_at_scrape_and_dropped_with_their_owner() -> None:
    registry = Registry()
    counter = registry.counter("t_total", "help", ("a",))

    class Owner:
        hits = 0

    owner = Owner()
    counter.add_source(owner, lambda o: [(("x",), float(o.hits))])
    counter.inc(("x",))
    owner.hits = 41
    assert registry.value("t_total", ("x",)) == 42
    del owner
    gc.collect()
    assert registry.value("t_total", ("x",)) == 1


def test_a_failing_source_is_left_out_not_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()
    gauge = registry.gauge("t_gauge", "help", ("a",))

    class Owner:
        pass

    owner = Owner()

    def broken(_: object) -> list[tuple[tuple[str, ...], float]]:
        raise RuntimeError("the store went away")

    gauge.add_source(owner, broken)
    gauge.add_source(owner, lambda _: [(("ok",), 1.0)])
    assert registry.value("t_gauge", ("ok",)) == 1
    assert "a reading failed" in caplog.text


def test_outcome_and_status_labels_are_bounded_names() -> None:
    assert outcome_of(None) == "ok"
    assert outcome_of(TransientProviderError("x")) == "transient_provider_error"
    assert outcome_of(StoreUnavailable("x")) == "store_unavailable"
    assert status_class(204) == "2xx"
    assert status_class(503) == "5xx"
    assert status_class(None) == "error"


# -- the token path ----------------------------------------------------------------------
def test_a_fetch_then_hits_count_provider_then_near(emu: WixEmulator) -> None:
    app = emu.app_id
    with make_broker(emu) as broker:
        broker.token(INSTANCE)
        assert value(TOKENS, app, "provider", "ok") == 1
        assert value(REFRESHES, app, "mandatory", "ok") == 1
        assert value(PROVIDER, app, "/oauth2/token", "2xx") == 1
        assert histogram_count("tokenbroker_lease_wait_seconds", app) == 1
        assert (
            histogram_count("tokenbroker_provider_request_duration_seconds", app, "/oauth2/token")
            == 1
        )
        for _ in range(25):
            broker.token(INSTANCE)
        assert value(TOKENS, app, "near", "ok") == 25
        assert value(TOKENS, app, "provider", "ok") == 1  # the hits fetched nothing
        assert emu.token_requests == 1


async def test_async_hits_and_fetch_are_counted_alike(emu: WixEmulator) -> None:
    app = emu.app_id
    async with make_broker(emu) as broker:
        await broker.atoken(INSTANCE)
        for _ in range(10):
            await broker.atoken(INSTANCE)
        assert value(TOKENS, app, "provider", "ok") == 1
        assert value(TOKENS, app, "near", "ok") == 10


def test_a_token_from_the_store_counts_as_store(emu: WixEmulator, sqlite_url: str) -> None:
    app = emu.app_id
    with make_broker(emu, sqlite_url) as first, make_broker(emu, sqlite_url) as second:
        first.token(INSTANCE)
        second.token(INSTANCE)  # cold near cache, fresh token in the shared store
        assert value(TOKENS, app, "provider", "ok") == 1
        assert value(TOKENS, app, "store", "ok") == 1
        assert emu.token_requests == 1


def test_a_failed_fetch_counts_its_error_and_the_status_class(emu: WixEmulator) -> None:
    app = emu.app_id
    emu.fail_next(503, times=3)
    with make_broker(emu, max_attempts=3) as broker:
        with pytest.raises(TransientProviderError):
            broker.token(INSTANCE)
        assert value(TOKENS, app, "provider", "transient_provider_error") == 1
        assert value(REFRESHES, app, "mandatory", "transient_provider_error") == 1
        assert value(PROVIDER, app, "/oauth2/token", "5xx") == 3
        broker.token(INSTANCE)
        assert value(TOKENS, app, "provider", "ok") == 1


def test_the_breaker_gauge_follows_the_circuit(emu: WixEmulator) -> None:
    app = emu.app_id
    emu.fail_next(503, times=6)
    with make_broker(emu, max_attempts=3) as broker:
        assert value("tokenbroker_breaker_open", app) == 0
        for _ in range(2):  # 6 failures in a row: the circuit opens at the fifth
            with pytest.raises(TransientProviderError):
                broker.token(INSTANCE)
        assert value("tokenbroker_breaker_open", app) == 1


def test_the_degraded_gauge_follows_the_store_health(emu: WixEmulator) -> None:
    app = emu.app_id
    with make_broker(emu) as broker:
        assert value("tokenbroker_store_degraded", app) == 0
        broker.engine.health.degraded(StoreUnavailable("the store is down"))
        assert value("tokenbroker_store_degraded", app) == 1
        broker.engine.health.recovered()
        assert value("tokenbroker_store_degraded", app) == 0


def test_installations_by_health_are_read_from_the_store(emu: WixEmulator) -> None:
    app = emu.app_id
    with make_broker(emu) as broker:
        broker.add_installations(["a", "b", "c"])
        assert value("tokenbroker_installations", app, "healthy") == 3
        assert value("tokenbroker_installations", app, "dead") == 0
        broker.add_installation("d")
        # cached: a scrape every few seconds does not list the fleet each time
        assert value("tokenbroker_installations", app, "healthy") == 3


def test_a_closed_and_dropped_broker_keeps_its_counts(emu: WixEmulator) -> None:
    """Counters never go down: closing folds the near hits into the registry."""
    app = emu.app_id
    broker = make_broker(emu)
    broker.token(INSTANCE)
    broker.token(INSTANCE)
    broker.token(INSTANCE)
    assert value(TOKENS, app, "near", "ok") == 2
    broker.close()
    del broker
    gc.collect()
    assert value(TOKENS, app, "near", "ok") == 2
    assert value(TOKENS, app, "provider", "ok") == 1


def test_no_series_takes_an_instance_id(emu: WixEmulator) -> None:
    with make_broker(emu) as broker:
        broker.token(INSTANCE)
        broker.token(INSTANCE)
    for snapshot in REGISTRY.collect():
        assert "instance" not in " ".join(snapshot.labelnames)
        labels = [labels for labels, _ in snapshot.samples]
        labels += [sample.labels for sample in snapshot.histograms]
        assert all(INSTANCE not in values for values in labels), snapshot.name


def test_a_bulk_refresh_counts_in_the_bulk_window(emu: WixEmulator) -> None:
    app = emu.app_id
    for instance_id in ("b-1", "b-2"):
        emu.install(instance_id)
    with make_broker(emu) as broker:
        broker.add_installations(["b-1", "b-2"])
        report = broker.refresh_due(concurrency=2)
        assert len(report.refreshed) == 2
        assert value(REFRESHES, app, "bulk", "ok") == 2
        assert value(PROVIDER, app, "/oauth2/token", "2xx") == 2  # labelled off the token path


def test_webhooks_are_counted_accepted_duplicate_stale_and_rejected(emu: WixEmulator) -> None:
    from tokenbroker.testing.webhooks import make_key_pair, sign_webhook
    from tokenbroker.wix.errors import WebhookRejected

    app = emu.app_id
    private_pem, public_pem = make_key_pair()
    other_pem, _ = make_key_pair("other")

    def body(event_type: str, iat: float, signer: str = private_pem) -> str:
        return sign_webhook(
            signer, event_type=event_type, instance_id="inst-w", iat=iat, data={"appId": app}
        )

    with make_broker(emu, public_key=public_pem) as broker:
        now = broker.clock.time()
        installed = body("AppInstalled", now)
        broker.handle_webhook(installed)
        broker.handle_webhook(installed)
        broker.handle_webhook(body("AppRemoved", now + 1))
        broker.handle_webhook(body("AppInstalled", now - 60))  # older than the removal
        with pytest.raises(WebhookRejected):
            broker.handle_webhook(body("AppInstalled", now, signer=other_pem))
    webhooks = "tokenbroker_webhooks_total"
    assert value(webhooks, app, "AppInstalled", "accepted") == 1
    assert value(webhooks, app, "AppInstalled", "duplicate") == 1
    assert value(webhooks, app, "AppRemoved", "accepted") == 1
    assert value(webhooks, app, "AppInstalled", "stale") == 1
    assert value(webhooks, app, "unknown", "rejected") == 1


# -- the switch: metrics=False -------------------------------------------------------------
def test_remove_source_stops_reading_that_owner_only() -> None:
    registry = Registry()
    counter = registry.counter("t_total", "help", ("a",))

    class Owner:
        def __init__(self, hits: int) -> None:
            self.hits = hits

    kept, removed = Owner(1), Owner(10)
    counter.add_source(kept, lambda o: [(("x",), float(o.hits))])
    counter.add_source(removed, lambda o: [(("x",), float(o.hits))])
    assert registry.value("t_total", ("x",)) == 11
    counter.remove_source(removed)
    assert registry.value("t_total", ("x",)) == 1
    counter.remove_source(removed)  # again: nothing left to remove
    assert registry.value("t_total", ("x",)) == 1


def series_of(app: str) -> list[str]:
    """The families with any sample labelled with ``app``."""
    return [
        snapshot.name
        for snapshot in REGISTRY.collect()
        if any(labels[:1] == (app,) for labels, _ in snapshot.samples)
    ]


def test_with_metrics_off_hits_count_nothing_and_nothing_is_read_at_scrape(
    emu: WixEmulator,
) -> None:
    app = emu.app_id
    with make_broker(emu, metrics=False) as broker:
        assert broker.metrics is False
        broker.add_installation(INSTANCE)
        first = broker.token(INSTANCE)
        for _ in range(10):
            assert broker.token(INSTANCE) is first
        assert value(TOKENS, app, "near", "ok") == 0
        # no scrape-time readings of its own: installations, breaker, degraded, near hits
        gauges = {"tokenbroker_installations", "tokenbroker_breaker_open"}
        gauges.add("tokenbroker_store_degraded")
        assert not gauges.intersection(series_of(app))
        # the slow path's counters still count: they cost nothing next to a fetch
        assert value(TOKENS, app, "provider", "ok") == 1
    gc.collect()
    assert value(TOKENS, app, "near", "ok") == 0  # nothing settled when it closed


async def test_with_metrics_off_async_hits_count_nothing(emu: WixEmulator) -> None:
    app = emu.app_id
    async with make_broker(emu, metrics=False) as broker:
        first = await broker.atoken(INSTANCE)
        for _ in range(5):
            assert await broker.atoken(INSTANCE) is first
    assert value(TOKENS, app, "near", "ok") == 0


def test_metrics_on_is_the_default_and_counts_the_inlined_hits(emu: WixEmulator) -> None:
    app = emu.app_id
    with make_broker(emu) as broker:
        assert broker.metrics is True
        broker.token(INSTANCE)
        broker.token(INSTANCE)
        assert value(TOKENS, app, "near", "ok") == 1
        assert "tokenbroker_store_degraded" in series_of(app)


def test_metrics_must_be_a_bool(emu: WixEmulator) -> None:
    with pytest.raises(ConfigError, match="metrics must be True or False, not 'off'"):
        make_broker(emu, metrics="off")


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, True), ("", True), ("on", True), ("off", False), ("0", False)]
)
def test_tokenbroker_metrics_in_the_environment(raw: str | None, expected: bool) -> None:
    env = {
        "TOKENBROKER_APP_ID": "app",
        "TOKENBROKER_APP_SECRET": "s",
        "TOKENBROKER_STORE": "memory://",
    }
    if raw is not None:
        env["TOKENBROKER_METRICS"] = raw
    assert Settings.from_env(env).metrics is expected


def test_a_bad_tokenbroker_metrics_names_the_variable() -> None:
    env = {"TOKENBROKER_APP_ID": "app", "TOKENBROKER_APP_SECRET": "s"}
    env["TOKENBROKER_METRICS"] = "sometimes"
    with pytest.raises(ConfigError, match="TOKENBROKER_METRICS must be true or false"):
        Settings.from_env(env)


def test_from_env_with_metrics_off_builds_a_broker_without_them(emu: WixEmulator) -> None:
    env = {
        "TOKENBROKER_APP_ID": emu.app_id,
        "TOKENBROKER_APP_SECRET": APP_SECRET,
        "TOKENBROKER_STORE": "memory://",
        "TOKENBROKER_API_URL": emu.url,
        "TOKENBROKER_METRICS": "off",
    }
    with TokenBroker.from_env(env) as broker:
        broker.token(INSTANCE)
        broker.token(INSTANCE)
        assert broker.metrics is False
        assert value(TOKENS, emu.app_id, "near", "ok") == 0
