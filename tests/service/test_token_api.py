"""``GET /v1/apps/{name}/instances/{id}/token`` over loopback: every answer it promises."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from tokenbroker import TokenBroker
from tokenbroker.service.app import create_app
from tokenbroker.service.keys import ServiceKeys
from tokenbroker.service.problems import UNAUTHORIZED
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.webhooks import make_key_pair

from ..conftest import APP_ID, APP_SECRET
from ..webhook_helpers import free_port, running
from .service_api import APP, Api, bearer, raw_request, serving, token_path

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture
def api(broker: TokenBroker) -> Iterator[Api]:
    with serving(broker) as running_api:
        yield running_api


def error_of(response: httpx2.Response) -> str:
    body = response.json()
    assert set(body) == {"error", "message", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    assert "\n" not in body["message"]
    return str(body["error"])


class TestAToken:
    def test_the_answer_has_the_four_fields_in_rfc3339_utc_and_no_store(
        self, api: Api, wix_emulator: WixEmulator
    ) -> None:
        response = api.token(api.key("reader"))
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"access_token", "token_type", "expires_at", "refresh_at"}
        assert body["access_token"] in wix_emulator.issued_tokens_for("inst-1")
        assert body["token_type"] == "Bearer"
        for field in ("expires_at", "refresh_at"):
            assert RFC3339_UTC.fullmatch(body[field]), body[field]
        expires = datetime.fromisoformat(body["expires_at"])
        refresh = datetime.fromisoformat(body["refresh_at"])
        assert datetime.now(UTC) < refresh < expires
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-request-id"]

    def test_it_is_the_librarys_token_from_the_same_cache(
        self, api: Api, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        key = api.key("reader")
        first, second = api.token(key).json(), api.token(key).json()
        assert first["access_token"] == second["access_token"]
        assert broker.token("inst-1").access_token == first["access_token"]
        assert wix_emulator.token_requests == 1

    def test_a_token_read_is_logged_at_info_with_key_app_and_instance_never_the_token(
        self, api: Api, caplog: pytest.LogCaptureFixture
    ) -> None:
        key = api.key("reader")
        with caplog.at_level(logging.INFO, logger="tokenbroker.service"):
            token = api.token(key).json()["access_token"]
        (line,) = [r.getMessage() for r in caplog.records if "token read" in r.getMessage()]
        assert "key reader" in line
        assert f"app {APP}" in line
        assert "'inst-1'" in line
        assert token not in caplog.text
        assert key not in caplog.text


class TestWhoMayAsk:
    @pytest.mark.parametrize(
        "header",
        [
            None,
            "Bearer",
            "Bearer ",
            "Basic dXNlcjpwYXNz",
            "Bearer tbk_reader_short",
            "Bearer tbk_reader_" + "a" * 42,
            "Bearer tbk_reader_" + "a" * 44,
            "Bearer tbk_Reader_" + "a" * 43,
            "Bearer tbk_reader_" + "a" * 42 + "!",
            "Bearer  tbk_reader_" + "a" * 43,
            "Bearer\ttbk_reader_" + "a" * 43,
            "Bearer tbk_reader_" + "a" * 43 + " extra",
            "tbk_reader_" + "a" * 43,
        ],
        ids=[
            "missing",
            "scheme-alone",
            "scheme-and-space",
            "basic",
            "too-short",
            "one-short",
            "one-long",
            "uppercase-name",
            "bad-char",
            "two-spaces",
            "tab",
            "trailing-word",
            "no-scheme",
        ],
    )
    def test_a_missing_or_malformed_key_is_the_one_401(self, api: Api, header: str | None) -> None:
        api.key("reader")
        headers = {} if header is None else {"Authorization": header}
        # sent byte for byte: a client would refuse some of these itself
        response = raw_request(api.url, token_path("inst-1"), headers)
        assert response.status == 401
        assert response.json()["error"] == "unauthorized"
        assert response.json()["message"] == UNAUTHORIZED
        assert response.headers["www-authenticate"].startswith("Bearer")

    def test_two_authorization_headers_are_refused_even_if_both_are_good(self, api: Api) -> None:
        key = api.key("reader")
        headers = [("Authorization", f"Bearer {key}"), ("Authorization", f"Bearer {key}")]
        response = api.client.get(token_path("inst-1"), headers=headers)
        assert response.status_code == 401

    def test_unknown_revoked_and_wrong_keys_get_the_same_answer(self, api: Api) -> None:
        good = api.key("reader")
        revoked = api.key("gone")
        api.keys.revoke("gone")
        name, _, secret = good.rpartition("_")
        wrong = f"{name}_{'A' * len(secret)}"
        unknown = good.replace("tbk_reader_", "tbk_nobody_")
        bodies = []
        for key in (unknown, revoked, wrong):
            response = api.token(key)
            assert response.status_code == 401
            body = response.json()
            bodies.append((body["error"], body["message"]))
        assert len(set(bodies)) == 1
        assert api.token(good).status_code == 200

    def test_a_proxy_scoped_key_cannot_read_a_token(self, api: Api) -> None:
        response = api.token(api.key("prox", scopes=("proxy",)))
        assert response.status_code == 403
        assert error_of(response) == "forbidden"
        assert "may not read tokens" in response.json()["message"]

    def test_a_key_for_another_app_cannot_read_this_ones(self, api: Api) -> None:
        response = api.token(api.key("other", apps=("other-app",)))
        assert response.status_code == 403
        assert "does not cover app 'default'" in response.json()["message"]

    def test_an_app_not_served_is_403_without_cover_and_404_with_it(self, api: Api) -> None:
        key = api.key("wide", apps=(APP, "ghost-app"))
        assert api.token(key, app="nowhere").status_code == 403
        response = api.token(key, app="ghost-app")
        assert response.status_code == 404
        assert error_of(response) == "unknown_app"

    def test_refusals_log_one_line_and_no_key(
        self, api: Api, caplog: pytest.LogCaptureFixture
    ) -> None:
        key = api.key("prox", scopes=("proxy",))
        with caplog.at_level(logging.INFO, logger="tokenbroker.service"):
            assert api.token(key).status_code == 403
        (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
        assert "refused 403 forbidden" in line
        assert "key prox" in line
        assert key not in caplog.text


class TestBadRequests:
    @pytest.mark.parametrize(
        "instance", ["%20inst-1", "inst%01x", "x" * 257], ids=["space", "control", "long"]
    )
    def test_a_malformed_instance_id_is_400(self, api: Api, instance: str) -> None:
        response = api.token(api.key("reader"), instance)
        assert response.status_code == 400
        assert error_of(response) == "bad_request"

    def test_an_unknown_route_is_a_json_404(self, api: Api) -> None:
        response = api.client.get("/v1/nothing", headers=bearer(api.key("reader")))
        assert response.status_code == 404
        assert error_of(response) == "not_found"

    def test_without_token_api_there_is_no_v1(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        with (
            TokenBroker(
                app_id=APP_ID,
                app_secret=APP_SECRET,
                store=sqlite_url,
                api_url=wix_emulator.url,
                public_key=make_key_pair()[1],
            ) as broker,
            running(create_app(broker)) as url,
        ):
            response = httpx2.get(url + token_path("inst-1"))
            document = httpx2.get(url + "/v1/openapi.json")
        assert response.status_code == 404
        assert document.status_code == 404


class TestWhenTheTokenCannotBeHad:
    def test_not_installed_is_409(self, api: Api) -> None:
        response = api.token(api.key("reader"), "ghost-instance")
        assert response.status_code == 409
        assert error_of(response) == "not_installed"

    def test_removed_from_the_registry_is_409_without_asking_wix(
        self, api: Api, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        broker.add_installation("inst-1")
        broker.remove_installation("inst-1")
        response = api.token(api.key("reader"))
        assert response.status_code == 409
        assert wix_emulator.token_requests == 0

    def test_a_wix_error_is_502(self, api: Api, wix_emulator: WixEmulator) -> None:
        wix_emulator.fail_next(400)
        response = api.token(api.key("reader"))
        assert response.status_code == 502
        assert error_of(response) == "wix_error"
        assert "request id" in response.json()["message"]  # Wix's, for its support

    def test_a_remembered_back_off_is_429_with_retry_after_and_asks_wix_nothing(
        self, api: Api, wix_emulator: WixEmulator
    ) -> None:
        key = api.key("reader")
        wix_emulator.fail_next(400)
        assert api.token(key).status_code == 502
        asked = wix_emulator.token_requests
        response = api.token(key)
        assert response.status_code == 429
        assert error_of(response) == "backing_off"
        assert int(response.headers["retry-after"]) >= 1
        assert wix_emulator.token_requests == asked

    def test_a_wix_429_is_429_with_wixs_retry_after(
        self, api: Api, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.rate_limit_next(retry_after=60)  # over the retry budget: not waited
        response = api.token(api.key("reader"))
        assert response.status_code == 429
        assert error_of(response) == "rate_limited"
        assert 55 <= int(response.headers["retry-after"]) <= 60

    def test_an_unreachable_wix_is_503(self, sqlite_url: str) -> None:
        with (
            TokenBroker(
                app_id=APP_ID,
                app_secret=APP_SECRET,
                store=sqlite_url,
                api_url=f"http://127.0.0.1:{free_port()}",  # nothing listens
                max_attempts=1,
            ) as broker,
            serving(broker) as api,
        ):
            response = api.token(api.key("reader"))
        assert response.status_code == 503
        assert error_of(response) == "wix_unavailable"

    def test_a_store_that_is_down_is_503_and_says_nothing_of_it(
        self, wix_emulator: WixEmulator, tmp_path: Path
    ) -> None:
        blocker = tmp_path / "f"
        blocker.write_text("x")
        with (
            TokenBroker(
                app_id=APP_ID,
                app_secret=APP_SECRET,
                store=f"sqlite:///{blocker}/x.db",
                api_url=wix_emulator.url,
            ) as broker,
            serving(broker) as api,
        ):
            response = api.token("tbk_reader_" + "a" * 43)
        assert response.status_code == 503
        assert error_of(response) == "store_unavailable"
        assert str(blocker) not in response.text


def test_mounted_in_another_app_it_works_without_its_own_lifespan(
    broker: TokenBroker, wix_emulator: WixEmulator
) -> None:
    inner = create_app(broker, token_api=True)  # keys: on the broker's store
    parent = Starlette(routes=[Mount("/tokenbroker", app=inner)])
    key = ServiceKeys(broker.store).add("mounted", ["default"], ["token"])
    with running(parent) as url:
        response = httpx2.get(url + "/tokenbroker" + token_path("inst-1"), headers=bearer(key))
        proxied = httpx2.get(
            url + "/tokenbroker/v1/apps/default/instances/inst-1/wix/apps/v1/instance",
            headers=bearer(key),
        )
    assert response.status_code == 200
    assert response.json()["access_token"] in wix_emulator.issued_tokens_for("inst-1")
    assert proxied.status_code == 200  # the raw path is read past the mount's prefix
    assert proxied.json()["instance"]["instanceId"] == "inst-1"
