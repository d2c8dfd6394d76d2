"""What ``tokenbroker serve`` logs at its default level: every rejected webhook, with why."""

from __future__ import annotations

import httpx2

from tokenbroker.testing.webhooks import make_key_pair, sign_webhook

from ..conftest import APP_ID, APP_SECRET
from .serving import ServeProcess


def post(served: ServeProcess, body: str | bytes) -> httpx2.Response:
    return httpx2.post(
        served.base + "/webhooks/wix",
        content=body,
        headers={"Content-Type": "text/plain"},
        timeout=10,
    )


class TestRejectedWebhooksAreLogged:
    def test_a_forged_webhook_is_logged_at_info_with_status_and_reason(
        self, served: ServeProcess
    ) -> None:
        forged = sign_webhook(
            make_key_pair("logging-forger")[0],
            event_type="AppInstalled",
            instance_id="inst-forged",
            data={"appId": APP_ID},
        )
        response = post(served, forged)
        assert response.status_code == 401
        reason = response.json()["error"]
        served.wait_for_log(f"INFO:     tokenbroker.service: webhook rejected: 401 {reason}")

    def test_garbage_is_logged_as_a_400(self, served: ServeProcess) -> None:
        response = post(served, "not a jwt at all")
        assert response.status_code == 400
        served.wait_for_log(f"webhook rejected: 400 {response.json()['error']}")

    def test_an_oversized_body_is_logged_as_a_413(self, served: ServeProcess) -> None:
        assert post(served, b"x" * (65 * 1024)).status_code == 413
        served.wait_for_log("webhook rejected: 413 body too large")

    def test_the_log_names_no_body_and_no_secret(self, served: ServeProcess) -> None:
        post(served, "secret-looking-garbage-body")
        served.wait_for_log("webhook rejected: 400")
        assert "secret-looking-garbage-body" not in served.log
        assert APP_SECRET not in served.log
