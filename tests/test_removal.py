"""Removal is final: a removed installation's token does not survive, whatever races it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tokenbroker import (
    InstanceNotInstalled,
    StoreUnavailable,
    Token,
    TokenBroker,
    TokenKey,
)
from tokenbroker.backends.memory import MemoryStore
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.webhooks import make_key_pair, sign_webhook

from .conftest import APP_ID, APP_SECRET, INSTANCE

PRIVATE, PUBLIC = make_key_pair()


class PurgeFailsOnce:
    """A real memory store whose first token purge fails as an outage would."""

    def __init__(self) -> None:
        self._inner = MemoryStore()
        self.failed = False

    def delete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        if not self.failed and only is None:
            self.failed = True
            raise StoreUnavailable("memory://: connection reset (injected)")
        return self._inner.delete_token(key, only=only)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def removal(iat: float) -> str:
    return sign_webhook(
        PRIVATE,
        event_type="AppRemoved",
        instance_id=INSTANCE,
        data={"appId": APP_ID},
        iat=iat,
    )


def broker_on(url: str, store: Any) -> TokenBroker:
    return TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store=store, api_url=url, public_key=PUBLIC
    )


class TestARemovalWebhook:
    def test_whose_purge_failed_purges_when_wix_delivers_it_again(
        self, wix_emulator: WixEmulator
    ) -> None:
        store = PurgeFailsOnce()
        with broker_on(wix_emulator.url, store) as broker:
            broker.installations.add(INSTANCE)
            broker.token(INSTANCE)
            body = removal(time.time())
            with pytest.raises(StoreUnavailable):  # the service answers 503: Wix retries
                broker.handle_webhook(body)
            assert store.get_token(broker.key(INSTANCE)) is not None
            outcome = broker.handle_webhook(body)  # the redelivery
            assert not outcome.news
            assert store.get_token(broker.key(INSTANCE)) is None

    def test_makes_the_next_token_call_refuse_without_asking_wix(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        with broker_on(wix_emulator.url, sqlite_url) as broker:
            broker.installations.add(INSTANCE)
            broker.token(INSTANCE)
            broker.handle_webhook(removal(time.time()))
            with pytest.raises(InstanceNotInstalled, match="recorded as removed"):
                broker.token(INSTANCE)
            assert wix_emulator.token_requests == 1

    def test_is_seen_by_another_broker_on_the_same_store_on_its_slow_path(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        with (
            broker_on(wix_emulator.url, sqlite_url) as one,
            broker_on(wix_emulator.url, sqlite_url) as other,
        ):
            one.installations.add(INSTANCE)
            one.handle_webhook(removal(time.time()))
            with pytest.raises(InstanceNotInstalled):
                other.token(INSTANCE)
            assert wix_emulator.token_requests == 0


class TestAFetchInFlightWhileTheRemovalLands:
    def test_its_token_is_purged_and_the_caller_told_not_installed(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        outcome: list[Token | BaseException] = []
        with (
            broker_on(wix_emulator.url, sqlite_url) as fetcher,
            broker_on(wix_emulator.url, sqlite_url) as webhooks,
        ):
            fetcher.installations.add(INSTANCE)
            wix_emulator.pause()

            def fetch() -> None:
                try:
                    outcome.append(fetcher.token(INSTANCE))
                except BaseException as exc:
                    outcome.append(exc)

            thread = threading.Thread(target=fetch)
            thread.start()
            try:
                assert wix_emulator.wait_for_in_flight(1, timeout=10)
                webhooks.handle_webhook(removal(time.time()))
            finally:
                wix_emulator.resume()
            thread.join(timeout=30)
            assert len(outcome) == 1
            assert isinstance(outcome[0], InstanceNotInstalled)
            assert fetcher.store.get_token(fetcher.key(INSTANCE)) is None
            assert webhooks.store.get_token(webhooks.key(INSTANCE)) is None
