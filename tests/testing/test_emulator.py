"""The Wix emulator answers like Wix, over real loopback sockets, and its knobs work."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest

from tokenbroker.testing import pytest_plugin
from tokenbroker.testing.emulator import WixEmulator

APP_ID = "emu-app-id"
APP_SECRET = "emu-app-secret-do-not-log"
INSTANCE = "inst-1"
LIFETIME = 14400

# The plugin's fixture, made visible here without relying on the pytest11 entry point.
wix_emulator = pytest_plugin.wix_emulator


class FakeClock:
    """A clock the test moves by hand, so expiry is tested without waiting."""

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
    emu = WixEmulator(APP_ID, APP_SECRET, clock=clock)
    emu.install(INSTANCE)
    with emu:
        yield emu


@pytest.fixture
def client(emulator: WixEmulator) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=emulator.url, timeout=10) as c:
        yield c


def token_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "grant_type": "client_credentials",
        "client_id": APP_ID,
        "client_secret": APP_SECRET,
        "instance_id": INSTANCE,
    }
    body.update(overrides)
    return body


def request_token(client: httpx2.Client, **overrides: Any) -> httpx2.Response:
    return client.post("/oauth2/token", json=token_body(**overrides))


def get_token(client: httpx2.Client, instance_id: str = INSTANCE) -> str:
    response = request_token(client, instance_id=instance_id)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def send_bi_event(
    client: httpx2.Client, authorization: str, event: str = "APP_FINISHED_CONFIGURATION"
) -> httpx2.Response:
    return client.post(
        "/apps/v1/bi-event", json={"eventName": event}, headers={"Authorization": authorization}
    )


def assert_wix_error(response: httpx2.Response, status: int, code: str | None = None) -> None:
    """Wix's standard error shape: message plus details.applicationError."""
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["message"], str)
    application_error = body["details"]["applicationError"]
    assert isinstance(application_error["description"], str)
    if code is not None:
        assert application_error["code"] == code


def token_from_new_client(emulator: WixEmulator) -> httpx2.Response:
    """One token request on its own connection, as a separate process would make it."""
    with httpx2.Client(base_url=emulator.url, timeout=30) as c:
        return request_token(c)


def run_concurrently(count: int, work: Callable[[], httpx2.Response]) -> list[httpx2.Response]:
    """Run ``work`` on ``count`` threads released together; return every response."""
    barrier = threading.Barrier(count)
    results: list[httpx2.Response] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        try:
            response = work()
        except BaseException as exc:
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(response)

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


class TestCreateAccessToken:
    def test_installed_instance_gets_raw_bearer_token_with_lifetime(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        response = request_token(client)

        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert set(body) == {"access_token", "token_type", "expires_in"}
        assert body["access_token"].startswith("OAUTH2.")
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == LIFETIME
        assert emulator.issued_tokens_for(INSTANCE) == [body["access_token"]]

    def test_each_request_gets_a_new_token(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        first, second = get_token(client), get_token(client)

        assert first != second
        assert emulator.issued_tokens_for(INSTANCE) == [first, second]

    def test_token_lifetime_set_at_runtime_applies_to_new_tokens(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.token_lifetime = 60

        assert request_token(client).json()["expires_in"] == 60

    @pytest.mark.parametrize(
        "overrides",
        [{"client_secret": "wrong"}, {"client_id": "someone-else"}],
        ids=["wrong-secret", "wrong-app-id"],
    )
    def test_wrong_credentials_are_401_invalid_client(
        self, client: httpx2.Client, overrides: dict[str, str]
    ) -> None:
        response = request_token(client, **overrides)

        assert_wix_error(response, 401, "INVALID_CLIENT")
        assert response.json()["message"] == "Invalid client credentials"

    def test_unknown_instance_is_400_app_not_installed(self, client: httpx2.Client) -> None:
        response = request_token(client, instance_id="never-installed")

        assert_wix_error(response, 400, "APP_NOT_INSTALLED")
        assert response.json()["message"] == "App is not installed on this instance"

    def test_uninstalled_instance_is_400_app_not_installed(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.uninstall(INSTANCE)

        assert_wix_error(request_token(client), 400, "APP_NOT_INSTALLED")
        assert emulator.installed == frozenset()

    def test_reinstalled_instance_gets_tokens_again(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.uninstall(INSTANCE)
        emulator.install(INSTANCE)

        assert request_token(client).status_code == 200

    def test_body_that_is_not_declared_json_is_400(self, client: httpx2.Client) -> None:
        response = client.post(
            "/oauth2/token",
            content=httpx2.Request("POST", "/", json=token_body()).content,
            headers={"Content-Type": "text/plain"},
        )

        assert_wix_error(response, 400)

    def test_form_encoded_body_is_400(self, client: httpx2.Client) -> None:
        response = client.post("/oauth2/token", data=token_body())

        assert_wix_error(response, 400)

    def test_json_content_type_with_charset_is_accepted(self, client: httpx2.Client) -> None:
        response = client.post(
            "/oauth2/token",
            content=httpx2.Request("POST", "/", json=token_body()).content,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )

        assert response.status_code == 200

    def test_camel_case_field_names_are_rejected(self, client: httpx2.Client) -> None:
        camel = {
            "grantType": "client_credentials",
            "clientId": APP_ID,
            "clientSecret": APP_SECRET,
            "instanceId": INSTANCE,
        }

        assert_wix_error(client.post("/oauth2/token", json=camel), 400)

    @pytest.mark.parametrize(
        "content",
        [
            b"{not json",
            b"[]",
            b'"client_credentials"',
            b'{"grant_type": "client_credentials"}',
            b'{"grant_type": "client_credentials", "client_id": "emu-app-id",'
            b' "client_secret": "emu-app-secret-do-not-log", "instance_id": 7}',
        ],
        ids=["malformed", "array", "string", "missing-fields", "non-string-field"],
    )
    def test_malformed_request_bodies_are_400(self, client: httpx2.Client, content: bytes) -> None:
        response = client.post(
            "/oauth2/token", content=content, headers={"Content-Type": "application/json"}
        )

        assert_wix_error(response, 400)

    def test_other_grant_type_is_400(self, client: httpx2.Client) -> None:
        response = request_token(client, grant_type="authorization_code")

        assert_wix_error(response, 400, "UNSUPPORTED_GRANT_TYPE")


class TestAuthorization:
    def test_bi_event_with_raw_token_is_accepted_and_recorded(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        response = send_bi_event(client, get_token(client))

        assert response.status_code == 200
        assert response.json() == {}
        assert emulator.bi_events == [(INSTANCE, "APP_FINISHED_CONFIGURATION")]

    def test_bearer_prefix_is_accepted_but_counted(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        token = get_token(client)
        assert send_bi_event(client, token).status_code == 200
        assert emulator.bearer_prefixed == 0

        response = send_bi_event(client, f"Bearer {token}")

        assert response.status_code == 200
        assert emulator.bearer_prefixed == 1
        assert emulator.bi_events == [(INSTANCE, "APP_FINISHED_CONFIGURATION")] * 2

    def test_missing_authorization_is_401(self, client: httpx2.Client) -> None:
        response = client.post("/apps/v1/bi-event", json={"eventName": "x"})

        assert_wix_error(response, 401)

    def test_unknown_token_is_401(self, client: httpx2.Client) -> None:
        assert_wix_error(send_bi_event(client, "OAUTH2.made-up"), 401)

    def test_token_is_valid_until_its_lifetime_ends(
        self, clock: FakeClock, client: httpx2.Client
    ) -> None:
        token = get_token(client)

        clock.advance(LIFETIME - 1)
        assert send_bi_event(client, token).status_code == 200
        clock.advance(1)
        assert_wix_error(send_bi_event(client, token), 401)
        assert_wix_error(client.get("/apps/v1/instance", headers={"Authorization": token}), 401)

    def test_revoked_token_is_401_while_others_stay_valid(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        revoked, kept = get_token(client), get_token(client)

        emulator.revoke(revoked)

        assert_wix_error(send_bi_event(client, revoked), 401)
        assert send_bi_event(client, kept).status_code == 200

    def test_revoke_instance_revokes_its_tokens_but_keeps_it_installed(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.install("inst-2")
        old, other = get_token(client), get_token(client, "inst-2")

        emulator.revoke_instance(INSTANCE)

        assert_wix_error(send_bi_event(client, old), 401)
        assert send_bi_event(client, other).status_code == 200
        assert send_bi_event(client, get_token(client)).status_code == 200

    def test_uninstall_revokes_tokens(self, emulator: WixEmulator, client: httpx2.Client) -> None:
        token = get_token(client)

        emulator.uninstall(INSTANCE)
        emulator.install(INSTANCE)

        assert_wix_error(send_bi_event(client, token), 401)

    def test_bi_event_of_any_name_is_accepted_and_recorded(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        token = get_token(client)

        responses = [send_bi_event(client, token, name) for name in ("APP_UPGRADED", "NEW_ONE")]

        assert [r.status_code for r in responses] == [200, 200]
        assert emulator.bi_events == [(INSTANCE, "APP_UPGRADED"), (INSTANCE, "NEW_ONE")]

    @pytest.mark.parametrize(
        ("content", "kind"),
        [
            (b"{}", "validationError"),
            (b'{"eventName": ""}', "validationError"),
            (b'{"eventName": 7}', "validationError"),
            (b"[]", "validationError"),
            (b"{broken", "applicationError"),
        ],
        ids=["no-event", "empty-event", "number-event", "array", "malformed"],
    )
    def test_bi_event_without_an_event_name_is_400(
        self, emulator: WixEmulator, client: httpx2.Client, content: bytes, kind: str
    ) -> None:
        response = client.post(
            "/apps/v1/bi-event",
            content=content,
            headers={"Authorization": get_token(client), "Content-Type": "application/json"},
        )

        assert response.status_code == 400
        assert isinstance(response.json()["message"], str)
        assert set(response.json()["details"]) == {kind}
        assert emulator.bi_events == []

    def test_instance_endpoint_describes_the_tokens_installation(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.install(
            "inst-2", app_name="Bookings", site_id="site-42", site_display_name="Bob's Boats"
        )

        response = client.get(
            "/apps/v1/instance", headers={"Authorization": get_token(client, "inst-2")}
        )

        assert response.status_code == 200
        assert response.json() == {
            "instance": {
                "instanceId": "inst-2",
                "appName": "Bookings",
                "appVersion": "latest",
                "isFree": True,
                "permissions": ["WIX_DEVELOPERS.MANAGE_APP_INSTANCE"],
                "availablePlans": [],
                "copiedFromTemplate": False,
                "freeTrialAvailable": False,
            },
            "site": {
                "siteId": "site-42",
                "siteDisplayName": "Bob's Boats",
                "locale": "en",
                "paymentCurrency": "USD",
                "multilingual": {"isMultiLingual": False, "supportedLanguages": []},
                "installedWixApps": [],
            },
        }

    def test_default_site_id_is_stable_per_instance(self, client: httpx2.Client) -> None:
        token = get_token(client)

        def site_id() -> str:
            response = client.get("/apps/v1/instance", headers={"Authorization": token})
            value = response.json()["site"]["siteId"]
            assert isinstance(value, str)
            return value

        assert site_id() == site_id() != ""

    def test_instance_endpoint_requires_a_token(self, client: httpx2.Client) -> None:
        assert_wix_error(client.get("/apps/v1/instance"), 401)


class TestRouting:
    def test_unknown_path_is_404_in_wix_shape(self, client: httpx2.Client) -> None:
        assert_wix_error(client.get("/oauth/nowhere"), 404, "NOT_FOUND")

    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [
            ("GET", "/oauth2/token", "POST"),
            ("PUT", "/apps/v1/bi-event", "POST"),
            ("POST", "/apps/v1/instance", "GET"),
        ],
    )
    def test_wrong_method_is_405_naming_the_allowed_one(
        self, client: httpx2.Client, method: str, path: str, allowed: str
    ) -> None:
        response = client.request(method, path)

        assert_wix_error(response, 405, "METHOD_NOT_ALLOWED")
        assert response.headers["allow"] == allowed

    def test_query_string_does_not_change_routing(self, client: httpx2.Client) -> None:
        response = client.post("/oauth2/token?trace=1", json=token_body())

        assert response.status_code == 200

    def test_one_keep_alive_connection_serves_successive_answers(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.garbage_next()
        responses = [
            request_token(client),
            client.get("/nowhere"),
            client.get("/oauth2/token"),
            request_token(client, client_secret="wrong"),
            request_token(client),
        ]

        # Each answer is framed correctly, or the next one on the connection would break.
        assert [r.status_code for r in responses] == [200, 404, 405, 401, 200]
        local_ports = {
            r.extensions["network_stream"].get_extra_info("client_addr") for r in responses
        }
        assert len(local_ports) == 1

    def test_chunked_request_body_is_read(self, client: httpx2.Client) -> None:
        payload = httpx2.Request("POST", "/", json=token_body()).content

        response = client.post(
            "/oauth2/token",
            content=iter([payload[:10], payload[10:]]),
            headers={"Content-Type": "application/json"},
        )

        assert response.status_code == 200


class TestFaultInjection:
    def test_fail_next_answers_wix_error_once_then_normal(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.fail_next(503)

        assert_wix_error(request_token(client), 503, "SERVICE_UNAVAILABLE")
        assert request_token(client).status_code == 200

    def test_fail_next_times_repeats_the_fault(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.fail_next(500, times=2)

        statuses = [request_token(client).status_code for _ in range(3)]

        assert statuses == [500, 500, 200]

    def test_fail_next_sends_custom_body_and_headers(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.fail_next(502, body={"oops": True}, headers={"X-Upstream": "gone"})
        emulator.fail_next(400, body="plain words", headers={"Content-Type": "text/x-words"})
        emulator.fail_next(200, body=b'{"access_token": 1}')

        mapping, text, raw = request_token(client), request_token(client), request_token(client)

        assert (mapping.status_code, mapping.json()) == (502, {"oops": True})
        assert mapping.headers["x-upstream"] == "gone"
        assert (text.status_code, text.text) == (400, "plain words")
        assert text.headers["content-type"] == "text/x-words"
        assert (raw.status_code, raw.json()) == (200, {"access_token": 1})

    def test_garbage_next_answers_non_json(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.garbage_next(status=502, body=b"<h1>Bad gateway</h1>")

        response = request_token(client)

        assert (response.status_code, response.content) == (502, b"<h1>Bad gateway</h1>")
        with pytest.raises(ValueError, match="Expecting value"):
            response.json()

    def test_rate_limit_next_sends_429_with_retry_after_in_whole_seconds_rounded_up(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.rate_limit_next(3)
        emulator.rate_limit_next(0.5)
        emulator.rate_limit_next(None)

        whole, fraction, absent = (request_token(client) for _ in range(3))

        assert_wix_error(whole, 429)
        assert whole.headers["retry-after"] == "3"
        assert fraction.headers["retry-after"] == "1"
        assert_wix_error(absent, 429)
        assert "retry-after" not in absent.headers

    def test_hang_next_outlasts_client_timeout_then_service_resumes(
        self, emulator: WixEmulator
    ) -> None:
        emulator.hang_next(60)

        with httpx2.Client(base_url=emulator.url, timeout=0.2) as impatient:
            with pytest.raises(httpx2.ReadTimeout):
                request_token(impatient)
            assert request_token(impatient).status_code == 200
        # Teardown stops the emulator while the hung request still waits: stop() wakes it.

    def test_hang_next_answers_normally_once_it_has_waited(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.hang_next(0.01)

        assert request_token(client).status_code == 200

    def test_faults_of_every_kind_are_consumed_in_order(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.fail_next(500)
        emulator.hang_next(0)
        emulator.garbage_next()
        emulator.rate_limit_next()

        responses = [request_token(client) for _ in range(5)]

        assert [r.status_code for r in responses] == [500, 200, 200, 429, 200]
        assert responses[1].json()["token_type"] == "Bearer"
        assert responses[2].content == b"<html>oops</html>"
        assert responses[4].json()["token_type"] == "Bearer"

    def test_faults_apply_only_to_their_endpoint(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.fail_next(500, endpoint="apps/v1/bi-event")

        token = get_token(client)
        assert_wix_error(send_bi_event(client, token), 500)
        assert send_bi_event(client, token).status_code == 200
        assert emulator.bi_events == [(INSTANCE, "APP_FINISHED_CONFIGURATION")]

    def test_clear_faults_drops_queued_faults(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.fail_next(500, times=3)

        emulator.clear_faults()

        assert request_token(client).status_code == 200

    @pytest.mark.parametrize(
        "inject",
        [
            lambda e: e.fail_next(500, endpoint="oauth/nowhere"),
            lambda e: e.fail_next(500, times=0),
            lambda e: e.fail_next(99),
            lambda e: e.rate_limit_next(-1),
            lambda e: e.hang_next(-1),
            lambda e: e.garbage_next(endpoint="/oauth2/token"),
        ],
        ids=[
            "unknown-endpoint",
            "zero-times",
            "bad-status",
            "negative-retry",
            "negative-hang",
            "leading-slash",
        ],
    )
    def test_invalid_fault_is_refused_when_queued(
        self, emulator: WixEmulator, inject: Callable[[WixEmulator], None]
    ) -> None:
        with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
            inject(emulator)


class TestObservation:
    def test_calls_count_every_request_including_failed_and_injected(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.fail_next(500)
        request_token(client)
        request_token(client, client_secret="wrong")
        token = get_token(client)
        send_bi_event(client, f"Bearer {token}")
        client.get("/apps/v1/instance", headers={"Authorization": token})
        client.get("/apps/v1/instance", headers={"Authorization": token})

        assert emulator.calls == {"oauth2/token": 3, "apps/v1/bi-event": 1, "apps/v1/instance": 2}
        assert emulator.token_requests == 3

    def test_calls_is_a_snapshot(self, emulator: WixEmulator, client: httpx2.Client) -> None:
        snapshot = emulator.calls
        request_token(client)

        assert snapshot["oauth2/token"] == 0
        assert emulator.calls["oauth2/token"] == 1

    def test_reset_counters_forgets_calls_peak_and_events_but_not_tokens(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        token = get_token(client)
        send_bi_event(client, token)

        emulator.reset_counters()

        assert emulator.calls == {}
        assert emulator.token_requests == 0
        assert emulator.peak_concurrency == 0
        assert emulator.bi_events == []
        assert emulator.issued_tokens_for(INSTANCE) == [token]
        assert send_bi_event(client, token).status_code == 200

    def test_paused_requests_are_all_in_flight_at_once(self, emulator: WixEmulator) -> None:
        emulator.pause()
        outcome: list[list[httpx2.Response]] = []

        def ten_clients() -> None:
            outcome.append(run_concurrently(10, lambda: token_from_new_client(emulator)))

        runner = threading.Thread(target=ten_clients)
        runner.start()
        assert emulator.wait_for_in_flight(10)
        emulator.resume()
        runner.join()

        assert [r.status_code for r in outcome[0]] == [200] * 10
        assert emulator.peak_concurrency == 10
        assert emulator.in_flight == 0

    def test_concurrent_requests_under_latency_overlap(self, emulator: WixEmulator) -> None:
        emulator.latency = 0.3

        responses = run_concurrently(10, lambda: token_from_new_client(emulator))

        assert [r.status_code for r in responses] == [200] * 10
        assert 1 < emulator.peak_concurrency <= 10

    def test_fifty_concurrent_clients_are_all_served(self, emulator: WixEmulator) -> None:
        responses = run_concurrently(50, lambda: token_from_new_client(emulator))

        assert [r.status_code for r in responses] == [200] * 50
        assert len({r.json()["access_token"] for r in responses}) == 50
        assert emulator.token_requests == 50
        assert len(emulator.issued_tokens_for(INSTANCE)) == 50

    def test_secrets_and_tokens_stay_out_of_logs_and_repr(
        self, emulator: WixEmulator, client: httpx2.Client, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="tokenbroker.emulator")

        token = get_token(client)
        send_bi_event(client, token)
        request_token(client, client_secret="wrong-secret-also-private")

        assert "POST /oauth2/token" in caplog.text
        for secret in (APP_SECRET, token, "wrong-secret-also-private"):
            assert secret not in caplog.text
            assert secret not in repr(emulator)


class TestLifecycle:
    def test_url_before_start_is_an_error(self) -> None:
        with pytest.raises(RuntimeError, match="not running"):
            _ = WixEmulator().url

    def test_start_returns_loopback_url_and_stop_is_idempotent(self) -> None:
        emu = WixEmulator()
        url = emu.start()

        assert url == emu.url
        assert url.startswith("http://127.0.0.1:")
        emu.stop()
        emu.stop()
        with pytest.raises(RuntimeError):
            _ = emu.url

    def test_starting_twice_is_an_error(self, emulator: WixEmulator) -> None:
        with pytest.raises(RuntimeError, match="already running"):
            emulator.start()

    def test_stop_closes_idle_keep_alive_connections(self) -> None:
        emu = WixEmulator()
        emu.install(INSTANCE)
        emu.start()
        client = httpx2.Client(base_url=emu.url, timeout=10)
        response = client.post(
            "/oauth2/token",
            json=token_body(client_id="demo-app-id", client_secret="demo-app-secret"),
        )
        assert response.status_code == 200

        # The client still holds its pooled connection open; stop() must not wait on it.
        emu.stop()

        with pytest.raises(httpx2.TransportError):
            client.post("/oauth2/token", json=token_body())
        client.close()

    def test_stop_releases_paused_requests(self) -> None:
        emu = WixEmulator()
        emu.start()
        emu.pause()
        errors: list[BaseException] = []

        def held_request() -> None:
            try:
                httpx2.post(f"{emu.url}/oauth2/token", json={}, timeout=30)
            except httpx2.TransportError as exc:
                errors.append(exc)

        thread = threading.Thread(target=held_request)
        thread.start()
        assert emu.wait_for_in_flight(1)

        emu.stop()
        thread.join()

        assert len(errors) == 1
        assert emu.in_flight == 0

    def test_restart_keeps_installations_and_tokens(self) -> None:
        emu = WixEmulator(APP_ID, APP_SECRET)
        emu.install(INSTANCE)
        with emu, httpx2.Client(base_url=emu.url) as c:
            token = get_token(c)
        with emu, httpx2.Client(base_url=emu.url) as c:
            assert send_bi_event(c, token).status_code == 200

    def test_serve_forever_returns_when_stopped_from_another_thread(self) -> None:
        emu = WixEmulator()
        emu.start()
        server = threading.Thread(target=emu.serve_forever)
        server.start()

        emu.stop()
        server.join()

        assert not emu.running

    def test_negative_settings_are_refused(self) -> None:
        with pytest.raises(ValueError, match="latency"):
            WixEmulator(latency=-1)
        emu = WixEmulator()
        with pytest.raises(ValueError, match="token_lifetime"):
            emu.token_lifetime = -5


class TestPytestPlugin:
    def test_fixture_serves_test_app_with_inst_1_installed(self, wix_emulator: WixEmulator) -> None:
        with httpx2.Client(base_url=wix_emulator.url) as c:
            response = request_token(
                c, client_id="test-app-id", client_secret="test-app-secret", instance_id="inst-1"
            )

        assert response.status_code == 200
        assert wix_emulator.installed == frozenset({"inst-1"})
