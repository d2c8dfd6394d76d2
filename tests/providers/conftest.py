"""What the oauth2 provider's tests share: a scripted transport, a provider built on
it, and the OAuth 2.0 server on loopback."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx2
import pytest

from tokenbroker import ManualClock, ProviderConfig, Secret, TokenKey
from tokenbroker.core.retry import RetryBudget
from tokenbroker.providers import OAuth2Provider
from tokenbroker.testing.oauth2_server import OAuth2Server

APP_ID = "oauth-app"
CLIENT_ID = "client-1"
SECRET = "s3cr3t:value+with/odd&chars"
TOKEN_URL = "https://auth.example.com/oauth/token"
KEY = TokenKey("oauth2", APP_ID, "tenant-1")
T0 = 1_800_000_000.0
OK = {"access_token": "tok.abc-123", "token_type": "Bearer", "expires_in": 600}


class Script:
    """Answers requests from a list, in order (the last one repeats); records them."""

    def __init__(self, *answers: httpx2.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def config(
    options: Mapping[str, Any] | None = None,
    *,
    transport: Any = None,
    app_secret: str = "",
    clock: Any = None,
) -> ProviderConfig:
    return ProviderConfig(
        app_id=APP_ID,
        app_secret=Secret(app_secret),
        api_url="https://unused.example",
        clock=clock or ManualClock(start=T0),
        transport=transport,
        options={"token_url": TOKEN_URL, "client_id": CLIENT_ID, "client_secret": SECRET}
        if options is None
        else options,
    )


def make_provider(
    script: Script, *, max_attempts: int = 3, clock: Any = None, **options: Any
) -> OAuth2Provider:
    """A provider on ``script`` whose retries do not wait (backoff 0)."""
    merged = {"token_url": TOKEN_URL, "client_id": CLIENT_ID, "client_secret": SECRET, **options}
    return OAuth2Provider(
        config(merged, transport=httpx2.MockTransport(script), clock=clock),
        retry=RetryBudget(max_attempts=max_attempts, backoff_base=0.0),
    )


def oauth_error(status: int, error: str, description: str = "", **headers: str) -> httpx2.Response:
    body = {"error": error, "error_description": description}
    return httpx2.Response(status, json=body, headers=headers)


@pytest.fixture
def oauth2_server() -> Iterator[OAuth2Server]:
    """A running OAuth 2.0 server accepting ``CLIENT_ID``/``SECRET``."""
    with OAuth2Server(CLIENT_ID, SECRET) as server:
        yield server


def server_options(server: OAuth2Server, **more: Any) -> dict[str, Any]:
    """The provider options that point at ``server``."""
    return {"token_url": server.token_url, "client_id": CLIENT_ID, "client_secret": SECRET, **more}
