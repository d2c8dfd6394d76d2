"""Wix's own SDK as a peer for the legacy flow: ``@wix/sdk``'s ``AppStrategy`` and
tokenbroker send the same ``/oauth/access`` bodies, and the SDK takes the emulator's
answers as it takes Wix's.

The SDK runs unmodified in Node (the packages ``npm ci --prefix tests/interop``
installs); only its ``fetch`` is sent to the emulator instead of www.wixapis.com. It
completes an install (``handleOAuthCallback``) and then asks twice for headers
(``getAuthHeaders``, which swaps the refresh token each time). tokenbroker does the
same on the same emulator, through a transport that records its bytes on the wire.
Without Node.js or the packages the tests skip (fail under ``CI=true``), as the
interop tests do.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tokenbroker import TokenBroker
from tokenbroker.core.clock import ManualClock
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.wix.legacy import complete_install

from ..interop.peer import HERE, RecordingTransport, find_node

APP_ID = "5d1f2c7e-8a34-4b6e-9f0a-3c2b1d4e6f78"
# Characters the two JSON serialisers must escape alike (see tests/interop/peer.py).
APP_SECRET = 'c0ffee-"secret"\\/é'
INSTANCE = "7a9e3b1c-2d4f-4e6a-8b0c-1d2e3f4a5b6c"

PEER = r"""
const { AppStrategy } = require("@wix/sdk");
const input = JSON.parse(process.argv[1]);
const target = new URL(input.emulatorUrl);
const requests = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (resource, init = {}) => {
  const url = new URL(typeof resource === "string" ? resource : resource.url);
  if (!(url.hostname === "wixapis.com" || url.hostname.endsWith(".wixapis.com"))) {
    throw new Error(`refused a request for ${url.hostname}`);
  }
  const response = await realFetch(new URL(url.pathname + url.search, target), init);
  requests.push({
    path: url.pathname,
    headers: Object.fromEntries(new Headers(init.headers ?? {}).entries()),
    body: init.body,
    status: response.status,
    answer: await response.clone().text(),
  });
  return response;
};
(async () => {
  const auth = AppStrategy({ appId: input.appId, appSecret: input.appSecret });
  const steps = {};
  steps.callback = await auth.handleOAuthCallback(input.callbackUrl);
  steps.first = (await auth.getAuthHeaders()).headers.Authorization;
  steps.second = (await auth.getAuthHeaders()).headers.Authorization;
  console.log(JSON.stringify({ steps, requests }));
})().catch((error) => console.log(JSON.stringify({ error: String(error), requests })));
"""


def run_sdk(emulator: WixEmulator) -> dict[str, Any]:
    node = find_node()
    code = emulator.authorization_code(INSTANCE)
    callback = f"https://app.example.com/wix/redirect?code={code}&instanceId={INSTANCE}&state=s"
    document = {"emulatorUrl": emulator.url, "appId": APP_ID, "appSecret": APP_SECRET}
    done = subprocess.run(
        [node, "-e", PEER, json.dumps({**document, "callbackUrl": callback})],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in report, report
    report["code"] = code
    return report


def blank(body: bytes | str, *values: str) -> bytes:
    """``body`` as bytes with each of ``values`` (JSON-escaped) replaced by a marker."""
    raw = body.encode() if isinstance(body, str) else body
    for value in values:
        raw = raw.replace(json.dumps(value)[1:-1].encode(), b"<grant>")
    return raw


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Any:
    with WixEmulator(APP_ID, APP_SECRET, clock=clock.time) as emu:
        yield emu


def test_the_sdk_and_tokenbroker_send_the_same_bytes_and_take_the_same_answers(
    emulator: WixEmulator, clock: ManualClock, sqlite_url: str
) -> None:
    sdk = run_sdk(emulator)
    steps, theirs = sdk["steps"], sdk["requests"]
    # The SDK takes the emulator's answers: the instance, the tokens it issued ...
    assert steps["callback"]["instanceId"] == INSTANCE
    issued = emulator.issued_tokens_for(INSTANCE)
    assert {steps["callback"]["accessToken"], steps["first"], steps["second"]} <= set(issued)
    # ... and keeps each answer's refresh token, so the emulator's rotation works for it.
    answers = [json.loads(r["answer"]) for r in theirs]
    sent = [json.loads(r["body"]) for r in theirs]
    assert [r["status"] for r in theirs] == [200, 200, 200]
    assert sent[1]["refresh_token"] == answers[0]["refresh_token"]
    assert sent[2]["refresh_token"] == answers[1]["refresh_token"]

    recorder = RecordingTransport()
    with TokenBroker(
        app_id=APP_ID,
        app_secret=APP_SECRET,
        store=sqlite_url,
        api_url=emulator.url,
        provider="wix-legacy",
        clock=clock,
        transport=recorder,
    ) as broker:
        code = emulator.authorization_code(INSTANCE)
        complete_install(broker, INSTANCE, code)
        clock.advance(290)
        broker.token(INSTANCE)
    ours = [s for s in recorder.sent if s.path == "/oauth/access"]
    assert len(ours) == 2
    # The code exchange and the refresh, byte for byte, but for the one-time values.
    assert blank(ours[0].body, code) == blank(theirs[0]["body"], sdk["code"])
    our_refresh = json.loads(ours[1].body)["refresh_token"]
    assert blank(ours[1].body, our_refresh) == blank(theirs[1]["body"], sent[1]["refresh_token"])
    for mine, sdks in zip(ours, theirs, strict=False):
        assert mine.method == "POST"
        assert mine.headers["content-type"] == sdks["headers"]["content-type"]
