"""The OAuth 2.0 server of the testing kit keeps RFC 6749's rules for a token endpoint."""

from __future__ import annotations

import ast
import base64
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tokenbroker.providers.oauth2 import basic_credentials
from tokenbroker.testing.oauth2_server import OAuth2Server

from .conftest import CLIENT_ID, SECRET

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
GRANT = "grant_type=client_credentials"


def basic(client_id: str = CLIENT_ID, secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": basic_credentials(client_id, secret)}


@pytest.fixture
def client(oauth2_server: OAuth2Server) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=oauth2_server.url) as http:
        yield http


def post(client: httpx2.Client, body: str, **headers: str) -> httpx2.Response:
    return client.post("/oauth/token", content=body, headers={**FORM, **headers})


class TestRfc6749:
    def test_a_granted_request_answers_5_1_with_no_store(self, client: httpx2.Client) -> None:
        answer = post(client, GRANT, **basic())
        assert answer.status_code == 200
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["x-request-id"]
        body = answer.json()
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 3600
        assert body["access_token"].startswith("tok_")

    def test_only_post(self, client: httpx2.Client) -> None:
        answer = client.get("/oauth/token")
        assert (answer.status_code, answer.headers["Allow"]) == (405, "POST")

    def test_another_path_is_404_and_counted(
        self, client: httpx2.Client, oauth2_server: OAuth2Server
    ) -> None:
        assert client.post("/token", content=GRANT, headers=FORM).status_code == 404
        assert oauth2_server.calls["/token"] == 1
        assert oauth2_server.token_requests == 0

    @pytest.mark.parametrize(
        ("body", "headers", "status", "error"),
        [
            (GRANT, {"Content-Type": "application/json"}, 400, "invalid_request"),
            (GRANT + "&grant_type=client_credentials", {}, 400, "invalid_request"),
            ("grant_type=password", {}, 400, "unsupported_grant_type"),
            ("scope=x", {}, 400, "invalid_request"),
            (GRANT, {"Authorization": "Basic !!!"}, 401, "invalid_client"),
            (
                GRANT,
                {"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()},
                401,
                "invalid_client",
            ),
        ],
    )
    def test_malformed_requests(
        self, client: httpx2.Client, body: str, headers: dict[str, str], status: int, error: str
    ) -> None:
        answer = client.post("/oauth/token", content=body, headers={**FORM, **basic(), **headers})
        assert answer.status_code == status
        assert answer.json()["error"] == error

    def test_no_client_authentication_is_401_with_a_challenge(self, client: httpx2.Client) -> None:
        answer = post(client, GRANT)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Basic")
        assert answer.json()["error"] == "invalid_client"

    def test_two_authentication_methods_at_once_are_refused(self, client: httpx2.Client) -> None:
        body = f"{GRANT}&client_id={CLIENT_ID}&client_secret=x"
        answer = post(client, body, **basic())
        assert (answer.status_code, answer.json()["error"]) == (400, "invalid_request")

    def test_a_wrong_secret_in_the_body_is_400_invalid_client(self, client: httpx2.Client) -> None:
        answer = post(client, f"{GRANT}&client_id={CLIENT_ID}&client_secret=wrong")
        assert (answer.status_code, answer.json()["error"]) == (400, "invalid_client")

    def test_a_method_it_does_not_accept_is_refused(self) -> None:
        with OAuth2Server(CLIENT_ID, SECRET, auth_methods=["client_secret_basic"]) as server:
            answer = httpx2.post(
                server.token_url,
                data={
                    "grant_type": "client_credentials",
                    "client_id": CLIENT_ID,
                    "client_secret": SECRET,
                },
            )
        assert answer.json()["error"] == "invalid_client"

    def test_the_per_tenant_mode_needs_the_tenant(self) -> None:
        with OAuth2Server(CLIENT_ID, SECRET, tenant_param="tenant") as server:
            missing = httpx2.post(server.token_url, content=GRANT, headers={**FORM, **basic()})
            granted = httpx2.post(
                server.token_url, content=GRANT + "&tenant=t1", headers={**FORM, **basic()}
            )
            assert missing.json()["error"] == "invalid_request"
            assert server.issued_tokens_for("t1") == [granted.json()["access_token"]]
            assert server.issued_tokens_for("t2") == []

    def test_the_secret_is_masked_in_what_it_records(
        self, client: httpx2.Client, oauth2_server: OAuth2Server
    ) -> None:
        body = urllib.parse.urlencode({"client_id": CLIENT_ID, "client_secret": SECRET})
        post(client, f"{GRANT}&{body}")
        assert oauth2_server.forms[0]["client_secret"] == "***"
        assert SECRET not in repr(oauth2_server)


class TestKnobs:
    def test_faults_answer_in_order_and_are_counted(
        self, client: httpx2.Client, oauth2_server: OAuth2Server
    ) -> None:
        oauth2_server.fail_next(503, times=2)
        oauth2_server.rate_limit_next(retry_after=2.5)
        statuses = [post(client, GRANT, **basic()) for _ in range(4)]
        assert [a.status_code for a in statuses] == [503, 503, 429, 200]
        assert statuses[0].json()["error"] == "server_error"
        assert statuses[2].headers["Retry-After"] == "3"
        assert oauth2_server.token_requests == 4

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"auth_methods": ["private_key_jwt"]},
            {"token_lifetime": 0},
            {"latency": -1},
            {"token_path": "token"},
            {"port": 70000},
            {"tenant_param": ""},
        ],
    )
    def test_bad_knobs_are_refused_where_they_are_given(self, kwargs: dict[str, object]) -> None:
        with pytest.raises((ValueError, TypeError)):
            OAuth2Server(CLIENT_ID, SECRET, **kwargs)  # type: ignore[arg-type]

    def test_bad_faults_are_refused(self, oauth2_server: OAuth2Server) -> None:
        with pytest.raises(ValueError, match="204"):
            oauth2_server.fail_next(204)
        with pytest.raises(ValueError, match="times"):
            oauth2_server.fail_next(500, times=0)
        with pytest.raises(ValueError, match="token_lifetime"):
            oauth2_server.token_lifetime = -5


class TestIndependence:
    def test_it_imports_only_the_standard_library_attrs_and_the_emulators_server(self) -> None:
        import tokenbroker.testing.oauth2_server as package

        allowed = set(sys.stdlib_module_names) | {"attrs", "__future__"}
        foreign = set()
        for path in Path(package.__file__).parent.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif isinstance(node, ast.ImportFrom):
                    # relative: itself (level 1), or the emulator's modules (level 2)
                    if node.level > 2 or (
                        node.level == 2
                        and node.module != "emulator"
                        and not (node.module or "").startswith("emulator.")
                    ):
                        foreign.add(f"{path.name}: {'.' * node.level}{node.module or ''}")
                    continue
                else:
                    continue
                foreign |= {f"{path.name}: {n}" for n in names if n.split(".")[0] not in allowed}
        assert not foreign
