"""The webhook verifier: genuine Wix deliveries become typed events, everything
else (forged, stale, malformed, oversized) becomes a WebhookRejected with the
status to answer and a reason that is safe to send back."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tokenbroker.core.clock import ManualClock
from tokenbroker.core.errors import ConfigError, TokenBrokerError
from tokenbroker.testing.webhooks import (
    forge_hs256,
    forge_none,
    key_id,
    make_key_pair,
    sign_claims,
    sign_webhook,
    webhook_claims,
)
from tokenbroker.wix.webhooks.events import (
    AppInstalled,
    AppRemoved,
    PaidPlanAutoRenewalCancelled,
    PaidPlanChanged,
    PaidPlanPurchased,
    PlanConvertedToPaid,
    PlanReactivated,
    PlanTransferred,
    WebhookEvent,
)
from tokenbroker.wix.webhooks.verify import WebhookRejected, WebhookVerifier, load_public_key

NOW = 1_750_000_000.0
APP_ID = "a1b2c3d4-app"
INSTANCE = "inst-0001"
SOURCE = "TOKENBROKER_APP_PUBLIC_KEY"


@pytest.fixture
def keys() -> tuple[str, str]:
    """(private PEM, public PEM): the pair Wix would sign with, made in-process."""
    return make_key_pair()


@pytest.fixture
def private_pem(keys: tuple[str, str]) -> str:
    return keys[0]


@pytest.fixture
def public_pem(keys: tuple[str, str]) -> str:
    return keys[1]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=NOW)


@pytest.fixture
def verifier(public_pem: str, clock: ManualClock) -> WebhookVerifier:
    return WebhookVerifier(public_pem, app_id=APP_ID, clock=clock)


def body(private_pem: str, event_type: str = "AppInstalled", **kwargs: Any) -> str:
    """A genuine delivery at NOW, for APP_ID and INSTANCE unless told otherwise."""
    kwargs.setdefault("instance_id", INSTANCE)
    kwargs.setdefault("iat", NOW)
    kwargs.setdefault("data", {"appId": APP_ID})
    return sign_webhook(private_pem, event_type=event_type, **kwargs)


def claims(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("event_type", "AppInstalled")
    kwargs.setdefault("instance_id", INSTANCE)
    kwargs.setdefault("iat", NOW)
    kwargs.setdefault("data", {"appId": APP_ID})
    return webhook_claims(**kwargs)


def envelope_claims(envelope: Any, **extra: Any) -> dict[str, Any]:
    """Claims whose ``data`` is exactly ``envelope`` (JSON-encoded if not a str)."""
    data = envelope if isinstance(envelope, str) else json.dumps(envelope)
    return {"data": data, "iat": NOW, "exp": NOW + 300, **extra}


def rejected(
    verifier: WebhookVerifier, token: str | bytes, status: int, reason: str
) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as info:
        verifier.verify(token)
    assert (info.value.status, info.value.reason) == (status, reason)
    return info.value


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class TestGenuineDeliveries:
    def test_app_installed_becomes_app_installed_with_its_fields(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        event = verifier.verify(
            body(
                private_pem,
                data={"appId": APP_ID, "originInstanceId": "inst-origin"},
                identity={"identityType": "WIX_USER", "wixUserId": "u-1"},
            )
        )
        assert type(event) is AppInstalled
        assert event.event_type == "AppInstalled"
        assert event.instance_id == INSTANCE
        assert event.app_id == APP_ID
        assert event.origin_instance_id == "inst-origin"
        assert event.data == {"appId": APP_ID, "originInstanceId": "inst-origin"}
        assert event.identity == {"identityType": "WIX_USER", "wixUserId": "u-1"}

    @pytest.mark.parametrize("origin", ["", None])
    def test_app_installed_on_a_fresh_site_has_no_origin(
        self, verifier: WebhookVerifier, private_pem: str, origin: str | None
    ) -> None:
        data: dict[str, Any] = {"appId": APP_ID}
        if origin is not None:
            data["originInstanceId"] = origin
        event = verifier.verify(body(private_pem, data=data))
        assert isinstance(event, AppInstalled)
        assert event.origin_instance_id is None

    @pytest.mark.parametrize(
        ("event_type", "cls"),
        [
            ("AppRemoved", AppRemoved),
            ("PaidPlanPurchased", PaidPlanPurchased),
            ("PaidPlanChanged", PaidPlanChanged),
            ("PaidPlanAutoRenewalCancelled", PaidPlanAutoRenewalCancelled),
            ("PlanConvertedToPaid", PlanConvertedToPaid),
            ("PlanReactivated", PlanReactivated),
            ("PlanTransferred", PlanTransferred),
        ],
    )
    def test_known_event_types_become_their_classes(
        self,
        verifier: WebhookVerifier,
        private_pem: str,
        event_type: str,
        cls: type[WebhookEvent],
    ) -> None:
        event = verifier.verify(body(private_pem, event_type, data={"appId": APP_ID, "x": 1}))
        assert type(event) is cls
        assert (event.event_type, event.instance_id, event.app_id) == (
            event_type,
            INSTANCE,
            APP_ID,
        )
        assert event.data == {"appId": APP_ID, "x": 1}

    def test_unknown_event_type_becomes_a_plain_webhook_event(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        event = verifier.verify(body(private_pem, "SomethingWixAddsNextYear"))
        assert type(event) is WebhookEvent
        assert event.event_type == "SomethingWixAddsNextYear"

    def test_issued_at_is_the_iat_as_an_aware_utc_datetime(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        event = verifier.verify(body(private_pem, iat=NOW - 30))
        assert event.issued_at == datetime.fromtimestamp(NOW - 30, tz=UTC)
        assert event.issued_at.utcoffset() is not None
        assert event.issued_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]

    def test_bytes_body_with_trailing_newline_is_accepted(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        event = verifier.verify((body(private_pem) + "\r\n").encode())
        assert event.instance_id == INSTANCE

    def test_absent_nested_data_and_identity_are_empty_and_app_id_none(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        token = sign_claims(
            private_pem, envelope_claims({"eventType": "AppRemoved", "instanceId": INSTANCE})
        )
        event = verifier.verify(token)
        assert type(event) is AppRemoved
        assert (event.data, event.identity, event.app_id) == ({}, {}, None)

    def test_already_decoded_nested_objects_are_accepted_defensively(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        envelope = {
            "eventType": "AppRemoved",
            "instanceId": INSTANCE,
            "data": {"appId": APP_ID},
            "identity": {"identityType": "APP"},
        }
        event = verifier.verify(sign_claims(private_pem, envelope_claims(envelope)))
        assert (event.app_id, event.identity) == (APP_ID, {"identityType": "APP"})

    def test_the_header_carries_a_kid_and_the_verifier_accepts_it(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        token = body(private_pem)
        header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
        assert header["kid"] == key_id(private_pem)
        assert header["alg"] == "RS256"
        assert verifier.verify(token).instance_id == INSTANCE

    def test_a_verifier_without_app_id_accepts_any_app(
        self, public_pem: str, clock: ManualClock, private_pem: str
    ) -> None:
        verifier = WebhookVerifier(public_pem, clock=clock)
        event = verifier.verify(body(private_pem, data={"appId": "someone-else"}))
        assert event.app_id == "someone-else"

    def test_an_event_naming_no_app_passes_a_verifier_with_app_id(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        assert verifier.verify(body(private_pem, data={})).app_id is None

    def test_a_delivery_without_exp_is_accepted(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        assert verifier.verify(body(private_pem, exp=None)).instance_id == INSTANCE

    def test_verifier_takes_a_loaded_key_object(
        self, public_pem: str, private_pem: str, clock: ManualClock
    ) -> None:
        verifier = WebhookVerifier(load_public_key(public_pem), clock=clock)
        assert verifier.verify(body(private_pem)).instance_id == INSTANCE


class TestForgeries:
    def test_signed_with_another_key_is_401_bad_signature(self, verifier: WebhookVerifier) -> None:
        other_private, _ = make_key_pair("other")
        rejected(verifier, body(other_private), 401, "bad signature")

    def test_a_fresh_key_pair_is_unrelated_to_the_cached_one(
        self, verifier: WebhookVerifier, public_pem: str
    ) -> None:
        fresh_private, fresh_public = make_key_pair(fresh=True)
        assert fresh_public != public_pem
        rejected(verifier, body(fresh_private), 401, "bad signature")

    def test_tampered_payload_is_401_bad_signature(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        header, _, signature = body(private_pem).split(".")
        evil = b64url(json.dumps(claims(instance_id="victim")).encode())
        rejected(verifier, f"{header}.{evil}.{signature}", 401, "bad signature")

    def test_alg_none_is_401_unsupported_algorithm(self, verifier: WebhookVerifier) -> None:
        rejected(verifier, forge_none(claims()), 401, "unsupported algorithm")

    def test_unsigned_token_claiming_rs256_is_401_bad_signature(
        self, verifier: WebhookVerifier
    ) -> None:
        rejected(verifier, forge_none(claims(), header_alg="RS256"), 401, "bad signature")

    def test_hs256_keyed_with_the_public_pem_is_401_unsupported_algorithm(
        self, verifier: WebhookVerifier, public_pem: str
    ) -> None:
        rejected(verifier, forge_hs256(public_pem, claims()), 401, "unsupported algorithm")

    def test_hs256_mac_under_an_rs256_header_is_401_bad_signature(
        self, verifier: WebhookVerifier, public_pem: str
    ) -> None:
        token = forge_hs256(public_pem, claims(), header_alg="RS256")
        rejected(verifier, token, 401, "bad signature")

    @pytest.mark.parametrize("alg", ["RS512", "RS384", "PS256"])
    def test_other_rsa_algorithms_with_the_right_key_are_401(
        self, verifier: WebhookVerifier, private_pem: str, alg: str
    ) -> None:
        rejected(verifier, body(private_pem, alg=alg), 401, "unsupported algorithm")

    @pytest.mark.parametrize(
        "header",
        [{"typ": "JWT"}, {"alg": "rs256"}, {"alg": ["RS256"]}, {"alg": None}, {"alg": "RS256 "}],
        ids=["missing", "lowercase", "list", "null", "padded"],
    )
    def test_alg_other_than_exactly_rs256_is_401(
        self, verifier: WebhookVerifier, private_pem: str, header: dict[str, Any]
    ) -> None:
        _, payload, signature = body(private_pem).split(".")
        token = f"{b64url(json.dumps(header).encode())}.{payload}.{signature}"
        rejected(verifier, token, 401, "unsupported algorithm")

    def test_only_rs256_is_ever_handed_to_pyjwt(
        self,
        verifier: WebhookVerifier,
        private_pem: str,
        public_pem: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        import tokenbroker.wix.webhooks.verify as module

        seen: list[Any] = []
        real = module._JWS

        class Spy:
            def decode(self, token: bytes, key: Any, algorithms: list[str]) -> Any:
                seen.append(list(algorithms))
                return real.decode(token, key, algorithms=algorithms)

        monkeypatch.setattr(module, "_JWS", Spy())
        verifier.verify(body(private_pem))
        for forged in (
            forge_hs256(public_pem, claims()),
            forge_none(claims()),
            forge_hs256(public_pem, claims(), header_alg="RS256"),
        ):
            with pytest.raises(WebhookRejected):
                verifier.verify(forged)
        assert seen
        assert all(algs == ["RS256"] for algs in seen)


class TestTimes:
    def test_expired_beyond_leeway_is_401_expired(
        self, verifier: WebhookVerifier, private_pem: str, clock: ManualClock
    ) -> None:
        token = body(private_pem, iat=NOW, exp=NOW + 300)
        clock.advance(300 + 61)
        rejected(verifier, token, 401, "expired")

    def test_expired_within_leeway_is_accepted(
        self, verifier: WebhookVerifier, private_pem: str, clock: ManualClock
    ) -> None:
        token = body(private_pem, iat=NOW, exp=NOW + 300)
        clock.advance(300 + 59)
        assert verifier.verify(token).instance_id == INSTANCE

    def test_iat_beyond_leeway_in_the_future_is_401(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        rejected(verifier, body(private_pem, iat=NOW + 61), 401, "issued in the future")

    def test_iat_within_leeway_in_the_future_is_accepted(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        assert verifier.verify(body(private_pem, iat=NOW + 59)).instance_id == INSTANCE

    def test_leeway_is_configurable(
        self, public_pem: str, private_pem: str, clock: ManualClock
    ) -> None:
        strict = WebhookVerifier(public_pem, leeway=0, clock=clock)
        rejected(strict, body(private_pem, iat=NOW + 1), 401, "issued in the future")

    def test_missing_iat_is_400_no_iat(self, verifier: WebhookVerifier, private_pem: str) -> None:
        no_iat = {k: v for k, v in claims().items() if k != "iat"}
        rejected(verifier, sign_claims(private_pem, no_iat), 400, "no iat")

    @pytest.mark.parametrize(
        "iat", ["1750000000", True, None, -5, float("nan"), float("inf"), 10**400]
    )
    def test_iat_that_is_not_a_sane_number_is_400(
        self, verifier: WebhookVerifier, private_pem: str, iat: Any
    ) -> None:
        token = sign_claims(private_pem, {**claims(), "iat": iat})
        rejected(verifier, token, 400, "malformed iat")

    def test_exp_that_is_not_a_number_is_400(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        token = sign_claims(private_pem, {**claims(), "exp": "soon"})
        rejected(verifier, token, 400, "malformed exp")

    def test_nbf_beyond_leeway_in_the_future_is_401(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        token = sign_claims(private_pem, {**claims(), "nbf": NOW + 120})
        rejected(verifier, token, 401, "not yet valid")


class TestMalformedBodies:
    @pytest.mark.parametrize("empty", ["", b"", "   \n", b"\t\r\n"])
    def test_empty_or_blank_body_is_400(self, verifier: WebhookVerifier, empty: str) -> None:
        rejected(verifier, empty, 400, "empty body")

    @pytest.mark.parametrize(
        "token",
        [
            "garbage",
            "only.two",
            "a.b.c.d",
            "!!!.???.***",
            "eyJhbGciOiJSUzI1NiJ9..c2ln",
            ".eyJhIjoxfQ.c2ln",
            "a.bb.c",  # 1-character segments are not valid base64
            "é.é.é",
            "\ud800.e30.c2ln",
        ],
        ids=["garbage", "two-parts", "four-parts", "bad-alphabet", "no-payload", "no-header",
             "bad-length", "non-ascii", "lone-surrogate"],
    )  # fmt: skip
    def test_not_a_compact_jwt_is_400(self, verifier: WebhookVerifier, token: str) -> None:
        rejected(verifier, token, 400, "not a JWT")

    @pytest.mark.parametrize("header", [b"not json", b"[1, 2]", b'"RS256"', b"\xff\xfe"])
    def test_header_that_is_not_a_json_object_is_400(
        self, verifier: WebhookVerifier, private_pem: str, header: bytes
    ) -> None:
        _, payload, signature = body(private_pem).split(".")
        rejected(verifier, f"{b64url(header)}.{payload}.{signature}", 400, "not a JWT")

    def test_deeply_nested_header_is_400_not_a_crash(self, verifier: WebhookVerifier) -> None:
        header = b64url(b"[" * 20000 + b"]" * 20000)
        rejected(verifier, f"{header}.e30.c2ln", 400, "not a JWT")

    def test_oversized_body_is_413_before_any_parsing(
        self, verifier: WebhookVerifier, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import tokenbroker.wix.webhooks.verify as module

        def must_not_parse(*_: object, **__: object) -> None:
            raise AssertionError("parsed an oversized body")

        monkeypatch.setattr(module, "_check_header", must_not_parse)
        monkeypatch.setattr(module, "_JWS", None)
        huge = "x" * 65537
        rejected(verifier, huge, 413, "body too large")
        rejected(verifier, huge.encode(), 413, "body too large")

    def test_body_size_limit_counts_bytes_and_is_configurable(
        self, public_pem: str, private_pem: str, clock: ManualClock
    ) -> None:
        token = body(private_pem)
        exact = WebhookVerifier(public_pem, max_body_bytes=len(token), clock=clock)
        assert exact.verify(token).instance_id == INSTANCE
        small = WebhookVerifier(public_pem, max_body_bytes=len(token) - 1, clock=clock)
        rejected(small, token, 413, "body too large")
        rejected(small, "é" * (len(token) // 2 + 1), 413, "body too large")


class TestMalformedClaims:
    def test_missing_data_claim_is_400(self, verifier: WebhookVerifier, private_pem: str) -> None:
        token = sign_claims(private_pem, {"iat": NOW, "exp": NOW + 300})
        rejected(verifier, token, 400, "no data claim")

    @pytest.mark.parametrize("data", ["{not json", "[1, 2]", "42", "null"])
    def test_data_claim_that_is_not_a_json_object_is_400(
        self, verifier: WebhookVerifier, private_pem: str, data: str
    ) -> None:
        token = sign_claims(private_pem, {"data": data, "iat": NOW, "exp": NOW + 300})
        rejected(verifier, token, 400, "malformed data claim")

    @pytest.mark.parametrize(
        "data",
        [
            {"eventType": "AppRemoved", "instanceId": INSTANCE, "data": '{"appId": "x"}'},
            42,
            ["a"],
            None,
            True,
        ],
        ids=["decoded-envelope", "number", "list", "null", "bool"],
    )
    def test_data_claim_that_is_not_a_string_is_400_as_the_sdk_refuses_it(
        self, verifier: WebhookVerifier, private_pem: str, data: Any
    ) -> None:
        # Seen in Wix's SDK: parseJWT throws "Unexpected type of JWT data" unless the
        # claim is a string, even when it holds a well-formed envelope.
        token = sign_claims(private_pem, {"data": data, "iat": NOW, "exp": NOW + 300})
        rejected(verifier, token, 400, "data claim not a string")

    def test_deeply_nested_data_claim_is_400_not_a_crash(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        token = sign_claims(private_pem, envelope_claims("[" * 5000 + "]" * 5000))
        rejected(verifier, token, 400, "malformed data claim")

    @pytest.mark.parametrize("event_type", [None, "", "  ", 7, "App\nInstalled"])
    def test_bad_event_type_is_400(
        self, verifier: WebhookVerifier, private_pem: str, event_type: Any
    ) -> None:
        envelope = {"eventType": event_type, "instanceId": INSTANCE}
        rejected(
            verifier, sign_claims(private_pem, envelope_claims(envelope)), 400, "bad eventType"
        )

    @pytest.mark.parametrize(
        "instance_id", [None, "", 12345, "inst\n1", "inst\x00", "inst\u202e", " inst", "i" * 300]
    )
    def test_bad_instance_id_is_400(
        self, verifier: WebhookVerifier, private_pem: str, instance_id: Any
    ) -> None:
        envelope = {"eventType": "AppInstalled", "instanceId": instance_id}
        token = sign_claims(private_pem, envelope_claims(envelope))
        rejected(verifier, token, 400, "bad instanceId")

    @pytest.mark.parametrize("nested", ["{oops", "[]", "3", 3, ["appId"]])
    def test_malformed_nested_data_is_400(
        self, verifier: WebhookVerifier, private_pem: str, nested: Any
    ) -> None:
        envelope = {"eventType": "AppInstalled", "instanceId": INSTANCE, "data": nested}
        token = sign_claims(private_pem, envelope_claims(envelope))
        rejected(verifier, token, 400, "malformed nested data")

    def test_malformed_identity_is_400(self, verifier: WebhookVerifier, private_pem: str) -> None:
        envelope = {"eventType": "AppInstalled", "instanceId": INSTANCE, "identity": "{oops"}
        token = sign_claims(private_pem, envelope_claims(envelope))
        rejected(verifier, token, 400, "malformed identity")

    @pytest.mark.parametrize("app_id", [42, "", "app\r\nid", {"id": 1}])
    def test_bad_app_id_is_400(
        self, verifier: WebhookVerifier, private_pem: str, app_id: Any
    ) -> None:
        rejected(verifier, body(private_pem, data={"appId": app_id}), 400, "bad appId")

    @pytest.mark.parametrize("origin", [42, "  ", "inst\n2"])
    def test_bad_origin_instance_id_is_400(
        self, verifier: WebhookVerifier, private_pem: str, origin: Any
    ) -> None:
        token = body(private_pem, data={"appId": APP_ID, "originInstanceId": origin})
        rejected(verifier, token, 400, "bad originInstanceId")

    def test_event_for_another_app_is_400(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        token = body(private_pem, data={"appId": "not-our-app"})
        rejected(verifier, token, 400, "event for another app")


class TestRejectionsAndLogsStaySafe:
    def test_webhook_rejected_is_a_tokenbroker_error(self) -> None:
        assert issubclass(WebhookRejected, TokenBrokerError)

    def test_rejection_carries_no_body_and_no_cause(
        self, verifier: WebhookVerifier, private_pem: str
    ) -> None:
        token = body(private_pem, data={"appId": 42})
        exc = rejected(verifier, token, 400, "bad appId")
        assert token not in str(exc)
        assert exc.__cause__ is None
        assert exc.__suppress_context__

    def test_debug_logs_name_the_event_but_never_the_body_or_key(
        self,
        verifier: WebhookVerifier,
        private_pem: str,
        public_pem: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="tokenbroker")
        token = body(private_pem)
        verifier.verify(token)
        with pytest.raises(WebhookRejected):
            verifier.verify(token[:-4] + "AAAA")
        assert "AppInstalled" in caplog.text
        assert INSTANCE in caplog.text
        for secretish in (token, token.split(".")[1], token.split(".")[2]):
            assert secretish not in caplog.text
        key_body = "".join(public_pem.splitlines()[1:-1])
        assert key_body[:40] not in caplog.text
        assert key_body[:40] not in repr(verifier)


class TestVerifierConfiguration:
    @pytest.mark.parametrize("leeway", [-1, float("nan"), float("inf")])
    def test_bad_leeway_is_a_config_error(self, public_pem: str, leeway: float) -> None:
        with pytest.raises(ConfigError, match="leeway"):
            WebhookVerifier(public_pem, leeway=leeway)

    @pytest.mark.parametrize("size", [0, -1])
    def test_non_positive_body_limit_is_a_config_error(self, public_pem: str, size: int) -> None:
        with pytest.raises(ConfigError, match="max_body_bytes"):
            WebhookVerifier(public_pem, max_body_bytes=size)

    def test_app_id_with_control_characters_is_a_config_error(self, public_pem: str) -> None:
        with pytest.raises(ConfigError, match="app id"):
            WebhookVerifier(public_pem, app_id="app\nid")

    def test_a_non_rsa_key_object_is_a_config_error(self) -> None:
        ec_public = ec.generate_private_key(ec.SECP256R1()).public_key()
        with pytest.raises(ConfigError, match="RSA"):
            WebhookVerifier(ec_public)  # type: ignore[arg-type]


class TestLoadPublicKey:
    def numbers(self, value: str, **kwargs: Any) -> rsa.RSAPublicNumbers:
        return load_public_key(value, **kwargs).public_numbers()

    def test_pem_text(self, public_pem: str) -> None:
        key = load_public_key(public_pem)
        assert isinstance(key, rsa.RSAPublicKey)
        assert key.key_size == 2048

    def test_pkcs1_rsa_public_key_pem(self, public_pem: str) -> None:
        pkcs1 = (
            load_public_key(public_pem)
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
            .decode()
        )
        assert pkcs1.startswith("-----BEGIN RSA PUBLIC KEY-----")
        assert self.numbers(pkcs1) == self.numbers(public_pem)

    def test_base64_wrapped_pem(self, public_pem: str) -> None:
        wrapped = base64.b64encode(public_pem.encode()).decode()
        assert self.numbers(wrapped) == self.numbers(public_pem)

    def test_pem_with_literal_backslash_n_escapes(self, public_pem: str) -> None:
        escaped = public_pem.strip().replace("\n", "\\n")
        assert "\n" not in escaped
        assert self.numbers(escaped) == self.numbers(public_pem)

    def test_quoted_indented_crlf_pem_from_an_env_file(self, public_pem: str) -> None:
        mangled = '"' + "\r\n".join("    " + line for line in public_pem.splitlines()) + '"'
        assert self.numbers(mangled) == self.numbers(public_pem)

    def test_bare_base64_key_body_without_markers(self, public_pem: str) -> None:
        bare = "".join(public_pem.splitlines()[1:-1])
        assert self.numbers(bare) == self.numbers(public_pem)

    @pytest.mark.parametrize("form", ["pem", "escaped", "wrapped"])
    def test_path_to_a_file_holding_any_form(
        self, tmp_path: Path, public_pem: str, form: str
    ) -> None:
        content = {
            "pem": public_pem,
            "escaped": public_pem.strip().replace("\n", "\\n"),
            "wrapped": base64.b64encode(public_pem.encode()).decode(),
        }[form]
        path = tmp_path / "wix.pub"
        path.write_text(content)
        assert self.numbers(str(path)) == self.numbers(public_pem)

    def test_garbage_is_a_config_error_naming_the_source_not_the_value(self) -> None:
        with pytest.raises(ConfigError, match="MY_KEY_VAR") as info:
            load_public_key("hunter2 is not a key!", source="MY_KEY_VAR")
        assert "hunter2" not in str(info.value)

    def test_default_source_is_the_env_var_name(self) -> None:
        with pytest.raises(ConfigError, match=SOURCE):
            load_public_key("not a key")

    @pytest.mark.parametrize("value", ["", "   ", '""'])
    def test_empty_value_is_a_config_error(self, value: str) -> None:
        with pytest.raises(ConfigError, match=f"{SOURCE} is empty"):
            load_public_key(value)

    def test_pem_markers_around_junk_is_a_config_error(self) -> None:
        junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        with pytest.raises(ConfigError, match=SOURCE):
            load_public_key(junk)

    def test_base64_of_junk_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError, match=SOURCE):
            load_public_key(base64.b64encode(b"definitely not DER").decode())

    def test_missing_file_path_is_a_config_error(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=SOURCE):
            load_public_key(str(tmp_path / "nope.pem"))

    def test_file_of_garbage_is_a_config_error_naming_source_and_file(self, tmp_path: Path) -> None:
        path = tmp_path / "key.pem"
        path.write_text("not a key at all")
        with pytest.raises(ConfigError, match=SOURCE) as info:
            load_public_key(str(path))
        assert str(path) in str(info.value)

    def test_an_ec_public_key_is_a_config_error(self) -> None:
        ec_pem = (
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        with pytest.raises(ConfigError, match=f"{SOURCE} is an EC key.*RSA"):
            load_public_key(ec_pem)

    def test_a_private_key_is_refused_without_being_echoed(self, private_pem: str) -> None:
        with pytest.raises(ConfigError, match="private key") as info:
            load_public_key(private_pem)
        body_line = private_pem.splitlines()[1]
        assert body_line not in str(info.value)

    def test_verifier_names_its_own_source_for_a_bad_key_string(self) -> None:
        with pytest.raises(ConfigError, match="WebhookVerifier public_key"):
            WebhookVerifier("nope")
