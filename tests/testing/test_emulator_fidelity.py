"""The emulator answers as Wix documents and as Wix's SDK reads the answers.

Error shapes (Wix's and RFC 6749's), the status for an instance that is not installed,
a request ID on every answer, a ``Bearer `` prefix accepted but counted, any BI event
name, Get App Instance's documented fields, and the paths the SDK's generated modules
call on a host of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import httpx2
import pytest

from tokenbroker.testing.emulator import REQUEST_ID_HEADER, WixEmulator

from .raw_http import exchange, request

APP_ID = "fid-app-id"
APP_SECRET = "fid-app-secret"
INSTANCE = "inst-fid"
NOT_INSTALLED_TEXT = "App is not installed on this instance"


@pytest.fixture
def emulator() -> Iterator[WixEmulator]:
    emu = WixEmulator(APP_ID, APP_SECRET)
    emu.install(INSTANCE)
    with emu:
        yield emu


@pytest.fixture
def client(emulator: WixEmulator) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=emulator.url, timeout=10) as c:
        yield c


def request_token(client: httpx2.Client, **overrides: Any) -> httpx2.Response:
    body = {
        "grant_type": "client_credentials",
        "client_id": APP_ID,
        "client_secret": APP_SECRET,
        "instance_id": INSTANCE,
        **overrides,
    }
    return client.post("/oauth2/token", json=body)


def get_token(client: httpx2.Client) -> str:
    response = request_token(client)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def ietf(response: httpx2.Response, status: int, error: str) -> str:
    """Assert RFC 6749 5.2's shape, exactly; return the description."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error
    description = body["error_description"]
    assert isinstance(description, str)
    assert description
    return description


def application_error(response: httpx2.Response, status: int) -> dict[str, Any]:
    """Assert Wix's application-error shape, exactly; return details.applicationError."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"message", "details"}
    assert isinstance(body["message"], str)
    assert set(body["details"]) == {"applicationError"}
    error: dict[str, Any] = body["details"]["applicationError"]
    assert set(error) == {"code", "description", "data"}
    assert error["data"] == {}
    return error


class TestWixErrorShape:
    def test_is_the_default_and_carries_code_description_and_data(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        assert emulator.error_shape == "wix"

        error = application_error(request_token(client, client_secret="wrong"), 401)

        assert error["code"] == "INVALID_CLIENT"

    def test_a_field_missing_from_a_bi_event_is_a_validation_error(
        self, client: httpx2.Client
    ) -> None:
        response = client.post(
            "/apps/v1/bi-event", json={}, headers={"Authorization": get_token(client)}
        )

        assert response.status_code == 400
        violations = response.json()["details"]["validationError"]["fieldViolations"]
        assert [v["field"] for v in violations] == ["eventName"]
        assert isinstance(violations[0]["description"], str)
        assert isinstance(violations[0]["violatedRule"], str)


class TestIetfErrorShape:
    @pytest.fixture(autouse=True)
    def ietf_shape(self, emulator: WixEmulator) -> None:
        emulator.error_shape = "ietf"

    def test_wrong_credentials_are_401_invalid_client(self, client: httpx2.Client) -> None:
        ietf(request_token(client, client_secret="wrong"), 401, "invalid_client")
        ietf(request_token(client, client_id="other-app"), 401, "invalid_client")

    @pytest.mark.parametrize(
        ("content", "content_type"),
        [
            (b"{broken", "application/json"),
            (b"[]", "application/json"),
            (b'{"grant_type": "client_credentials"}', "application/json"),
            (b"grant_type=client_credentials", "application/x-www-form-urlencoded"),
        ],
        ids=["not-json", "array", "missing-fields", "form-encoded"],
    )
    def test_malformed_token_requests_are_400_invalid_request(
        self, client: httpx2.Client, content: bytes, content_type: str
    ) -> None:
        response = client.post(
            "/oauth2/token", content=content, headers={"Content-Type": content_type}
        )

        ietf(response, 400, "invalid_request")

    def test_another_grant_type_is_400_unsupported_grant_type(self, client: httpx2.Client) -> None:
        ietf(request_token(client, grant_type="refresh_token"), 400, "unsupported_grant_type")

    def test_an_instance_not_installed_is_invalid_grant_saying_so(
        self, client: httpx2.Client
    ) -> None:
        description = ietf(request_token(client, instance_id="nowhere"), 400, "invalid_grant")

        assert NOT_INSTALLED_TEXT in description

    def test_a_bad_access_token_is_401_invalid_token(self, client: httpx2.Client) -> None:
        ietf(
            client.get("/apps/v1/instance", headers={"Authorization": "nope"}), 401, "invalid_token"
        )
        ietf(client.get("/apps/v1/instance"), 401, "invalid_token")

    def test_a_bi_event_without_a_name_is_400_invalid_request(self, client: httpx2.Client) -> None:
        response = client.post(
            "/apps/v1/bi-event", json={}, headers={"Authorization": get_token(client)}
        )

        ietf(response, 400, "invalid_request")

    def test_routing_errors_use_it_too(self, client: httpx2.Client) -> None:
        ietf(client.get("/nowhere"), 404, "not_found")
        response = client.get("/oauth2/token")
        ietf(response, 405, "method_not_allowed")
        assert response.headers["allow"] == "POST"

    @pytest.mark.parametrize(
        ("status", "error"),
        [(500, "server_error"), (503, "temporarily_unavailable"), (502, "bad_gateway")],
    )
    def test_injected_faults_use_it_with_rfc_codes_where_there_are_some(
        self, emulator: WixEmulator, client: httpx2.Client, status: int, error: str
    ) -> None:
        emulator.fail_next(status)

        ietf(request_token(client), status, error)

    def test_a_rate_limit_keeps_its_retry_after(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.rate_limit_next(2)

        response = request_token(client)

        ietf(response, 429, "too_many_requests")
        assert response.headers["retry-after"] == "2"

    def test_a_request_refused_as_malformed_uses_it(self, emulator: WixEmulator) -> None:
        answer = exchange(emulator, request(fields=[b"Host: a", b"Host: b"]))

        assert answer.status == 400
        assert set(answer.json()) == {"error", "error_description"}
        assert answer.json()["error"] == "invalid_request"

    def test_a_custom_fault_body_is_sent_as_given(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.fail_next(502, body={"upstream": "down"})

        assert request_token(client).json() == {"upstream": "down"}

    def test_success_answers_are_unchanged(self, client: httpx2.Client) -> None:
        assert set(request_token(client).json()) == {"access_token", "token_type", "expires_in"}


class TestErrorShapeKnob:
    def test_a_fault_queued_earlier_is_worded_in_the_shape_set_when_it_is_sent(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.fail_next(503, times=2)

        wix = request_token(client)
        emulator.error_shape = "ietf"
        rfc = request_token(client)

        assert application_error(wix, 503)["code"] == "SERVICE_UNAVAILABLE"
        ietf(rfc, 503, "temporarily_unavailable")

    def test_it_is_taken_by_the_constructor(self) -> None:
        emu = WixEmulator(APP_ID, APP_SECRET, error_shape="ietf")
        with emu, httpx2.Client(base_url=emu.url) as c:
            ietf(request_token(c), 400, "invalid_grant")

    @pytest.mark.parametrize(
        ("value", "error"),
        [
            ("IETF", ValueError),
            ("rfc", ValueError),
            ("", ValueError),
            (None, TypeError),
            (1, TypeError),
        ],
    )
    def test_a_bad_value_is_refused_where_it_is_given(
        self, value: object, error: type[Exception]
    ) -> None:
        with pytest.raises(error, match="error_shape"):
            WixEmulator(error_shape=value)  # type: ignore[arg-type]
        emu = WixEmulator()
        with pytest.raises(error, match="error_shape"):
            emu.error_shape = value  # type: ignore[assignment]
        assert emu.error_shape == "wix"


class TestNotInstalledStatus:
    @pytest.mark.parametrize("status", [400, 401, 403, 404])
    @pytest.mark.parametrize("shape", ["wix", "ietf"])
    def test_create_access_token_answers_it_for_an_instance_not_installed(
        self,
        emulator: WixEmulator,
        client: httpx2.Client,
        status: int,
        shape: Literal["wix", "ietf"],
    ) -> None:
        emulator.not_installed_status = status
        emulator.error_shape = shape

        response = request_token(client, instance_id="nowhere")

        if shape == "wix":
            assert application_error(response, status)["code"] == "APP_NOT_INSTALLED"
            assert response.json()["message"] == NOT_INSTALLED_TEXT
        else:
            assert NOT_INSTALLED_TEXT in ietf(response, status, "invalid_grant")

    def test_it_does_not_change_other_answers(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.not_installed_status = 404

        assert request_token(client).status_code == 200
        assert request_token(client, client_secret="x").status_code == 401
        assert request_token(client, grant_type="x").status_code == 400

    def test_it_is_taken_by_the_constructor(self) -> None:
        emu = WixEmulator(APP_ID, APP_SECRET, not_installed_status=403)
        assert emu.not_installed_status == 403
        with emu, httpx2.Client(base_url=emu.url) as c:
            assert request_token(c).status_code == 403

    @pytest.mark.parametrize(
        ("value", "error"),
        [
            (402, ValueError),
            (500, ValueError),
            (200, ValueError),
            ("400", TypeError),
            (True, TypeError),
            (400.0, TypeError),
        ],
    )
    def test_a_bad_value_is_refused_where_it_is_given(
        self, value: object, error: type[Exception]
    ) -> None:
        with pytest.raises(error, match="not_installed_status"):
            WixEmulator(not_installed_status=value)  # type: ignore[arg-type]
        emu = WixEmulator()
        with pytest.raises(error, match="not_installed_status"):
            emu.not_installed_status = value  # type: ignore[assignment]
        assert emu.not_installed_status == 400


class TestRequestIds:
    def test_every_answer_carries_a_unique_one_recorded_in_order(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        assert emulator.last_request_id is None
        emulator.fail_next(500)
        emulator.garbage_next()
        emulator.rate_limit_next(1)
        emulator.hang_next(0)
        emulator.fail_next(502, body="plain")
        token_answers = [request_token(client) for _ in range(6)]
        others = [
            client.get("/apps/v1/instance", headers={"Authorization": "unknown"}),
            client.get("/nowhere"),
            client.put("/apps/v1/bi-event"),
            client.post("/oauth2/token-info", json={"token": "x"}),
            client.post(
                "/oauth2/token", content=b"{", headers={"Content-Type": "application/json"}
            ),
        ]
        responses = token_answers + others

        assert [r.status_code for r in token_answers] == [500, 200, 429, 200, 502, 200]
        ids = [r.headers[REQUEST_ID_HEADER] for r in responses]
        assert all(isinstance(i, str) and i for i in ids)
        assert len(set(ids)) == len(ids)
        assert emulator.request_ids == ids
        assert emulator.last_request_id == ids[-1]

    def test_a_refused_request_and_a_crash_carry_one(self, emulator: WixEmulator) -> None:
        refused = exchange(emulator, request(b"GET / HTTP/2.0"))

        assert refused.status == 505
        assert refused.headers[REQUEST_ID_HEADER] == emulator.last_request_id

        def broken_clock() -> float:
            raise RuntimeError("the clock broke")

        broken = WixEmulator(APP_ID, APP_SECRET, clock=broken_clock)
        broken.install(INSTANCE)
        with broken, httpx2.Client(base_url=broken.url) as c:
            crashed = request_token(c)
        assert crashed.status_code == 500
        assert crashed.headers[REQUEST_ID_HEADER] == broken.last_request_id

    def test_a_fault_may_bring_its_own(self, emulator: WixEmulator, client: httpx2.Client) -> None:
        emulator.fail_next(503, headers={"X-Wix-Request-Id": "chosen-by-the-test"})

        response = request_token(client)

        assert response.headers.get_list(REQUEST_ID_HEADER) == ["chosen-by-the-test"]
        assert emulator.last_request_id == "chosen-by-the-test"

    def test_reset_counters_forgets_them(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        request_token(client)

        emulator.reset_counters()

        assert emulator.request_ids == []
        assert emulator.last_request_id is None

    def test_request_ids_is_a_copy(self, emulator: WixEmulator, client: httpx2.Client) -> None:
        request_token(client)
        snapshot = emulator.request_ids
        request_token(client)

        assert len(snapshot) == 1
        assert len(emulator.request_ids) == 2


class TestBearerPrefix:
    @pytest.mark.parametrize("prefix", ["Bearer ", "bearer ", "BEARER "])
    def test_is_accepted_on_get_app_instance_and_counted(
        self, emulator: WixEmulator, client: httpx2.Client, prefix: str
    ) -> None:
        response = client.get(
            "/apps/v1/instance", headers={"Authorization": prefix + get_token(client)}
        )

        assert response.status_code == 200
        assert response.json()["instance"]["instanceId"] == INSTANCE
        assert emulator.bearer_prefixed == 1

    def test_a_prefix_alone_is_401_and_still_counted(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        # A server strips the trailing space, so the prefix alone arrives as "Bearer".
        response = client.get("/apps/v1/instance", headers={"Authorization": "Bearer"})

        assert response.status_code == 401
        assert emulator.bearer_prefixed == 1

    def test_a_prefixed_unknown_token_is_still_401(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        response = client.get("/apps/v1/instance", headers={"Authorization": "Bearer OAUTH2.no"})

        assert response.status_code == 401

    def test_reset_counters_zeroes_the_count(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        client.get("/apps/v1/instance", headers={"Authorization": "Bearer " + get_token(client)})

        emulator.reset_counters()

        assert emulator.bearer_prefixed == 0


class TestSdkPaths:
    """The paths @wix/app-management's modules resolve for a host they do not know."""

    def test_get_app_instance_is_served_on_the_sdk_path_and_counted_as_the_endpoint(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        token = get_token(client)

        ours = client.get("/apps/v1/instance", headers={"Authorization": token})
        sdk = client.get("/devcenter/app-instance/v1/instance", headers={"Authorization": token})

        assert sdk.status_code == 200
        assert sdk.json() == ours.json()
        assert emulator.calls["apps/v1/instance"] == 2

    def test_send_bi_event_is_served_on_the_sdk_path_and_counted_as_the_endpoint(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        # The SDK sends its JSON without declaring a Content-Type.
        response = client.post(
            "/devcenter/bi-events/v1/bi-event",
            content=b'{"eventName":"APP_DASHBOARD_LOADED"}',
            headers={"Authorization": get_token(client)},
        )

        assert (response.status_code, response.json()) == (200, {})
        assert emulator.bi_events == [(INSTANCE, "APP_DASHBOARD_LOADED")]
        assert emulator.calls["apps/v1/bi-event"] == 1

    def test_faults_of_the_endpoint_apply_on_the_sdk_path(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        token = get_token(client)
        emulator.fail_next(503, endpoint="apps/v1/instance")

        response = client.get(
            "/devcenter/app-instance/v1/instance", headers={"Authorization": token}
        )

        assert response.status_code == 503

    def test_the_sdk_path_takes_only_its_method(self, client: httpx2.Client) -> None:
        response = client.post("/devcenter/app-instance/v1/instance")

        assert (response.status_code, response.headers["allow"]) == (405, "GET")


class TestGetAppInstanceFields:
    def test_a_paid_cloned_published_instance_answers_every_field_given(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        billing = {
            "packageName": "pro-plan",
            "billingCycle": "YEARLY",
            "timeStamp": "2026-01-01T00:00:00.000Z",
            "expirationDate": "2027-01-01T00:00:00.000Z",
            "autoRenewing": True,
            "invoiceId": "inv-1",
            "source": "",
        }
        emulator.install(
            INSTANCE,
            app_name="Bookings",
            app_version="2.4.1",
            billing=billing,
            permissions=["WIX_DEVELOPERS.MANAGE_APP_INSTANCE", "WIX_DEVELOPERS.CREATE_CHECKOUT"],
            available_plans=[{"packageName": "pro-plan", "source": "app"}],
            origin_instance_id="inst-template",
            free_trial_available=True,
            site_id="site-9",
            site_display_name="Bob's Boats",
            locale="he",
            payment_currency="ILS",
            url="https://bob.wixsite.com/boats",
            description="Boats for rent",
            installed_wix_apps=["stores"],
            owner_email="bob@example.com",
        )

        response = client.get("/apps/v1/instance", headers={"Authorization": get_token(client)})

        assert response.json() == {
            "instance": {
                "instanceId": INSTANCE,
                "appName": "Bookings",
                "appVersion": "2.4.1",
                "isFree": False,
                "billing": billing,
                "permissions": [
                    "WIX_DEVELOPERS.MANAGE_APP_INSTANCE",
                    "WIX_DEVELOPERS.CREATE_CHECKOUT",
                ],
                "availablePlans": [{"packageName": "pro-plan", "source": "app"}],
                "originInstanceId": "inst-template",
                "copiedFromTemplate": True,
                "freeTrialAvailable": True,
            },
            "site": {
                "siteId": "site-9",
                "siteDisplayName": "Bob's Boats",
                "locale": "he",
                "paymentCurrency": "ILS",
                "multilingual": {"isMultiLingual": False, "supportedLanguages": []},
                "url": "https://bob.wixsite.com/boats",
                "description": "Boats for rent",
                "installedWixApps": ["stores"],
                "ownerInfo": {"email": "bob@example.com", "emailStatus": "VERIFIED_OPT_IN"},
            },
        }

    def test_a_free_instance_has_no_billing_and_optional_fields_stay_out(
        self, client: httpx2.Client
    ) -> None:
        answer = client.get(
            "/apps/v1/instance", headers={"Authorization": get_token(client)}
        ).json()

        assert answer["instance"]["isFree"] is True
        assert "billing" not in answer["instance"]
        assert "originInstanceId" not in answer["instance"]
        assert {"url", "description", "ownerInfo"}.isdisjoint(answer["site"])

    def test_options_given_are_copied_so_later_changes_do_not_leak_in(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        billing: dict[str, Any] = {"packageName": "pro"}
        permissions = ["A"]
        emulator.install(INSTANCE, billing=billing, permissions=permissions)
        billing["packageName"] = "changed"
        permissions.append("B")

        answer = client.get(
            "/apps/v1/instance", headers={"Authorization": get_token(client)}
        ).json()

        assert answer["instance"]["billing"] == {"packageName": "pro"}
        assert answer["instance"]["permissions"] == ["A"]

    @pytest.mark.parametrize(
        ("option", "error"),
        [
            ({"permissions": "WIX_DEVELOPERS.X"}, TypeError),
            ({"permissions": [""]}, ValueError),
            ({"billing": ["pro"]}, TypeError),
            ({"billing": {"sum": float("nan")}}, TypeError),
            ({"billing": {1: "x"}}, TypeError),
            ({"available_plans": {"packageName": "x"}}, TypeError),
            ({"available_plans": ["x"]}, TypeError),
            ({"free_trial_available": 1}, TypeError),
            ({"locale": ""}, ValueError),
            ({"url": ""}, ValueError),
            ({"owner_email": 5}, TypeError),
            ({"app_version": None}, TypeError),
            ({"installed_wix_apps": "stores"}, TypeError),
        ],
        ids=repr,
    )
    def test_a_bad_option_is_refused_naming_it(
        self, emulator: WixEmulator, option: dict[str, Any], error: type[Exception]
    ) -> None:
        (name,) = option

        with pytest.raises(error, match=name):
            emulator.install("inst-bad", **option)
        assert "inst-bad" not in emulator.installed
