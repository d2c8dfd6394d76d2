"""Wix's own SDK as a test peer: ``@wix/sdk`` and tokenbroker, side by side.

One Node process (``wix_sdk_peer.mjs``) drives the real, unmodified ``@wix/sdk`` and
``@wix/app-management`` (versions pinned in ``package.json``, the rest by
``package-lock.json``) against the Wix emulator: the SDK's ``fetch`` is sent to the
emulator instead of www.wixapis.com, path, method, headers and body kept. tokenbroker
does the same things against the same emulator, and the tests compare what each sent
and what each made of the answers: the Create Access Token body byte for byte, the raw
``Authorization`` header, the request id of a refusal, the BI event, Get App Instance,
elevation through Token Info, and webhook bodies signed (or forged) by
``tokenbroker.testing.webhooks``: what ``webhooks.process`` returns, what a handler is
given, and which bodies are refused.

The packages are installed by ``npm ci --prefix tests/interop``. Without Node.js 20+ or
without them the tests skip with the reason, except under ``CI=true``, where they fail
(as the backend tests do for a missing server): CI installs them, so a missing peer
there is a broken CI, not a reason to pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from tokenbroker.core.errors import InstanceNotInstalled
from tokenbroker.wix.identity import IdentityRejected
from tokenbroker.wix.webhooks.events import AccountInfo, DomainEvent, DomainEventKind
from tokenbroker.wix.webhooks.verify import WebhookRejected

from .peer import (
    ACCEPTED,
    APP_ID,
    DOMAIN,
    INSTANCES,
    NOT_INSTALLED,
    PINNED,
    REFUSED,
    Interop,
    run_both,
)


@pytest.fixture(scope="module")
def interop() -> Iterator[Interop]:
    with run_both() as both:
        yield both


def test_the_peer_is_the_pinned_sdk(interop: Interop) -> None:
    versions = interop.sdk["versions"]
    assert {name: versions[name] for name in PINNED} == PINNED
    # Every request the SDK made went to a Wix host, and so reached the emulator.
    assert interop.sdk["requests"]
    assert {r["host"] for r in interop.sdk["requests"]} == {"www.wixapis.com"}
    assert not [r for r in interop.sdk["requests"] if "refused" in r]


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _first_for(requests: list[Any], instance: str, body: Callable[[Any], str | bytes]) -> Any:
    """The first Create Access Token request for ``instance``."""
    return next(r for r in requests if json.loads(body(r)).get("instance_id") == instance)


def test_create_access_token_body_is_byte_for_byte_the_sdks(interop: Interop) -> None:
    for instance in INSTANCES:
        theirs = _first_for(interop.sdk_requests("/oauth2/token"), instance, lambda r: r["body"])
        sent = _first_for(interop.broker_requests("/oauth2/token"), instance, lambda s: s.body)
        assert theirs["method"] == sent.method == "POST"
        assert theirs["headers"]["content-type"] == sent.headers["content-type"]
        assert theirs["headers"]["content-type"] == "application/json"
        sdk_body = theirs["body"].encode("utf-8")
        ours_object, sdk_object = json.loads(sent.body), json.loads(sdk_body)
        # The same JSON object ...
        assert ours_object == sdk_object
        # ... each body its compact UTF-8 serialisation (no spaces, non-ASCII kept,
        # the same escapes) ...
        assert sent.body == _compact(ours_object)
        assert sdk_body == _compact(sdk_object)
        # ... and the same bytes: the keys in the same order too.
        assert sent.body == sdk_body


def test_the_sdk_takes_emulator_tokens_and_sends_them_raw(interop: Interop) -> None:
    for instance in INSTANCES:
        token = interop.sdk_installation(instance)["token"]["headers"]["Authorization"]
        # The token the emulator issued for the instance, as it issued it ...
        assert token in interop.emulator.issued_tokens_for(instance)
        issued = next(
            json.loads(r["responseBody"])["access_token"]
            for r in interop.sdk_requests("/oauth2/token")
            if json.loads(r["body"]).get("instance_id") == instance
        )
        assert token == issued
        # ... sent raw, with no "Bearer " prefix, on the calls it authorises, which
        # the emulator answered.
        for path in ("/apps/v1/bi-event", "/apps/v1/instance"):
            calls = interop.sdk_requests(path)
            assert [c["status"] for c in calls if c["headers"]["authorization"] == token] == [200]
    # tokenbroker sends its own tokens the same way.
    for sent in interop.broker_requests("/apps/v1/bi-event"):
        assert not sent.headers["authorization"].lower().startswith("bearer ")
        assert any(
            sent.headers["authorization"] in interop.emulator.issued_tokens_for(i)
            for i in INSTANCES
        )
    assert interop.emulator.bearer_prefixed == 0


def test_a_refused_token_request_names_its_request_id_in_both(interop: Interop) -> None:
    call = next(
        r
        for r in interop.sdk_requests("/oauth2/token")
        if json.loads(r["body"]).get("instance_id") == NOT_INSTALLED
    )
    request_id = call["responseHeaders"]["x-wix-request-id"]
    # seen in Wix's SDK (auth/AppStrategy.js): a non-200 is an Error naming the status
    # and the answer's x-wix-request-id.
    assert interop.sdk_installation(NOT_INSTALLED)["token"]["error"] == (
        "Failed to exchange instance ID for access token. Unexpected status code from "
        f"Wix OAuth API: {call['status']}, request id: {request_id}"
    )
    with pytest.raises(InstanceNotInstalled) as refused:
        interop.broker.token(NOT_INSTALLED)
    assert refused.value.status == call["status"] == 400
    assert refused.value.request_id in interop.emulator.request_ids
    assert refused.value.request_id != request_id  # one id per answer
    assert f"(request id {refused.value.request_id})" in str(refused.value)


def test_bi_event_is_what_tokenbroker_sends(interop: Interop) -> None:
    theirs = interop.sdk_requests("/apps/v1/bi-event")
    ours = interop.broker_requests("/apps/v1/bi-event")
    assert len(theirs) == len(ours) == len(INSTANCES)
    for sdk_call, sent in zip(theirs, ours, strict=True):
        assert sdk_call["method"] == sent.method == "POST"
        assert sdk_call["query"] == ""
        assert sdk_call["headers"]["content-type"] == sent.headers["content-type"]
        assert sdk_call["body"].encode("utf-8") == sent.body
        assert json.loads(sent.body) == {"eventName": "APP_FINISHED_CONFIGURATION"}
    assert all("error" not in interop.sdk_installation(i)["biEvent"] for i in INSTANCES)
    events = interop.emulator.bi_events
    for instance in INSTANCES:
        assert events.count((instance, "APP_FINISHED_CONFIGURATION")) == 2  # SDK, tokenbroker


# The SDK renames these keys at any depth of a response (seen in Wix's SDK:
# @wix/sdk-runtime's RESTResponseToSDKResponseRenameMap).
_SDK_RENAMES = {"id": "_id", "createdDate": "_createdDate", "updatedDate": "_updatedDate"}


def _as_the_sdk_renames(value: Any) -> Any:
    if isinstance(value, list):
        return [_as_the_sdk_renames(v) for v in value]
    if isinstance(value, dict):
        return {_SDK_RENAMES.get(k, k): _as_the_sdk_renames(v) for k, v in value.items()}
    return value


def test_get_app_instance_parses_alike(interop: Interop) -> None:
    sdk_calls = interop.sdk_requests("/apps/v1/instance")
    assert sdk_calls
    assert all(r["method"] == "GET" and r["body"] is None for r in sdk_calls)
    assert all(s.method == "GET" for s in interop.broker_requests("/apps/v1/instance"))
    for instance in INSTANCES:
        ours = interop.broker_app_instances[instance]
        theirs = interop.sdk_installation(instance)["appInstance"]["result"]
        assert ours["instance"]["instanceId"] == theirs["instance"]["instanceId"] == instance
        assert theirs == _as_the_sdk_renames(ours)


# -- elevation ------------------------------------------------------------------------


def _came_from_create_access_token(interop: Interop, token: str, instance: str) -> bool:
    """Whether the SDK got ``token`` from Create Access Token for ``instance``."""
    return any(
        json.loads(r["body"]).get("instance_id") == instance
        and json.loads(r["responseBody"]).get("access_token") == token
        for r in interop.sdk_requests("/oauth2/token")
        if r["status"] == 200
    )


def _assert_same_elevation(
    interop: Interop, name: str, instance: str, elevate: Callable[[str], Any]
) -> None:
    credential = interop.user_tokens[name]
    theirs = interop.sdk_elevation(name)
    assert "error" not in theirs, theirs.get("error")
    ours = elevate(credential)
    # Both end with the app's own token for the instance the credential belongs to:
    # the SDK's from Create Access Token (client_credentials, that instance) ...
    sdk_token = theirs["headers"]["Authorization"]
    assert sdk_token != credential
    assert _came_from_create_access_token(interop, sdk_token, instance)
    assert theirs["instanceId"] == instance  # its Get App Instance, with that token
    # ... and tokenbroker's, which Token Info says is the app's, for that instance.
    assert ours.key.instance_id == instance
    assert ours.access_token != credential
    assert ours.access_token in interop.emulator.issued_tokens_for(instance)
    info = interop.broker.wix.token_info(ours.access_token)
    assert (info.subject_type, info.client_id, info.instance_id) == ("APP", APP_ID, instance)
    # Both asked Token Info about the credential in the same bytes (and, the SDK
    # shows, without an Authorization header).
    sdk_asks = [
        r
        for r in interop.sdk_requests("/oauth2/token-info")
        if json.loads(r["body"]) == {"token": credential}
    ]
    our_asks = {
        s.body
        for s in interop.broker_requests("/oauth2/token-info")
        if json.loads(s.body) == {"token": credential}
    }
    assert sdk_asks
    assert "authorization" not in sdk_asks[0]["headers"]
    assert our_asks == {sdk_asks[0]["body"].encode("utf-8")}


@pytest.mark.parametrize(
    ("name", "instance"), [("user", INSTANCES[0]), ("member", INSTANCES[1])], ids=["user", "member"]
)
def test_elevation_reaches_the_same_instance(interop: Interop, name: str, instance: str) -> None:
    _assert_same_elevation(interop, name, instance, interop.broker.wix.elevate)


def test_a_visitor_is_elevated_by_the_sdk_and_by_tokenbroker_only_when_allowed(
    interop: Interop,
) -> None:
    elevate = interop.broker.wix.elevate
    # seen in Wix's SDK (auth/AppStrategy.js, elevated()): only Token Info's clientId
    # and instanceId are checked, so a visitor's token is elevated too; tokenbroker
    # refuses an anonymous caller unless asked to allow one.
    with pytest.raises(IdentityRejected):
        elevate(interop.user_tokens["visitor"])
    _assert_same_elevation(
        interop,
        "visitor",
        INSTANCES[0],
        lambda credential: elevate(credential, allow_anonymous=True),
    )


@pytest.mark.parametrize("name", ["other-app", "unknown"])
def test_elevation_refusals_agree(interop: Interop, name: str) -> None:
    theirs = interop.sdk_elevation(name)
    # seen in Wix's SDK (auth/AppStrategy.js, elevated()): a token whose Token Info
    # clientId is not the app's (another app's, or an inactive one with no clientId)
    # is refused before any app token is asked for.
    assert "not issued for the app" in theirs.get("error", "")
    with pytest.raises(IdentityRejected):
        interop.broker.wix.elevate(interop.user_tokens[name])


# -- webhooks -------------------------------------------------------------------------


def _account_info_on_the_wire(info: AccountInfo | None) -> dict[str, str] | None:
    """tokenbroker's ``AccountInfo`` spelled as the envelope has it (absent ids left out)."""
    if info is None:
        return None
    ids = (
        ("accountId", info.account_id),
        ("parentAccountId", info.parent_account_id),
        ("siteId", info.site_id),
    )
    return {wire: value for wire, value in ids if value is not None}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_webhooks_parse_alike(interop: Interop, name: str) -> None:
    theirs = interop.sdk_webhook(name)
    assert "error" not in theirs, theirs.get("error")
    parsed = theirs["parsed"]
    ours = interop.verifier.verify(interop.bodies[name])
    assert parsed["eventType"] == ours.event_type
    assert parsed["instanceId"] == ours.instance_id
    assert parsed["payload"] == dict(ours.data)
    # The SDK leaves identity undefined when the envelope has none; tokenbroker
    # gives {} (the signer always sends one, so this is a plain comparison).
    assert parsed.get("identity", {}) == dict(ours.identity)
    # The SDK passes accountInfo on as the envelope has it; tokenbroker types it.
    assert parsed.get("accountInfo") == _account_info_on_the_wire(ours.account_info)


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_handlers_get_what_tokenbroker_types(interop: Interop, name: str) -> None:
    handled = interop.sdk_webhook(name)["handled"]
    assert "error" not in handled, handled.get("error")
    [envelope] = handled["envelopes"]
    ours = interop.verifier.verify(interop.bodies[name])
    metadata = envelope["metadata"]
    assert metadata["instanceId"] == ours.instance_id
    assert metadata.get("identity", {}) == dict(ours.identity)
    assert metadata.get("accountInfo") == _account_info_on_the_wire(ours.account_info)
    if name not in DOMAIN:
        # seen in Wix's SDK (runHandler): a plain event's handler gets the payload as data.
        assert envelope["data"] == dict(ours.data)
        return
    # seen in Wix's SDK (runHandler): a domain event's body is unpacked into entity
    # (created, updated, deleted), data (an action's body) and modifiedFields; its
    # other fields join the metadata.
    assert isinstance(ours, DomainEvent)
    assert (metadata["id"], metadata["entityFqdn"], metadata["slug"]) == (
        ours.id,
        ours.entity_fqdn,
        ours.slug,
    )
    assert metadata.get("entityId") == ours.entity_id
    assert datetime.fromisoformat(metadata["eventTime"]) == ours.event_time
    if ours.kind is DomainEventKind.ACTION:
        assert "entity" not in envelope
        assert envelope["data"] == dict(ours.body or {})
    else:
        assert "data" not in envelope
        assert envelope.get("entity") == (None if ours.entity is None else dict(ours.entity))
    assert envelope.get("modifiedFields", {}) == dict(ours.modified_fields)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_webhook_refusals_agree(interop: Interop, name: str) -> None:
    theirs = interop.sdk_webhook(name)
    assert "error" in theirs, f"the SDK accepted {name}: {theirs.get('parsed')!r}"
    with pytest.raises(WebhookRejected) as refused:
        interop.verifier.verify(interop.bodies[name])
    if name == "data-claim-object":
        # seen in Wix's SDK (event-handlers-modules.js, parseJWT): `data` must be a
        # JSON string; an object is refused after the signature checks out.
        assert theirs["error"] == "Unexpected type of JWT data: expected string, got object"
        assert "data claim" in refused.value.reason
