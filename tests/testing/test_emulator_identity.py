"""Token Info, the tokens Wix gives the app's front ends, and the signed instance."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx2
import pytest

from tokenbroker.testing.emulator import TOKEN_INFO_ENDPOINT, WixEmulator

APP_ID = "idn-app-id"
APP_SECRET = "idn-app-secret"
INSTANCE = "inst-idn"
NOW = 1_790_000_000.0
LIFETIME = 14400


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emulator(clock: FakeClock) -> Iterator[WixEmulator]:
    emu = WixEmulator(APP_ID, APP_SECRET, clock=clock)
    emu.install(INSTANCE, site_id="site-1", owner_id="owner-1", account_id="account-1")
    with emu:
        yield emu


@pytest.fixture
def client(emulator: WixEmulator) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=emulator.url, timeout=10) as c:
        yield c


def app_token(client: httpx2.Client, instance_id: str = INSTANCE) -> str:
    response = client.post(
        "/oauth2/token",
        json={
            "grant_type": "client_credentials",
            "client_id": APP_ID,
            "client_secret": APP_SECRET,
            "instance_id": instance_id,
        },
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def token_info(client: httpx2.Client, token: str) -> dict[str, Any]:
    # As @wix/sdk asks (build/get-token-info.js): JSON, no Authorization.
    response = client.post("/oauth2/token-info", json={"token": token})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify(instance: str, secret: str) -> dict[str, Any]:
    """Check a signed instance as Wix's parsing guide does; return its data."""
    signature, data = instance.split(".")
    expected = hmac.new(secret.encode(), data.encode("ascii"), hashlib.sha256).digest()
    assert hmac.compare_digest(unb64(signature), expected)
    assert "=" not in instance  # Wix sends base64url without padding
    decoded: dict[str, Any] = json.loads(unb64(data))
    return decoded


class TestTokenInfo:
    def test_an_app_token_is_the_apps_own_for_its_instance(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        token = app_token(client)

        assert token_info(client, token) == {
            "active": True,
            "subjectType": "APP",
            "subjectId": APP_ID,
            "exp": int(NOW) + LIFETIME,
            "iat": int(NOW),
            "clientId": APP_ID,
            "accountId": "account-1",
            "siteId": "site-1",
            "instanceId": INSTANCE,
            "vendorProductId": None,
        }
        assert emulator.calls[TOKEN_INFO_ENDPOINT] == 1

    def test_a_user_token_is_the_site_owners_by_default(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        info = token_info(client, emulator.issue_token(INSTANCE))

        assert (info["subjectType"], info["subjectId"], info["clientId"]) == (
            "USER",
            "owner-1",
            APP_ID,
        )
        assert info["instanceId"] == INSTANCE

    @pytest.mark.parametrize("subject_type", ["MEMBER", "VISITOR"])
    def test_members_and_visitors_get_a_new_id_each_unless_given(
        self, emulator: WixEmulator, client: httpx2.Client, subject_type: str
    ) -> None:
        first = token_info(client, emulator.issue_token(INSTANCE, subject_type=subject_type))
        second = token_info(client, emulator.issue_token(INSTANCE, subject_type=subject_type))
        named = token_info(
            client, emulator.issue_token(INSTANCE, subject_type=subject_type, subject_id="m-7")
        )

        assert first["subjectType"] == second["subjectType"] == subject_type
        assert first["subjectId"] != second["subjectId"]
        assert named["subjectId"] == "m-7"

    def test_another_apps_token_says_whose_it_is(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        info = token_info(client, emulator.issue_token(INSTANCE, client_id="other-app"))

        assert info["active"] is True
        assert info["clientId"] == "other-app"

    def test_an_app_subject_defaults_to_its_client(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        info = token_info(
            client, emulator.issue_token(INSTANCE, subject_type="APP", client_id="other-app")
        )

        assert (info["subjectType"], info["subjectId"]) == ("APP", "other-app")

    def test_a_paid_instance_names_its_plan(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.install("inst-paid", billing={"packageName": "pro", "billingCycle": "MONTHLY"})

        assert token_info(client, app_token(client, "inst-paid"))["vendorProductId"] == "pro"

    def test_an_expired_token_is_inactive(
        self, emulator: WixEmulator, client: httpx2.Client, clock: FakeClock
    ) -> None:
        token = emulator.issue_token(INSTANCE, lifetime=60)
        assert token_info(client, token)["exp"] == int(NOW) + 60

        clock.now += 59
        assert token_info(client, token)["active"] is True
        clock.now += 1
        assert token_info(client, token) == {"active": False}

    def test_a_revoked_token_is_inactive(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        token, kept = app_token(client), emulator.issue_token(INSTANCE)

        emulator.revoke(token)

        assert token_info(client, token) == {"active": False}
        assert token_info(client, kept)["active"] is True

    def test_uninstalling_makes_every_token_of_the_instance_inactive(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        tokens = [app_token(client), emulator.issue_token(INSTANCE)]

        emulator.uninstall(INSTANCE)

        assert [token_info(client, t) for t in tokens] == [{"active": False}] * 2

    @pytest.mark.parametrize("token", ["OAUTH2.made-up", "not even close", "x" * 500])
    def test_an_unknown_token_is_inactive(self, client: httpx2.Client, token: str) -> None:
        assert token_info(client, token) == {"active": False}

    @pytest.mark.parametrize(
        "content",
        [b"{}", b'{"token": ""}', b'{"token": 7}', b'["x"]'],
        ids=["missing", "empty", "number", "array"],
    )
    def test_a_request_without_a_token_is_a_400_validation_error(
        self, emulator: WixEmulator, client: httpx2.Client, content: bytes
    ) -> None:
        response = client.post(
            "/oauth2/token-info", content=content, headers={"Content-Type": "application/json"}
        )
        violations = response.json()["details"]["validationError"]["fieldViolations"]
        emulator.error_shape = "ietf"
        rfc = client.post(
            "/oauth2/token-info", content=content, headers={"Content-Type": "application/json"}
        )

        assert response.status_code == 400
        assert [v["field"] for v in violations] == ["token"]
        assert (rfc.status_code, rfc.json()["error"]) == (400, "invalid_request")

    def test_a_body_that_is_not_json_is_400(self, client: httpx2.Client) -> None:
        response = client.post(
            "/oauth2/token-info", content=b"{", headers={"Content-Type": "application/json"}
        )

        assert response.status_code == 400
        assert response.json()["details"]["applicationError"]["code"] == "INVALID_JSON"

    def test_it_takes_post_only_and_faults_can_target_it(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.fail_next(503, endpoint=TOKEN_INFO_ENDPOINT)

        assert client.post("/oauth2/token-info", json={"token": "x"}).status_code == 503
        assert client.get("/oauth2/token-info").status_code == 405
        assert emulator.calls[TOKEN_INFO_ENDPOINT] == 1


class TestIssueToken:
    def test_its_token_authenticates_the_apps_endpoints(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        token = emulator.issue_token(INSTANCE, subject_type="VISITOR")

        instance = client.get("/apps/v1/instance", headers={"Authorization": token})
        event = client.post(
            "/apps/v1/bi-event", json={"eventName": "X"}, headers={"Authorization": token}
        )

        assert instance.json()["instance"]["instanceId"] == INSTANCE
        assert event.status_code == 200
        assert emulator.issued_tokens_for(INSTANCE) == [token]

    def test_revoke_instance_ends_it(self, emulator: WixEmulator, client: httpx2.Client) -> None:
        token = emulator.issue_token(INSTANCE)

        emulator.revoke_instance(INSTANCE)

        assert client.get("/apps/v1/instance", headers={"Authorization": token}).status_code == 401

    def test_it_is_not_counted_as_a_request(self, emulator: WixEmulator) -> None:
        emulator.issue_token(INSTANCE)

        assert emulator.calls == {}
        assert emulator.request_ids == []

    @pytest.mark.parametrize(
        ("arguments", "error", "match"),
        [
            ({"instance_id": "nowhere"}, ValueError, "not installed"),
            ({"instance_id": ""}, ValueError, "instance_id"),
            ({"subject_type": "ADMIN"}, ValueError, "subject_type"),
            ({"subject_type": "user"}, ValueError, "subject_type"),
            ({"subject_type": None}, TypeError, "subject_type"),
            ({"subject_id": ""}, ValueError, "subject_id"),
            ({"client_id": 5}, TypeError, "client_id"),
            ({"lifetime": 0}, ValueError, "lifetime"),
            ({"lifetime": float("inf")}, ValueError, "lifetime"),
            ({"lifetime": "60"}, TypeError, "lifetime"),
        ],
        ids=repr,
    )
    def test_bad_arguments_are_refused_naming_them(
        self,
        emulator: WixEmulator,
        arguments: dict[str, Any],
        error: type[Exception],
        match: str,
    ) -> None:
        call: dict[str, Any] = {"instance_id": INSTANCE, **arguments}

        with pytest.raises(error, match=match):
            emulator.issue_token(call.pop("instance_id"), **call)
        assert emulator.issued_tokens_for(INSTANCE) == []


class TestSignInstance:
    def test_it_verifies_with_the_app_secret_and_carries_the_documented_fields(
        self, emulator: WixEmulator
    ) -> None:
        data = verify(emulator.sign_instance(INSTANCE), APP_SECRET)

        assert data == {
            "instanceId": INSTANCE,
            "appDefId": APP_ID,
            "signDate": datetime.fromtimestamp(NOW, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "uid": "owner-1",
            "permissions": "OWNER",
            "demoMode": False,
            "siteOwnerId": "owner-1",
        }

    def test_the_data_part_is_compact_json_in_the_documented_order(
        self, emulator: WixEmulator
    ) -> None:
        data = unb64(emulator.sign_instance(INSTANCE).split(".")[1]).decode()

        assert data.startswith('{"instanceId":"inst-idn","appDefId":"idn-app-id","signDate":"')

    def test_an_anonymous_visitor_has_aid_and_no_uid(self, emulator: WixEmulator) -> None:
        data = verify(emulator.sign_instance(INSTANCE, aid="anon-1", permissions=""), APP_SECRET)

        assert data["aid"] == "anon-1"
        assert "uid" not in data
        assert data["permissions"] == ""

    def test_a_given_user_date_and_extra_fields_are_signed(self, emulator: WixEmulator) -> None:
        moment = datetime(2026, 12, 2, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))

        data = verify(
            emulator.sign_instance(
                INSTANCE,
                uid="collab-2",
                permissions="",
                sign_date=moment,
                extra={"siteMemberId": "m-1", "demoMode": True},
            ),
            APP_SECRET,
        )

        assert data["uid"] == "collab-2"
        assert data["signDate"] == "2026-12-02T07:30:15.123Z"
        assert (data["siteMemberId"], data["demoMode"]) == ("m-1", True)

    def test_a_paid_instance_carries_its_plan(self, emulator: WixEmulator) -> None:
        emulator.install("inst-paid", billing={"packageName": "pro"})

        assert verify(emulator.sign_instance("inst-paid"), APP_SECRET)["vendorProductId"] == "pro"

    def test_another_secret_forges_one_the_app_secret_does_not_verify(
        self, emulator: WixEmulator
    ) -> None:
        forged = emulator.sign_instance(INSTANCE, secret="not-the-app-secret")

        verify(forged, "not-the-app-secret")
        with pytest.raises(AssertionError):
            verify(forged, APP_SECRET)

    def test_the_default_date_follows_the_emulator_clock(
        self, emulator: WixEmulator, clock: FakeClock
    ) -> None:
        clock.now += 3600.25

        data = verify(emulator.sign_instance(INSTANCE), APP_SECRET)

        later = datetime.fromtimestamp(NOW + 3600, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        assert data["signDate"] == later + ".250Z"

    @pytest.mark.parametrize(
        ("arguments", "error", "match"),
        [
            ({"instance_id": "nowhere"}, ValueError, "not installed"),
            ({"uid": "u", "aid": "a"}, ValueError, "uid or aid"),
            ({"uid": ""}, ValueError, "uid"),
            ({"permissions": None}, TypeError, "permissions"),
            ({"sign_date": datetime(2026, 1, 1)}, ValueError, "sign_date"),
            ({"sign_date": "2026-01-01"}, TypeError, "sign_date"),
            ({"secret": ""}, ValueError, "secret"),
            ({"extra": ["x"]}, TypeError, "extra"),
            ({"extra": {"x": object()}}, TypeError, "extra"),
        ],
        ids=repr,
    )
    def test_bad_arguments_are_refused_naming_them(
        self,
        emulator: WixEmulator,
        arguments: dict[str, Any],
        error: type[Exception],
        match: str,
    ) -> None:
        call: dict[str, Any] = {"instance_id": INSTANCE, **arguments}

        with pytest.raises(error, match=match):
            emulator.sign_instance(call.pop("instance_id"), **call)

    def test_the_secret_is_in_no_error_message(self, emulator: WixEmulator) -> None:
        with pytest.raises(ValueError, match="not installed") as caught:
            emulator.sign_instance("nowhere", secret="hush-hush")

        assert "hush-hush" not in str(caught.value)
        assert APP_SECRET not in str(caught.value)
