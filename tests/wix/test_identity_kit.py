"""What the identity tests share (no tests here): our own instance signer and a
scripted Token Info."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx2

from tokenbroker import ManualClock, ProviderConfig, Secret
from tokenbroker.wix import RetryBudget, WixProvider
from tokenbroker.wix.identity import Identifier

APP = "app-1"
SECRET = "identity-test-secret-value"
INSTANCE = "inst-1"
T0 = 1_800_000_000.0
API = "https://wix.example"


def b64(data: bytes) -> str:
    """Unpadded base64url, as Wix writes both parts of the ``instance`` parameter."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def iso(timestamp: float) -> str:
    """ISO 8601 UTC with milliseconds, as Wix writes ``signDate``."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def claims(**changes: Any) -> dict[str, Any]:
    """The data of a dashboard ``instance`` for the site owner; ``None`` drops a field."""
    data: dict[str, Any] = {
        "instanceId": INSTANCE,
        "appDefId": APP,
        "signDate": iso(T0),
        "uid": "user-1",
        "permissions": "OWNER",
        "demoMode": False,
        "siteOwnerId": "user-1",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def sign_data(data_part: str, secret: str = SECRET) -> str:
    digest = hmac.new(secret.encode(), data_part.encode("ascii"), hashlib.sha256).digest()
    return b64(digest)


def signed(data: dict[str, Any] | bytes | None = None, *, secret: str = SECRET) -> str:
    """``<signature>.<data>`` over ``data`` (a claims dict, or raw bytes to encode)."""
    if data is None:
        data = claims()
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    part = b64(raw)
    return f"{sign_data(part, secret)}.{part}"


def active(**changes: Any) -> dict[str, Any]:
    """Token Info's answer for a Wix user's token of this app; ``None`` drops a field."""
    body: dict[str, Any] = {
        "active": True,
        "subjectType": "USER",
        "subjectId": "user-1",
        "exp": int(T0) + 3600,
        "iat": int(T0),
        "clientId": APP,
        "accountId": "account-1",
        "siteId": "site-1",
        "instanceId": INSTANCE,
        "vendorProductId": None,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None or k == "vendorProductId"}


Answer = httpx2.Response | Exception | Callable[[], httpx2.Response]


class TokenInfoScript:
    """A Token Info: answers by token (``{"active": false}`` for unknown ones),
    or from a queue of answers first; records what it was sent."""

    def __init__(self, answers: dict[str, dict[str, Any]] | None = None) -> None:
        self.answers = dict(answers or {})
        self.queue: list[Answer] = []
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if self.queue:
            answer = self.queue.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer if isinstance(answer, httpx2.Response) else answer()
        token = json.loads(request.content)["token"]
        return httpx2.Response(200, json=self.answers.get(token, {"active": False}))

    @property
    def tokens(self) -> list[str]:
        return [json.loads(r.content)["token"] for r in self.requests]


@functools.cache
def _shared_ssl() -> ssl.SSLContext:
    return httpx2.create_ssl_context()


def identifier(
    script: TokenInfoScript, clock: ManualClock | None = None, **options: Any
) -> Identifier:
    clock = clock or ManualClock(start=T0)
    config = ProviderConfig(
        app_id=APP,
        app_secret=Secret(SECRET),
        api_url=API,
        clock=clock,
        transport=httpx2.MockTransport(script),
    )
    provider = WixProvider(config, retry=RetryBudget(max_attempts=2, backoff_base=0.0))
    # A TLS context costs tens of milliseconds to build and MockTransport never uses it:
    # one for every identifier of the run keeps these tests fast.
    provider.http._ssl = _shared_ssl()
    return Identifier(app_id=APP, app_secret=SECRET, http=provider.http, clock=clock, **options)
