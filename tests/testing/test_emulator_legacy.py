"""The emulator's legacy OAuth (``POST /oauth/access``) answers as Wix documents it.

Codes are one-time and last 10 minutes by the emulator's clock; refresh tokens rotate
on each use (or, with ``rotate_refresh_tokens=False``, come back identical, as Wix
documents); a used or revoked one is refused with 400 ``invalid_grant``; the access
tokens live 5 minutes and work on Get App Instance and Send BI Event.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tokenbroker.testing.emulator import ACCESS_ENDPOINT, WixEmulator

APP_ID = "legacy-emu-app"
APP_SECRET = "legacy-emu-secret-do-not-log"
INSTANCE = "inst-legacy"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emulator(clock: FakeClock) -> Iterator[WixEmulator]:
    with WixEmulator(APP_ID, APP_SECRET, clock=clock) as emu:
        yield emu


@pytest.fixture
def client(emulator: WixEmulator) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=emulator.url, timeout=10) as c:
        yield c


def exchange(client: httpx2.Client, code: str, **overrides: Any) -> httpx2.Response:
    body = {"grant_type": "authorization_code", "client_id": APP_ID, "client_secret": APP_SECRET}
    return client.post("/oauth/access", json={**body, "code": code, **overrides})


def exchange_with(client: httpx2.Client, fields: dict[str, Any]) -> httpx2.Response:
    return client.post("/oauth/access", json=fields)


def refresh(
    client: httpx2.Client, refresh_token: str, path: str = "/oauth/access"
) -> httpx2.Response:
    body = {"grant_type": "refresh_token", "client_id": APP_ID, "client_secret": APP_SECRET}
    return client.post(path, json={**body, "refresh_token": refresh_token})


def installed(emulator: WixEmulator, client: httpx2.Client) -> dict[str, str]:
    """The two tokens of a fresh install of ``INSTANCE``."""
    response = exchange(client, emulator.authorization_code(INSTANCE))
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert isinstance(tokens, dict)
    return tokens


def refused(response: httpx2.Response, shape: str = "wix") -> str:
    """The code of a 400 refusal, in ``shape``."""
    assert response.status_code == 400, response.text
    body = response.json()
    if shape == "ietf":
        return str(body["error"])
    return str(body["details"]["applicationError"]["code"])


class TestRequestAnAccessToken:
    def test_a_code_buys_exactly_the_documented_two_fields(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        tokens = installed(emulator, client)
        assert set(tokens) == {"access_token", "refresh_token"}
        assert tokens["access_token"] != tokens["refresh_token"]
        assert emulator.refresh_tokens_for(INSTANCE) == [tokens["refresh_token"]]
        assert tokens["access_token"] in emulator.issued_tokens_for(INSTANCE)
        assert INSTANCE in emulator.installed  # the code comes with the install
        assert emulator.access_requests == 1

    def test_a_code_works_once(self, emulator: WixEmulator, client: httpx2.Client) -> None:
        code = emulator.authorization_code(INSTANCE)
        assert exchange(client, code).status_code == 200
        assert refused(exchange(client, code)) == "INVALID_AUTHORIZATION_CODE"

    def test_a_code_lasts_ten_minutes_by_the_emulator_clock(
        self, emulator: WixEmulator, client: httpx2.Client, clock: FakeClock
    ) -> None:
        fresh, stale = emulator.authorization_code(INSTANCE), emulator.authorization_code(INSTANCE)
        clock.advance(599)
        assert exchange(client, fresh).status_code == 200
        clock.advance(1)
        assert refused(exchange(client, stale)) == "INVALID_AUTHORIZATION_CODE"

    def test_an_unknown_code_is_invalid_grant_in_the_ietf_shape(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.error_shape = "ietf"
        assert refused(exchange(client, "no-such-code"), "ietf") == "invalid_grant"

    def test_a_code_of_an_instance_removed_since_is_refused(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        code = emulator.authorization_code(INSTANCE)
        emulator.uninstall(INSTANCE)
        assert refused(exchange(client, code)) == "INVALID_AUTHORIZATION_CODE"

    @pytest.mark.parametrize(
        ("overrides", "status", "code"),
        [
            ({"client_secret": "wrong"}, 401, "INVALID_CLIENT"),
            ({"client_id": "another-app"}, 401, "INVALID_CLIENT"),
            ({"grant_type": "password"}, 400, "UNSUPPORTED_GRANT_TYPE"),
            ({"grant_type": None}, 400, "INVALID_REQUEST"),
            ({"code": ""}, 400, "INVALID_REQUEST"),
            ({"code": 12}, 400, "INVALID_REQUEST"),
        ],
    )
    def test_a_bad_request_is_refused_and_spends_no_code(
        self,
        emulator: WixEmulator,
        client: httpx2.Client,
        overrides: dict[str, Any],
        status: int,
        code: str,
    ) -> None:
        good = emulator.authorization_code(INSTANCE)
        fields = {
            "grant_type": "authorization_code",
            "client_id": APP_ID,
            "client_secret": APP_SECRET,
            "code": good,
        }
        response = exchange_with(client, {**fields, **overrides})
        assert response.status_code == status
        assert response.json()["details"]["applicationError"]["code"] == code
        assert exchange(client, good).status_code == 200

    def test_only_json_is_read(self, emulator: WixEmulator, client: httpx2.Client) -> None:
        code = emulator.authorization_code(INSTANCE)
        response = client.post("/oauth/access", data={"grant_type": "authorization_code"})
        assert response.status_code == 400
        assert exchange(client, code).status_code == 200


class TestRefreshAnAccessToken:
    def test_each_refresh_rotates_the_refresh_token_and_ends_the_old_one(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        first = installed(emulator, client)["refresh_token"]
        response = refresh(client, first)
        assert response.status_code == 200
        second = response.json()["refresh_token"]
        assert second != first
        assert emulator.live_refresh_tokens(INSTANCE) == [second]
        assert emulator.refresh_tokens_for(INSTANCE) == [first, second]
        assert refused(refresh(client, first)) == "INVALID_REFRESH_TOKEN"
        assert refresh(client, second).status_code == 200

    def test_without_rotation_the_same_refresh_token_comes_back_as_documented(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.rotate_refresh_tokens = False
        first = installed(emulator, client)["refresh_token"]
        answers = [refresh(client, first).json() for _ in range(3)]
        assert [a["refresh_token"] for a in answers] == [first] * 3
        assert len({a["access_token"] for a in answers}) == 3

    def test_the_documented_path_with_its_trailing_slash_is_served_too(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        first = installed(emulator, client)["refresh_token"]
        assert refresh(client, first, path="/oauth/access/").status_code == 200
        assert emulator.calls[ACCESS_ENDPOINT] == 2

    def test_a_revoked_grant_is_invalid_grant_in_either_shape(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        token = installed(emulator, client)["refresh_token"]
        emulator.revoke_grants(INSTANCE)
        assert INSTANCE in emulator.installed
        assert refused(refresh(client, token)) == "INVALID_REFRESH_TOKEN"
        emulator.error_shape = "ietf"
        assert refused(refresh(client, token), "ietf") == "invalid_grant"

    def test_one_revoked_refresh_token_leaves_the_others(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.rotate_refresh_tokens = False
        kept = installed(emulator, client)["refresh_token"]
        ended = installed(emulator, client)["refresh_token"]
        emulator.revoke_refresh_token(ended)
        assert refused(refresh(client, ended)) == "INVALID_REFRESH_TOKEN"
        assert refresh(client, kept).status_code == 200

    def test_removing_the_app_ends_its_refresh_tokens_and_codes(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        token = installed(emulator, client)["refresh_token"]
        code = emulator.authorization_code(INSTANCE)
        emulator.uninstall(INSTANCE)
        emulator.install(INSTANCE)
        assert refused(refresh(client, token)) == "INVALID_REFRESH_TOKEN"
        assert refused(exchange(client, code)) == "INVALID_AUTHORIZATION_CODE"
        assert emulator.live_refresh_tokens(INSTANCE) == []

    def test_one_refresh_token_raced_by_many_clients_is_swapped_once(
        self, emulator: WixEmulator
    ) -> None:
        with httpx2.Client(base_url=emulator.url) as setup:
            token = installed(emulator, setup)["refresh_token"]
        statuses: list[int] = []
        lock = threading.Lock()

        def race() -> None:
            with httpx2.Client(base_url=emulator.url, timeout=10) as c:
                status = refresh(c, token).status_code
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=race) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200] + [400] * 7
        assert len(emulator.live_refresh_tokens(INSTANCE)) == 1


class TestTheAccessTokens:
    def test_they_work_on_get_app_instance_and_bi_events_for_five_minutes(
        self, emulator: WixEmulator, client: httpx2.Client, clock: FakeClock
    ) -> None:
        access = installed(emulator, client)["access_token"]
        instance = client.get("/apps/v1/instance", headers={"Authorization": access})
        assert instance.status_code == 200
        assert instance.json()["instance"]["instanceId"] == INSTANCE
        event = client.post(
            "/apps/v1/bi-event",
            json={"eventName": "APP_FINISHED_CONFIGURATION"},
            headers={"Authorization": access},
        )
        assert event.status_code == 200
        assert emulator.bi_events == [(INSTANCE, "APP_FINISHED_CONFIGURATION")]
        clock.advance(300)
        expired = client.get("/apps/v1/instance", headers={"Authorization": access})
        assert expired.status_code == 401

    def test_token_info_describes_them_as_the_apps(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        access = installed(emulator, client)["access_token"]
        info = client.post("/oauth2/token-info", json={"token": access}).json()
        assert info["active"] is True
        assert (info["instanceId"], info["clientId"], info["subjectType"]) == (
            INSTANCE,
            APP_ID,
            "APP",
        )

    def test_their_lifetime_is_a_knob(
        self, emulator: WixEmulator, client: httpx2.Client, clock: FakeClock
    ) -> None:
        emulator.legacy_token_lifetime = 30
        access = installed(emulator, client)["access_token"]
        clock.advance(29)
        assert client.get("/apps/v1/instance", headers={"Authorization": access}).status_code == 200
        clock.advance(1)
        assert client.get("/apps/v1/instance", headers={"Authorization": access}).status_code == 401


class TestFaultsAndCounts:
    def test_faults_can_be_queued_on_the_endpoint(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        code = emulator.authorization_code(INSTANCE)
        emulator.fail_next(503, endpoint=ACCESS_ENDPOINT)
        assert exchange(client, code).status_code == 503
        assert exchange(client, code).status_code == 200  # the fault spent no code
        assert emulator.access_requests == 2
        assert emulator.token_requests == 0

    def test_its_requests_are_counted_in_flight(self, emulator: WixEmulator) -> None:
        code = emulator.authorization_code(INSTANCE)
        emulator.pause()
        result: list[int] = []

        def call() -> None:
            with httpx2.Client(base_url=emulator.url, timeout=10) as c:
                result.append(exchange(c, code).status_code)

        thread = threading.Thread(target=call)
        thread.start()
        assert emulator.wait_for_in_flight(1)
        emulator.resume()
        thread.join()
        assert result == [200]
        assert emulator.peak_concurrency == 1


class TestKnobs:
    @pytest.mark.parametrize("value", [1, 0, "yes", None])
    def test_rotation_is_a_bool(self, value: object) -> None:
        with pytest.raises(TypeError, match="rotate_refresh_tokens"):
            WixEmulator(rotate_refresh_tokens=value)  # type: ignore[arg-type]

    def test_rotation_is_checked_when_set_while_running(self, emulator: WixEmulator) -> None:
        with pytest.raises(TypeError, match="rotate_refresh_tokens"):
            emulator.rotate_refresh_tokens = 1  # type: ignore[assignment]
        assert emulator.rotate_refresh_tokens is True

    @pytest.mark.parametrize("value", [0, -1, math.nan, math.inf])
    def test_the_legacy_lifetime_is_finite_and_positive(self, value: float) -> None:
        with pytest.raises(ValueError, match="legacy_token_lifetime"):
            WixEmulator(legacy_token_lifetime=value)

    def test_codes_are_for_a_named_instance(self, emulator: WixEmulator) -> None:
        with pytest.raises(ValueError, match="instance_id"):
            emulator.authorization_code("")

    def test_codes_and_refresh_tokens_are_bounded_by_max_tokens(self) -> None:
        with (
            WixEmulator(APP_ID, APP_SECRET, max_tokens=2) as emu,
            httpx2.Client(base_url=emu.url) as c,
        ):
            codes = [emu.authorization_code(INSTANCE) for _ in range(3)]
            assert refused(exchange(c, codes[0])) == "INVALID_AUTHORIZATION_CODE"  # forgotten
            assert exchange(c, codes[1]).status_code == 200
            assert exchange(c, codes[2]).status_code == 200
            emu.rotate_refresh_tokens = False
            for _ in range(2):
                exchange(c, emu.authorization_code(INSTANCE))
            assert len(emu.refresh_tokens_for(INSTANCE)) == 2
