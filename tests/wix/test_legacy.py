"""The ``wix-legacy`` provider against the emulator: the code exchange, the wire,
refreshes, rotation, and the refusals that mean "install again".

The helpers here are shared by the other ``test_legacy_*`` modules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tokenbroker import (
    ConfigError,
    InstanceNotInstalled,
    InvalidCredentials,
    StorageError,
    Token,
    TokenBroker,
)
from tokenbroker.core.clock import Clock, ManualClock
from tokenbroker.testing.emulator import ACCESS_ENDPOINT, WixEmulator
from tokenbroker.testing.pytest_plugin import TEST_APP_ID, TEST_APP_SECRET
from tokenbroker.testing.webhooks import make_key_pair
from tokenbroker.wix.legacy import (
    AuthorizationCodeRefused,
    acomplete_install,
    complete_install,
    refresh_key,
)

APP_ID = TEST_APP_ID
APP_SECRET = TEST_APP_SECRET
INSTANCE = "inst-legacy"
DUE = 290.0
"""Seconds after which a 5-minute token is inside its mandatory window: due."""
PRIVATE, PUBLIC = make_key_pair()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[WixEmulator]:
    """Wix on loopback, on the test's clock (refresh tokens rotate: its default)."""
    with WixEmulator(APP_ID, APP_SECRET, clock=clock.time) as emu:
        yield emu


def legacy_broker(emulator: WixEmulator, store: Any, clock: Clock, **options: Any) -> TokenBroker:
    options.setdefault("app_secret", APP_SECRET)
    return TokenBroker(
        app_id=APP_ID,
        store=store,
        api_url=emulator.url,
        provider="wix-legacy",
        clock=clock,
        **options,
    )


@pytest.fixture
def broker(emulator: WixEmulator, sqlite_url: str, clock: ManualClock) -> Iterator[TokenBroker]:
    with legacy_broker(emulator, sqlite_url, clock, public_key=PUBLIC) as b:
        yield b


def install(broker: TokenBroker, emulator: WixEmulator, instance_id: str = INSTANCE) -> Token:
    """A site owner installs the app, and the app completes the install."""
    return complete_install(broker, instance_id, emulator.authorization_code(instance_id))


def stored_refresh(broker: TokenBroker, instance_id: str = INSTANCE) -> Token | None:
    """The installation's refresh-token record, as the broker's store reads it."""
    return broker.store.get_token(refresh_key(broker.key(instance_id)))


def stored_refresh_token(broker: TokenBroker, instance_id: str = INSTANCE) -> str | None:
    record = stored_refresh(broker, instance_id)
    return None if record is None else record.access_token


def assert_newest_kept(
    broker: TokenBroker, emulator: WixEmulator, instance_id: str = INSTANCE
) -> None:
    """The stored refresh token is the one Wix still accepts: no rotation was lost."""
    assert emulator.live_refresh_tokens(instance_id) == [stored_refresh_token(broker, instance_id)]


def issued(emulator: WixEmulator, token: Token) -> bool:
    return token.access_token in emulator.issued_tokens_for(token.instance_id)


class TestCompleteInstall:
    def test_the_code_buys_a_stored_refresh_token_a_first_token_and_a_record(
        self, broker: TokenBroker, emulator: WixEmulator, clock: ManualClock
    ) -> None:
        token = install(broker, emulator)
        assert issued(emulator, token)
        assert token.lifetime == 300  # documented: 5 minutes (the answer has no expires_in)
        assert token.refresh_at is not None
        assert token.must_refresh_at is not None
        assert_newest_kept(broker, emulator)
        record = stored_refresh(broker)
        assert record is not None
        assert record.token_type == "refresh_token"
        installation = broker.installations.get(INSTANCE)
        assert installation is not None
        assert installation.active
        assert broker.installations.health(INSTANCE).healthy

    def test_the_first_token_is_served_without_another_request(
        self, broker: TokenBroker, emulator: WixEmulator
    ) -> None:
        token = install(broker, emulator)
        assert broker.token(INSTANCE) == token
        assert emulator.access_requests == 1

    def test_a_used_code_is_refused_and_nothing_more_is_stored(
        self, broker: TokenBroker, emulator: WixEmulator
    ) -> None:
        code = emulator.authorization_code(INSTANCE)
        complete_install(broker, INSTANCE, code)
        kept = stored_refresh(broker)
        with pytest.raises(AuthorizationCodeRefused) as refused:
            complete_install(broker, INSTANCE, code)
        assert refused.value.status == 400
        assert refused.value.request_id == emulator.last_request_id
        assert code not in str(refused.value)
        assert "used already" in str(refused.value)
        assert stored_refresh(broker) == kept

    def test_a_code_older_than_ten_minutes_is_refused(
        self, broker: TokenBroker, emulator: WixEmulator, clock: ManualClock
    ) -> None:
        code = emulator.authorization_code(INSTANCE)
        clock.advance(600)
        with pytest.raises(AuthorizationCodeRefused):
            complete_install(broker, INSTANCE, code)
        assert stored_refresh(broker) is None
        assert broker.installations.get(INSTANCE) is None

    @pytest.mark.parametrize("code", ["", " padded", "two words", "nul\x00", "x" * 4097])
    def test_a_malformed_code_is_refused_before_anything_is_sent(
        self, broker: TokenBroker, emulator: WixEmulator, code: str
    ) -> None:
        with pytest.raises(ConfigError, match="authorization code"):
            complete_install(broker, INSTANCE, code)
        assert emulator.access_requests == 0

    def test_a_broker_on_another_provider_has_no_code_to_exchange(
        self, emulator: WixEmulator, sqlite_url: str
    ) -> None:
        with (
            TokenBroker(
                app_id=APP_ID, app_secret=APP_SECRET, store=sqlite_url, api_url=emulator.url
            ) as wix,
            pytest.raises(ConfigError, match="uses the 'wix' provider"),
        ):
            complete_install(wix, INSTANCE, "code")
        assert emulator.access_requests == 0

    def test_a_refresh_in_progress_elsewhere_is_waited_for_before_the_code_is_spent(
        self, emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        with legacy_broker(emulator, sqlite_url, clock, wait_timeout=0.3) as broker:
            held = broker.store.acquire_lease(broker.key(INSTANCE), 30)
            assert held is not None
            code = emulator.authorization_code(INSTANCE)
            with pytest.raises(StorageError, match="waiting for another process"):
                complete_install(broker, INSTANCE, code)
            assert emulator.access_requests == 0  # the code is still good
            broker.store.release_lease(held)
            assert issued(emulator, complete_install(broker, INSTANCE, code))

    async def test_the_async_twin_does_the_same(
        self, broker: TokenBroker, emulator: WixEmulator
    ) -> None:
        token = await acomplete_install(broker, INSTANCE, emulator.authorization_code(INSTANCE))
        assert issued(emulator, token)
        assert await broker.atoken(INSTANCE) == token
        assert_newest_kept(broker, emulator)
        assert (await broker.installations.aget(INSTANCE)) is not None


class TestTheWire:
    def test_both_bodies_are_the_sdks_field_for_field_and_in_its_order(
        self, sqlite_url: str, clock: ManualClock
    ) -> None:
        sent: list[httpx2.Request] = []

        def answer(request: httpx2.Request) -> httpx2.Response:
            sent.append(request)
            n = len(sent)
            return httpx2.Response(
                200, json={"access_token": f"LEGACY.a{n}", "refresh_token": f"r{n}"}
            )

        with TokenBroker(
            app_id=APP_ID,
            app_secret=APP_SECRET,
            store=sqlite_url,
            provider="wix-legacy",
            clock=clock,
            transport=httpx2.MockTransport(answer),
        ) as broker:
            complete_install(broker, INSTANCE, "the-code")
            clock.advance(DUE)
            assert broker.token(INSTANCE).access_token == "LEGACY.a2"
        bodies = [json.loads(r.content) for r in sent]
        # seen in Wix's SDK: AppStrategy.js's handleOAuthCallback and getAuthHeaders
        assert [list(b.items()) for b in bodies] == [
            [
                ("code", "the-code"),
                ("client_id", APP_ID),
                ("client_secret", APP_SECRET),
                ("grant_type", "authorization_code"),
            ],
            [
                ("refresh_token", "r1"),
                ("client_id", APP_ID),
                ("client_secret", APP_SECRET),
                ("grant_type", "refresh_token"),
            ],
        ]
        assert {str(r.url) for r in sent} == {"https://www.wixapis.com/oauth/access"}
        assert {r.headers["content-type"] for r in sent} == {"application/json"}


class TestRefresh:
    def test_a_due_token_costs_one_refresh_and_the_rotated_refresh_token_is_kept(
        self, broker: TokenBroker, emulator: WixEmulator, clock: ManualClock
    ) -> None:
        first = install(broker, emulator)
        old = stored_refresh_token(broker)
        clock.advance(DUE)
        second = broker.token(INSTANCE)
        assert second != first
        assert issued(emulator, second)
        assert emulator.access_requests == 2
        assert stored_refresh_token(broker) != old
        assert_newest_kept(broker, emulator)
        assert broker.token(INSTANCE) == second  # fresh again: no request
        assert emulator.access_requests == 2

    def test_every_refresh_in_a_row_keeps_the_newest(
        self, broker: TokenBroker, emulator: WixEmulator, clock: ManualClock
    ) -> None:
        install(broker, emulator)
        versions = []
        for _ in range(4):
            clock.advance(DUE)
            broker.token(INSTANCE)
            assert_newest_kept(broker, emulator)
            record = stored_refresh(broker)
            assert record is not None
            versions.append(record.obtained_at)
        assert versions == sorted(versions)
        assert len(set(versions)) == 4

    def test_a_refresh_token_wix_does_not_rotate_is_not_written_again(
        self, broker: TokenBroker, emulator: WixEmulator, clock: ManualClock
    ) -> None:
        emulator.rotate_refresh_tokens = False  # what Wix documents
        install(broker, emulator)
        before = stored_refresh(broker)
        clock.advance(DUE)
        assert issued(emulator, broker.token(INSTANCE))
        assert stored_refresh(broker) == before

    def test_an_answer_without_a_refresh_token_leaves_the_stored_one(
        self, broker: TokenBroker, emulator: WixEmulator, clock: ManualClock
    ) -> None:
        install(broker, emulator)
        before = stored_refresh(broker)
        clock.advance(DUE)
        emulator.fail_next(200, body={"access_token": "LEGACY.only"}, endpoint=ACCESS_ENDPOINT)
        assert broker.token(INSTANCE).access_token == "LEGACY.only"
        assert stored_refresh(broker) == before

    @pytest.mark.parametrize(
        ("options", "answer", "lifetime"),
        [
            ({"default_lifetime": 120}, {}, 120),
            ({}, {"expires_in": 60}, 60),
            ({"default_lifetime": 120}, {"expires_in": 600}, 600),
        ],
    )
    def test_the_lifetime_is_the_answers_else_the_option_else_five_minutes(
        self,
        emulator: WixEmulator,
        sqlite_url: str,
        clock: ManualClock,
        options: dict[str, Any],
        answer: dict[str, Any],
        lifetime: float,
    ) -> None:
        with legacy_broker(emulator, sqlite_url, clock, provider_options=options) as broker:
            install(broker, emulator)
            clock.advance(DUE)
            body = {"access_token": "LEGACY.x", "refresh_token": "r-next", **answer}
            emulator.fail_next(200, body=body, endpoint=ACCESS_ENDPOINT)
            assert broker.token(INSTANCE).lifetime == lifetime

    def test_an_install_never_completed_here_is_not_installed_without_a_request(
        self, broker: TokenBroker, emulator: WixEmulator
    ) -> None:
        broker.installations.add(INSTANCE)  # known, say from its AppInstalled webhook
        with pytest.raises(InstanceNotInstalled, match="no refresh token is stored"):
            broker.token(INSTANCE)
        assert emulator.access_requests == 0
        assert broker.installations.health(INSTANCE).dead

    def test_a_refused_refresh_token_means_install_again_and_dead_until_then(
        self, broker: TokenBroker, emulator: WixEmulator, clock: ManualClock
    ) -> None:
        install(broker, emulator)
        emulator.revoke_grants(INSTANCE)  # a cloned site, a corrupted install
        clock.advance(DUE)
        with pytest.raises(InstanceNotInstalled, match="must install the app again") as gone:
            broker.token(INSTANCE)
        assert gone.value.status == 400
        assert gone.value.code == "INVALID_REFRESH_TOKEN"
        assert broker.installations.health(INSTANCE).dead
        requests = emulator.access_requests
        with pytest.raises(InstanceNotInstalled):
            broker.token(INSTANCE)
        assert emulator.access_requests == requests  # dead: Wix is not asked again
        token = install(broker, emulator)  # the site owner installed it again
        assert broker.installations.health(INSTANCE).healthy
        assert broker.token(INSTANCE) == token
        assert_newest_kept(broker, emulator)

    def test_invalid_grant_in_the_ietf_shape_reads_the_same(
        self, broker: TokenBroker, emulator: WixEmulator, clock: ManualClock
    ) -> None:
        install(broker, emulator)
        emulator.error_shape = "ietf"
        emulator.revoke_grants(INSTANCE)
        clock.advance(DUE)
        with pytest.raises(InstanceNotInstalled) as gone:
            broker.token(INSTANCE)
        assert gone.value.code == "invalid_grant"

    def test_a_wrong_app_secret_is_invalid_credentials_and_keeps_the_grant(
        self, broker: TokenBroker, emulator: WixEmulator, clock: ManualClock, sqlite_url: str
    ) -> None:
        install(broker, emulator)
        kept = stored_refresh(broker)
        clock.advance(DUE)
        wrong = legacy_broker(emulator, sqlite_url, clock, app_secret="not-the-secret")
        with wrong, pytest.raises(InvalidCredentials):
            wrong.token(INSTANCE)
        assert stored_refresh(broker) == kept
        assert_newest_kept(broker, emulator)

    def test_refused_credentials_stop_the_requests_for_a_while(
        self, emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        with legacy_broker(emulator, sqlite_url, clock, app_secret="not-the-secret") as wrong:
            for n in range(5):
                with pytest.raises(InvalidCredentials, match="Wix answered 401"):
                    complete_install(wrong, f"inst-{n}", emulator.authorization_code(f"inst-{n}"))
            with pytest.raises(InvalidCredentials, match="Request an Access Token: not sent"):
                complete_install(wrong, INSTANCE, emulator.authorization_code(INSTANCE))
        assert emulator.access_requests == 5

    def test_the_tokens_work_on_get_app_instance_and_finish_setup(
        self, broker: TokenBroker, emulator: WixEmulator
    ) -> None:
        install(broker, emulator)
        assert broker.app_instance(INSTANCE)["instance"]["instanceId"] == INSTANCE
        assert broker.finish_setup(INSTANCE).setup_finished_at is not None
        assert emulator.bi_events == [(INSTANCE, "APP_FINISHED_CONFIGURATION")]

    async def test_the_async_path_refreshes_the_same_way(
        self, broker: TokenBroker, emulator: WixEmulator, clock: ManualClock
    ) -> None:
        first = await acomplete_install(broker, INSTANCE, emulator.authorization_code(INSTANCE))
        clock.advance(DUE)
        second = await broker.atoken(INSTANCE)
        assert second != first
        assert issued(emulator, second)
        assert_newest_kept(broker, emulator)
