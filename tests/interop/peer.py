"""Both sides of the interop tests: Wix's SDK in Node, and tokenbroker, on one emulator.

``run_both()`` starts an emulator, runs ``wix_sdk_peer.mjs`` once (one Node process for
everything), then has tokenbroker do the same things, recording the requests it sends
on their way to the emulator. ``ACCEPTED`` and ``REFUSED`` are the webhook bodies both
parsers are given, all signed (or forged) with ``tokenbroker.testing.webhooks``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import attrs
import httpx2
import pytest

from tokenbroker import TokenBroker
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.webhooks import (
    app_installation_event,
    domain_event,
    forge_hs256,
    forge_none,
    make_key_pair,
    sign_claims,
    sign_domain_event,
    sign_webhook,
    webhook_claims,
)
from tokenbroker.wix.webhooks.verify import WebhookVerifier

HERE = Path(__file__).parent
PEER = HERE / "wix_sdk_peer.mjs"
PINNED: dict[str, str] = json.loads((HERE / "package.json").read_text())["dependencies"]
NODE_TIMEOUT = 60.0  # seconds; the whole run takes about one

APP_ID = "5d1f2c7e-8a34-4b6e-9f0a-3c2b1d4e6f78"
# A quote and a backslash JSON must escape, a slash it need not, and a letter beyond
# ASCII that stays UTF-8: the two serialisers have to agree on all of them.
APP_SECRET = 'c0ffee-"secret"\\/é'
INSTANCES = ("7a9e3b1c-2d4f-4e6a-8b0c-1d2e3f4a5b6c", 'inst "two" / ü')
NOT_INSTALLED = "9e8d7c6b-never-installed"
# The second instance is paid, in a free trial: Get App Instance then carries billing,
# whose freeTrialInfo.endDate the SDK turns into a Date (seen in Wix's SDK:
# @wix/auto_sdk_app-management_app-instances, getAppInstance's transformResponse).
PAID: dict[str, Any] = {
    "billing": {
        "packageName": "premium",
        "billingCycle": "MONTHLY",
        "timeStamp": "2026-12-01T07:00:00.000Z",
        "expirationDate": "2027-01-01T07:00:00.000Z",
        "autoRenewing": True,
        "freeTrialInfo": {
            "status": "IN_PROGRESS",
            "period": "DURING_FREE_TRIAL",
            "endDate": "2026-12-15T07:00:00.000Z",
        },
    },
    "available_plans": [{"packageName": "premium"}, {"packageName": "pro"}],
    "url": "https://example.com/site",
    "owner_email": "owner@example.com",
}


# -- the peer: present, or a skip (a failure under CI) ------------------------------------


def peer_unavailable(reason: str, expected: str = "the Wix SDK peer") -> NoReturn:
    """Skip with ``reason``, or fail with it when ``CI`` is ``true``: tests/backends'
    rule for a missing server (``server_unavailable``), applied to ``expected``."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason} (CI=true: {expected} is expected here)", pytrace=False)
    pytest.skip(reason)


def find_node() -> str:
    """Node.js 20+ with the pinned packages installed, or ``peer_unavailable``."""
    node = shutil.which("node")
    if node is None:
        peer_unavailable("Node.js is not installed; the interop tests run Wix's SDK in it")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=NODE_TIMEOUT, check=False
    ).stdout.strip()
    major = re.fullmatch(r"v(\d+)\..*", version)
    if major is None or int(major[1]) < 20:
        peer_unavailable(f"Node.js {version or '(unknown)'} is too old; the SDK peer needs 20+")
    for name, pinned in PINNED.items():
        manifest = HERE / "node_modules" / name / "package.json"
        if not manifest.is_file():
            peer_unavailable(f"{name} is not installed: run `npm ci --prefix tests/interop`")
        installed = json.loads(manifest.read_text())["version"]
        if installed != pinned:
            peer_unavailable(
                f"{name} {installed} is installed but {pinned} is pinned: "
                "run `npm ci --prefix tests/interop`"
            )
    return node


# -- tokenbroker's side: what it sends, recorded on its way to the emulator -------------


@attrs.frozen
class Sent:
    """One request as it left tokenbroker's HTTP client."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-cased names
    body: bytes


class RecordingTransport(httpx2.BaseTransport):
    """httpx2's own transport, to the emulator over loopback, keeping a copy of each
    request: tokenbroker's bytes on the wire, not a reconstruction of them."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self._inner = httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.sent.append(Sent(request.method, request.url.path, headers, body))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


# -- webhook bodies -------------------------------------------------------------------


@attrs.frozen
class Keys:
    private: str
    public: str
    other_private: str


def _claims(**kwargs: Any) -> dict[str, Any]:
    return webhook_claims(instance_id=INSTANCES[0], **kwargs)


def _data_claim_object(k: Keys) -> str:
    """A good envelope, but as a JSON object rather than a JSON string in ``data``."""
    claims = _claims(event_type="AppRemoved", data={"appId": APP_ID})
    return sign_claims(k.private, {**claims, "data": json.loads(claims["data"])})


_CONTACT = {"id": "1a2b3c4d-contact", "info": {"name": {"first": "Ada", "last": "Łovelace"}}}

ACCEPTED: dict[str, Callable[[Keys], str]] = {
    "app-installed": lambda k: sign_webhook(
        k.private,
        event_type="AppInstalled",
        instance_id=INSTANCES[0],
        data={"appId": APP_ID, "originInstanceId": ""},
        identity={"identityType": "WIX_USER", "wixUserId": "0c3f9a8e-user"},
        account_info={"accountId": "acc-9", "siteId": "site-9"},
    ),
    "app-removed-no-identity": lambda k: sign_webhook(
        k.private, event_type="AppRemoved", instance_id=INSTANCES[1], data={"appId": APP_ID}
    ),
    "paid-plan-purchased": lambda k: sign_webhook(
        k.private,
        event_type="PaidPlanPurchased",
        instance_id=INSTANCES[0],
        data={
            "appId": APP_ID,
            "vendorProductId": "premium",
            "cycle": "MONTHLY",
            "operationTimeStamp": "2026-12-02T07:00:00.000Z",
            "couponName": "Ünïcode ✓",
            "prices": [9.5, 0, None, True],
        },
        identity={"identityType": "APP", "appId": APP_ID},
        account_info={"accountId": "acc-9", "parentAccountId": "acc-1", "siteId": "site-9"},
    ),
    "paid-plan-changed-no-exp": lambda k: sign_webhook(
        k.private,
        event_type="PaidPlanChanged",
        instance_id=INSTANCES[0],
        data={"appId": APP_ID},
        exp=None,
    ),
    "domain-created": lambda k: sign_domain_event(
        k.private,
        domain_event("wix.contacts.v4.contact", "created", entity=_CONTACT, entity_id="c-1"),
        instance_id=INSTANCES[0],
        identity={"identityType": "ANONYMOUS_VISITOR", "anonymousVisitorId": "v-1"},
    ),
    "domain-updated": lambda k: sign_domain_event(
        k.private,
        domain_event(
            "wix.contacts.v4.contact",
            "updated",
            entity=_CONTACT,
            modified_fields={"info.name.first": "Ada"},
        ),
        instance_id=INSTANCES[0],
        identity={"identityType": "MEMBER", "memberId": "m-1"},
    ),
    "domain-action": lambda k: sign_domain_event(
        k.private,
        domain_event("wix.contacts.v4.contact", "merged", body={"sourceIds": ["a", "b"]}),
        instance_id=INSTANCES[1],
    ),
    "app-installation-created": lambda k: sign_domain_event(
        k.private,
        app_installation_event("created", app_id=APP_ID, instance_id=INSTANCES[0]),
        instance_id=INSTANCES[0],
        account_info={"accountId": "acc-9"},
    ),
    "app-installation-updated": lambda k: sign_domain_event(
        k.private,
        app_installation_event(
            "updated",
            app_id=APP_ID,
            instance_id=INSTANCES[1],
            status="UNINSTALLED",
            modified_fields={"status": "INSTALLED"},
        ),
        instance_id=INSTANCES[1],
    ),
}
"""Bodies both parsers must accept, with the same result."""

DOMAIN = frozenset(name for name in ACCEPTED if name.startswith(("domain-", "app-installation-")))
"""The standardized ("domain") events among them."""

REFUSED: dict[str, Callable[[Keys], str]] = {
    "data-claim-object": _data_claim_object,
    "other-key": lambda k: sign_webhook(
        k.other_private, event_type="AppRemoved", instance_id=INSTANCES[0]
    ),
    "expired": lambda k: sign_webhook(
        k.private,
        event_type="AppRemoved",
        instance_id=INSTANCES[0],
        iat=time.time() - 7200,
        exp=time.time() - 3600,
    ),
    "alg-none": lambda k: forge_none(_claims(event_type="AppRemoved")),
    "hs256-public-key": lambda k: forge_hs256(k.public, _claims(event_type="AppRemoved")),
}
"""Bodies both parsers must refuse."""


# -- one run of each side -------------------------------------------------------------


@attrs.frozen
class Interop:
    """What the SDK and tokenbroker did against one emulator."""

    emulator: WixEmulator
    sdk: dict[str, Any]
    """The peer's report (see wix_sdk_peer.mjs): results, and every request it made."""
    broker: TokenBroker
    broker_sent: list[Sent]
    broker_app_instances: dict[str, dict[str, Any]]
    verifier: WebhookVerifier
    bodies: dict[str, str]
    user_tokens: dict[str, str]

    def sdk_installation(self, instance: str) -> dict[str, Any]:
        return next(e for e in self.sdk["installations"] if e["instanceId"] == instance)

    def sdk_requests(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.sdk["requests"] if r["path"] == path]

    def broker_requests(self, path: str) -> list[Sent]:
        return [s for s in self.broker_sent if s.path == path]

    def sdk_webhook(self, name: str) -> dict[str, Any]:
        return next(w for w in self.sdk["webhooks"] if w["name"] == name)

    def sdk_elevation(self, name: str) -> dict[str, Any]:
        return next(e for e in self.sdk["elevate"] if e["name"] == name)


def _user_tokens(emulator: WixEmulator) -> dict[str, str]:
    """Tokens Wix would give the app's dashboard and widgets, and ones not to elevate."""
    issue = emulator.issue_token
    return {
        "user": issue(INSTANCES[0], subject_type="USER"),
        "member": issue(INSTANCES[1], subject_type="MEMBER"),
        "visitor": issue(INSTANCES[0], subject_type="VISITOR"),
        "other-app": issue(INSTANCES[0], subject_type="USER", client_id="another-app-id"),
        "unknown": "OAUTH2.never-issued-by-the-emulator",
    }


def _run_peer(node: str, peer_input: Mapping[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [node, str(PEER)],
        input=json.dumps(peer_input),
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        cwd=HERE,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"the SDK peer exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@contextmanager
def run_both() -> Iterator[Interop]:
    """Run the SDK, then tokenbroker, against one emulator kept up while in use."""
    node = find_node()
    private, public = make_key_pair()
    keys = Keys(private, public, make_key_pair("other")[0])
    bodies = {name: make(keys) for name, make in {**ACCEPTED, **REFUSED}.items()}
    with WixEmulator(APP_ID, APP_SECRET) as emulator:
        emulator.install(INSTANCES[0])
        emulator.install(INSTANCES[1], **PAID)
        user_tokens = _user_tokens(emulator)
        sdk = _run_peer(
            node,
            {
                "emulatorUrl": emulator.url,
                "appId": APP_ID,
                "appSecret": APP_SECRET,
                "instanceIds": [*INSTANCES, NOT_INSTALLED],
                "elevate": [{"name": n, "accessToken": t} for n, t in user_tokens.items()],
                "publicKey": public,
                "webhooks": [
                    {"name": n, "body": b, "domain": n in DOMAIN} for n, b in bodies.items()
                ],
            },
        )
        recorder = RecordingTransport()
        with TokenBroker(
            app_id=APP_ID,
            app_secret=APP_SECRET,
            store="memory://",
            api_url=emulator.url,
            transport=recorder,
        ) as broker:
            app_instances = {}
            for instance in INSTANCES:
                broker.token(instance)
                broker.wix.finish_setup(instance)
                app_instances[instance] = broker.wix.app_instance(instance)
            yield Interop(
                emulator=emulator,
                sdk=sdk,
                broker=broker,
                broker_sent=recorder.sent,
                broker_app_instances=app_instances,
                verifier=WebhookVerifier(public, app_id=APP_ID),
                bodies=bodies,
                user_tokens=user_tokens,
            )
