"""The identity dependency and middleware, through Starlette's TestClient (and FastAPI's)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from tokenbroker import ConfigError, ManualClock, TokenBroker
from tokenbroker.service import (
    IdentityDependency,
    IdentityMiddleware,
    add_identity_errors,
    identity_of,
)
from tokenbroker.testing.emulator import TOKEN_INFO_ENDPOINT, WixEmulator

from ..conftest import INSTANCE
from ..wix.test_identity_kit import API, APP, SECRET, T0, TokenInfoScript, active, claims, signed

USER_TOKEN = "OauthNG.JWS.a-dashboard-users-token"


@pytest.fixture
def script() -> TokenInfoScript:
    return TokenInfoScript({USER_TOKEN: active()})


@pytest.fixture
def broker(script: TokenInfoScript) -> Iterator[TokenBroker]:
    with TokenBroker(
        app_id=APP,
        app_secret=SECRET,
        store="memory://",
        api_url=API,
        clock=ManualClock(start=T0),
        transport=httpx2.MockTransport(script),
        max_attempts=1,
    ) as b:
        yield b


async def whoami(request: Request) -> JSONResponse:
    identity = identity_of(request)
    assert identity is not None
    assert request.state.identity is identity
    return JSONResponse(identity.to_json())


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "identity": identity_of(request) is not None})


async def socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"instance_id": websocket.state.identity.instance_id})
    await websocket.close()


def guarded(broker: TokenBroker, **options: object) -> TestClient:
    app = Starlette(
        routes=[
            Route("/api/me", whoami),
            Route("/healthz", healthz),
            Route("/healthzx", healthz),
            WebSocketRoute("/ws", socket),
        ]
    )
    app.add_middleware(IdentityMiddleware, broker=broker, **options)
    return TestClient(app)


def refused(response: httpx2.Response | object, reason: str, status: int = 401) -> None:
    assert response.status_code == status  # type: ignore[attr-defined]
    error = "unauthorized" if status == 401 else "unavailable"
    assert response.json() == {"error": error, "reason": reason}  # type: ignore[attr-defined]


class TestMiddleware:
    def test_the_credential_in_any_of_its_places(self, broker: TokenBroker) -> None:
        client = guarded(broker)
        instance = signed(claims(siteId="site-9"))
        for response in (
            client.get("/api/me", headers={"Authorization": instance}),
            client.get("/api/me", headers={"Authorization": f"Bearer {instance}"}),
            client.get("/api/me", headers={"Authorization": f"bearer  {instance} "}),
            client.get("/api/me", params={"instance": instance}),
        ):
            assert response.status_code == 200, response.text
            assert response.json()["instance_id"] == INSTANCE
            assert response.json()["source"] == "instance"
        token = client.get("/api/me", headers={"Authorization": f"Bearer {USER_TOKEN}"})
        assert token.json()["source"] == "token"
        assert token.json()["user_id"] == "user-1"

    def test_the_header_wins_over_the_query(self, broker: TokenBroker) -> None:
        response = guarded(broker).get(
            "/api/me",
            headers={"Authorization": USER_TOKEN},
            params={"instance": signed(secret="forged")},
        )
        assert response.json()["source"] == "token"

    @pytest.mark.parametrize(
        ("kwargs", "reason"),
        [
            ({}, "no credential"),
            ({"headers": {"Authorization": "Bearer "}}, "no credential"),
            ({"params": {"instance": signed(secret="forged")}}, "bad signature"),
            ({"params": {"instance": signed(claims(aid="v-1", uid=None))}}, "anonymous caller"),
            ({"headers": {"Authorization": "OauthNG.JWS.unknown"}}, "inactive token"),
            (
                {"headers": [("authorization", USER_TOKEN), ("authorization", "x")]},
                "malformed credential",
            ),
            ({"params": [("instance", signed()), ("instance", signed())]}, "malformed credential"),
        ],
    )
    def test_a_refusal_is_a_401_with_the_reason(
        self, broker: TokenBroker, kwargs: dict[str, object], reason: str
    ) -> None:
        response = guarded(broker).get("/api/me", **kwargs)  # type: ignore[arg-type]
        refused(response, reason)
        assert response.headers["www-authenticate"] == "Bearer"

    def test_the_answer_never_quotes_the_credential(self, broker: TokenBroker) -> None:
        forged = signed(secret="forged")
        response = guarded(broker).get("/api/me", headers={"Authorization": forged})
        assert forged.split(".")[0] not in response.text
        assert forged.split(".")[1] not in response.text

    def test_anonymous_callers_when_allowed(self, broker: TokenBroker) -> None:
        client = guarded(broker, allow_anonymous=True)
        response = client.get("/api/me", params={"instance": signed(claims(aid="v", uid=None))})
        assert response.json()["anonymous"] is True

    def test_exempt_paths_and_only_those(self, broker: TokenBroker) -> None:
        client = guarded(broker, exempt=["/healthz/"])
        assert client.get("/healthz").json() == {"ok": True, "identity": False}
        refused(client.get("/healthzx"), "no credential")
        with pytest.raises(ConfigError):
            guarded(broker, exempt=["healthz"]).get("/healthz")

    def test_cors_preflights_pass_unless_checked(self, broker: TokenBroker) -> None:
        preflight = {"Origin": "https://x.wixsite.com", "Access-Control-Request-Method": "GET"}
        assert guarded(broker).options("/api/me", headers=preflight).status_code == 405  # the app
        checked = guarded(broker, check_preflight=True).options("/api/me", headers=preflight)
        refused(checked, "no credential")

    def test_token_info_down_is_a_503(self, broker: TokenBroker, script: TokenInfoScript) -> None:
        script.queue = [httpx2.Response(503)]
        response = guarded(broker).get("/api/me", headers={"Authorization": USER_TOKEN})
        refused(response, "identity provider unavailable", 503)

    def test_rate_limited_says_when_to_come_back(
        self, broker: TokenBroker, script: TokenInfoScript
    ) -> None:
        script.queue = [httpx2.Response(429, headers={"Retry-After": "30"})]
        response = guarded(broker).get("/api/me", headers={"Authorization": USER_TOKEN})
        refused(response, "identity provider unavailable", 503)
        assert response.headers["retry-after"] == "30"

    def test_a_websocket_needs_an_identity_too(self, broker: TokenBroker) -> None:
        client = guarded(broker)
        with client.websocket_connect("/ws", headers={"Authorization": USER_TOKEN}) as ws:
            assert ws.receive_json() == {"instance_id": INSTANCE}
        with pytest.raises(WebSocketDisconnect) as caught, client.websocket_connect("/ws"):
            pass
        assert caught.value.code == 1008
        assert caught.value.reason == "no credential"


class TestDependencyInStarlette:
    def app(self, broker: TokenBroker, *, handlers: bool = True) -> TestClient:
        require = IdentityDependency(lambda: broker)  # a broker made at start-up works too

        async def settings(request: Request) -> JSONResponse:
            identity = await require(request)
            return JSONResponse({"instance_id": identity.instance_id})

        app = Starlette(routes=[Route("/settings", settings)])
        if handlers:
            add_identity_errors(app)
        return TestClient(app)

    def test_it_gives_the_identity(self, broker: TokenBroker) -> None:
        response = self.app(broker).get("/settings", params={"instance": signed()})
        assert response.json() == {"instance_id": INSTANCE}

    def test_a_refusal_in_the_json_shape(self, broker: TokenBroker) -> None:
        refused(self.app(broker).get("/settings"), "no credential")

    def test_without_the_handler_starlettes_own_answer(self, broker: TokenBroker) -> None:
        response = self.app(broker, handlers=False).get("/settings")
        assert (response.status_code, response.text) == (401, "no credential")


class TestFastAPI:
    @pytest.fixture
    def fastapi(self) -> object:
        return pytest.importorskip("fastapi")

    def test_depends(self, fastapi: object, broker: TokenBroker, script: TokenInfoScript) -> None:
        from fastapi import Depends, FastAPI

        from tokenbroker.wix.identity import Identity

        require = IdentityDependency(broker)
        app = FastAPI()
        add_identity_errors(app)

        @app.get("/api/settings")
        async def settings(identity: Identity = Depends(require)) -> dict[str, object]:  # noqa: B008
            return {"instance_id": identity.instance_id, "user_id": identity.user_id}

        client = TestClient(app)
        ok = client.get("/api/settings", headers={"Authorization": USER_TOKEN})
        assert ok.json() == {"instance_id": INSTANCE, "user_id": "user-1"}
        refused(client.get("/api/settings"), "no credential")
        refused(
            client.get("/api/settings", params={"instance": signed(secret="x")}), "bad signature"
        )
        script.queue = [httpx2.Response(500)]
        refused(
            client.get("/api/settings", headers={"Authorization": "OauthNG.JWS.new"}),
            "identity provider unavailable",
            503,
        )

    def test_fastapis_own_shape_without_the_handler(
        self, fastapi: object, broker: TokenBroker
    ) -> None:
        from fastapi import Depends, FastAPI

        from tokenbroker.wix.identity import Identity

        app = FastAPI()

        @app.get("/x")
        async def x(identity: Identity = Depends(IdentityDependency(broker))) -> str:  # noqa: B008
            return identity.instance_id

        response = TestClient(app).get("/x")
        assert (response.status_code, response.json()) == (401, {"detail": "no credential"})

    def test_the_dependency_reuses_the_middlewares_identity(
        self, fastapi: object, broker: TokenBroker, script: TokenInfoScript
    ) -> None:
        from fastapi import Depends, FastAPI

        from tokenbroker.wix.identity import Identity

        app = FastAPI()
        app.add_middleware(IdentityMiddleware, broker=broker, allow_anonymous=True)
        add_identity_errors(app)
        strict = IdentityDependency(broker)

        @app.get("/x")
        async def x(identity: Identity = Depends(strict)) -> str:  # noqa: B008
            return identity.instance_id

        broker.wix.configure_identity(cache_max_age=0)
        client = TestClient(app)
        assert client.get("/x", headers={"Authorization": USER_TOKEN}).json() == INSTANCE
        assert len(script.requests) == 1  # asked once, by the middleware
        anonymous = client.get("/x", params={"instance": signed(claims(aid="v", uid=None))})
        refused(anonymous, "anonymous caller")


class TestAgainstTheEmulator:
    def test_a_dashboard_token_and_a_revoked_one(self, wix_emulator: WixEmulator) -> None:
        with TokenBroker(
            app_id=wix_emulator.app_id,
            app_secret="test-app-secret",
            store="memory://",
            api_url=wix_emulator.url,
        ) as real:
            real.wix.configure_identity(cache_max_age=0)
            client = guarded(real)
            user = wix_emulator.issue_token(INSTANCE)
            assert client.get("/api/me", headers={"Authorization": user}).status_code == 200
            wix_emulator.revoke(user)
            refused(client.get("/api/me", headers={"Authorization": user}), "inactive token")
            assert wix_emulator.calls[TOKEN_INFO_ENDPOINT] == 2
            instance = wix_emulator.sign_instance(INSTANCE)
            assert client.get("/api/me", params={"instance": instance}).status_code == 200
