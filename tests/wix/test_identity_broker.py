"""``broker.wix.identify`` / ``elevate`` / ``token_info``: with httpx2.MockTransport, then
against the emulator over loopback (its ``sign_instance``, ``issue_token`` and Token Info)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx2
import pytest

from tokenbroker import ConfigError, ManualClock, TokenBroker, TransientProviderError
from tokenbroker.testing.emulator import TOKEN_INFO_ENDPOINT, WixEmulator
from tokenbroker.wix.identity import IdentityRejected

from ..conftest import APP_ID, INSTANCE
from .test_identity_kit import (
    API,
    APP,
    SECRET,
    T0,
    TokenInfoScript,
    active,
    claims,
    signed,
)

APP_TOKEN = "OAUTH2.the-apps-own-token"
USER_TOKEN = "OauthNG.JWS.a-dashboard-users-token"


class Wix:
    """Create Access Token and Token Info, scripted."""

    def __init__(self) -> None:
        self.token_info = TokenInfoScript({USER_TOKEN: active()})
        self.minted: list[str] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/oauth2/token-info":
            return self.token_info(request)
        instance_id = json.loads(request.content)["instance_id"]
        self.minted.append(instance_id)
        body = {"access_token": APP_TOKEN, "token_type": "Bearer", "expires_in": 14400}
        return httpx2.Response(200, json=body)


@pytest.fixture
def wix() -> Wix:
    return Wix()


@pytest.fixture
def mocked(wix: Wix) -> Iterator[TokenBroker]:
    with TokenBroker(
        app_id=APP,
        app_secret=SECRET,
        store="memory://",
        api_url=API,
        clock=ManualClock(start=T0),
        transport=httpx2.MockTransport(wix),
    ) as broker:
        yield broker


class TestBrokerWix:
    def test_identify_both_kinds(self, mocked: TokenBroker) -> None:
        assert mocked.wix.identify(signed()).source == "instance"
        assert mocked.wix.identify(USER_TOKEN).source == "token"

    def test_elevate_gets_the_apps_own_token_by_the_normal_path(
        self, mocked: TokenBroker, wix: Wix
    ) -> None:
        token = mocked.wix.elevate(signed())
        assert token.instance_id == "inst-1"
        assert token.access_token == APP_TOKEN
        assert mocked.wix.elevate(USER_TOKEN) == token  # cached, shared: one mint
        assert wix.minted == ["inst-1"]

    def test_elevate_refuses_before_minting(self, mocked: TokenBroker, wix: Wix) -> None:
        wix.token_info.answers["OauthNG.JWS.other"] = active(clientId="another-app")
        with pytest.raises(IdentityRejected, match="token for another app"):
            mocked.wix.elevate("OauthNG.JWS.other")
        with pytest.raises(IdentityRejected, match="anonymous caller"):
            mocked.wix.elevate(signed(claims(uid=None, aid="visitor-1")))
        assert wix.minted == []

    def test_elevate_an_anonymous_caller_when_asked(self, mocked: TokenBroker) -> None:
        anonymous = signed(claims(uid=None, aid="visitor-1"))
        assert mocked.wix.elevate(anonymous, allow_anonymous=True).access_token == APP_TOKEN

    async def test_the_async_twins(self, mocked: TokenBroker, wix: Wix) -> None:
        assert (await mocked.wix.aidentify(USER_TOKEN)).user_id == "user-1"
        assert (await mocked.wix.atoken_info(USER_TOKEN)).active
        assert (await mocked.wix.aelevate(signed())).access_token == APP_TOKEN
        with pytest.raises(IdentityRejected, match="inactive token"):
            await mocked.wix.aelevate("OauthNG.JWS.unknown")
        assert wix.minted == ["inst-1"]

    def test_configure_identity(self, mocked: TokenBroker) -> None:
        old = signed(claims(signDate="2027-01-15T06:00:00.000Z"))  # T0 is 08:00Z that day
        assert mocked.wix.identify(old).instance_id == "inst-1"
        mocked.wix.configure_identity(max_instance_age=3600)
        with pytest.raises(IdentityRejected, match="instance expired"):
            mocked.wix.identify(old)
        with pytest.raises(ConfigError):
            mocked.wix.configure_identity(cache_max_age=120)
        assert mocked.wix.identifier.max_instance_age == 3600  # a bad call changes nothing

    def test_nothing_shows_the_secret(self, mocked: TokenBroker) -> None:
        shown = repr(mocked.wix.identifier) + repr(mocked.wix.identifier.cache)
        assert SECRET not in shown


# ------------------------------------------------------------------ against the emulator


class TestEmulator:
    def test_a_signed_instance(self, broker: TokenBroker, wix_emulator: WixEmulator) -> None:
        identity = broker.wix.identify(wix_emulator.sign_instance(INSTANCE))
        assert identity.instance_id == INSTANCE
        assert identity.user_id is not None
        assert identity.claims["appDefId"] == APP_ID
        assert wix_emulator.calls[TOKEN_INFO_ENDPOINT] == 0

    def test_forged_anonymous_and_stale_instances(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        forged = wix_emulator.sign_instance(INSTANCE, secret="not-the-app-secret")
        with pytest.raises(IdentityRejected, match="bad signature"):
            broker.wix.identify(forged)
        anonymous = wix_emulator.sign_instance(INSTANCE, aid="visitor-1")
        with pytest.raises(IdentityRejected, match="anonymous caller"):
            broker.wix.identify(anonymous)
        assert broker.wix.identify(anonymous, allow_anonymous=True).anonymous
        stale_date = datetime.now(UTC) - timedelta(hours=25)
        stale = wix_emulator.sign_instance(INSTANCE, sign_date=stale_date)
        with pytest.raises(IdentityRejected, match="instance expired"):
            broker.wix.identify(stale)

    def test_tokens_through_token_info(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        user = wix_emulator.issue_token(INSTANCE)
        identity = broker.wix.identify(user)
        assert (identity.instance_id, identity.source, identity.subject_type) == (
            INSTANCE,
            "token",
            "USER",
        )
        assert identity.site_id is not None
        broker.wix.identify(user)
        assert wix_emulator.calls[TOKEN_INFO_ENDPOINT] == 1  # the second came from the cache
        other = wix_emulator.issue_token(INSTANCE, client_id="another-app")
        with pytest.raises(IdentityRejected, match="token for another app"):
            broker.wix.identify(other)
        visitor = wix_emulator.issue_token(INSTANCE, subject_type="VISITOR")
        with pytest.raises(IdentityRejected, match="anonymous caller"):
            broker.wix.identify(visitor)
        assert broker.wix.identify(visitor, allow_anonymous=True).anonymous

    def test_elevate_gives_the_brokers_token(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        elevated = broker.wix.elevate(wix_emulator.issue_token(INSTANCE))
        assert elevated.access_token == broker.token(INSTANCE).access_token
        # and Wix takes it as the app's own: Token Info says so
        info = broker.wix.token_info(elevated.access_token)
        assert (info.subject_type, info.client_id, info.instance_id) == ("APP", APP_ID, INSTANCE)

    def test_a_revoked_token_is_inactive_once_the_cache_lets_go(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        broker.wix.configure_identity(cache_max_age=0)
        user = wix_emulator.issue_token(INSTANCE)
        broker.wix.identify(user)
        wix_emulator.revoke(user)
        with pytest.raises(IdentityRejected, match="inactive token"):
            broker.wix.identify(user)

    def test_token_info_down_is_an_outage_not_a_rejection(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        user = wix_emulator.issue_token(INSTANCE)
        wix_emulator.fail_next(503, times=3, endpoint=TOKEN_INFO_ENDPOINT)
        with pytest.raises(TransientProviderError):
            broker.wix.identify(user)
        wix_emulator.fail_next(400, endpoint=TOKEN_INFO_ENDPOINT)
        with pytest.raises(IdentityRejected, match="token refused by Wix"):
            broker.wix.identify(user)
        assert broker.wix.identify(user).instance_id == INSTANCE


class TestEmulatorClock:
    """One ManualClock for the emulator and the broker: expiry without sleeping."""

    def test_an_expired_token_is_refused_and_the_cache_honours_exp(self) -> None:
        clock = ManualClock(start=T0)
        emulator = WixEmulator(APP_ID, SECRET, clock=clock.time)
        emulator.install(INSTANCE)
        with (
            emulator,
            TokenBroker(
                app_id=APP_ID,
                app_secret=SECRET,
                store="memory://",
                api_url=emulator.url,
                clock=clock,
            ) as broker,
        ):
            user = emulator.issue_token(INSTANCE, lifetime=30)
            broker.wix.identify(user)
            clock.advance(29)
            broker.wix.identify(user)
            assert emulator.calls[TOKEN_INFO_ENDPOINT] == 1
            clock.advance(1)
            with pytest.raises(IdentityRejected, match="inactive token"):
                broker.wix.identify(user)
            assert emulator.calls[TOKEN_INFO_ENDPOINT] == 2
            fresh = emulator.sign_instance(INSTANCE)
            clock.advance(24 * 3600 + 1)
            with pytest.raises(IdentityRejected, match="instance expired"):
                broker.wix.identify(fresh)
