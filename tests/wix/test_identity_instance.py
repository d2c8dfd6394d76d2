"""The signed ``instance`` parameter: genuine ones pass, everything forged or mangled is
refused locally, with a fixed reason, and never sent to Wix."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbroker import ConfigError, ManualClock
from tokenbroker.wix import identity_instance
from tokenbroker.wix.identity import IdentityRejected, looks_like_instance

from .test_identity_kit import (
    APP,
    INSTANCE,
    SECRET,
    T0,
    TokenInfoScript,
    b64,
    claims,
    identifier,
    iso,
    sign_data,
    signed,
)


def rejected(script: TokenInfoScript, credential: object, **kwargs: bool) -> str:
    """The reason ``credential`` is refused for; it must not have reached Token Info."""
    with pytest.raises(IdentityRejected) as caught:
        identifier(script).identify(credential, **kwargs)
    assert script.requests == []
    assert caught.value.reason in str(caught.value)
    return caught.value.reason


@pytest.fixture
def script() -> TokenInfoScript:
    return TokenInfoScript()


class TestGenuine:
    def test_a_signed_instance_names_the_installation_and_the_user(
        self, script: TokenInfoScript
    ) -> None:
        identity = identifier(script).identify(signed(claims(siteId="site-9")))
        assert identity.instance_id == INSTANCE
        assert identity.user_id == "user-1"
        assert not identity.anonymous
        assert identity.site_id == "site-9"
        assert identity.source == "instance"
        assert identity.claims["permissions"] == "OWNER"
        assert identity.subject_type is None
        assert script.requests == []  # verified locally

    def test_padding_is_tolerated_on_either_part(self, script: TokenInfoScript) -> None:
        data = b64(json.dumps(claims()).encode())
        assert len(data) % 4, "the claims must need padding for this test to mean anything"
        padded_data = data + "=" * (-len(data) % 4)
        who = identifier(script)
        # The signature over the unpadded part (what Wix signs), either part padded.
        assert who.identify(f"{sign_data(data)}=.{data}").instance_id == INSTANCE
        assert who.identify(f"{sign_data(data)}.{padded_data}").instance_id == INSTANCE
        # The signature over the part as sent, padded.
        assert who.identify(f"{sign_data(padded_data)}.{padded_data}").instance_id == INSTANCE

    def test_the_signature_is_compared_in_constant_time(
        self, script: TokenInfoScript, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        seen: list[tuple[bytes, bytes]] = []
        original = hmac.compare_digest

        def compare(a: bytes, b: bytes) -> bool:
            seen.append((a, b))
            return original(a, b)

        monkeypatch.setattr(identity_instance.hmac, "compare_digest", compare)
        identifier(script).identify(signed())
        assert seen, "the signature must go through hmac.compare_digest"
        assert all(len(a) == len(b) == 32 for a, b in seen)


class TestForgedOrMangled:
    def test_signed_with_another_secret(self, script: TokenInfoScript) -> None:
        assert rejected(script, signed(secret="someone-elses-secret")) == "bad signature"

    @pytest.mark.parametrize("where", [0, 10, -1])
    def test_a_flipped_byte_in_the_data(self, script: TokenInfoScript, where: int) -> None:
        sig, data = signed().split(".")
        chars = list(data)
        chars[where] = "A" if chars[where] != "A" else "B"
        assert rejected(script, f"{sig}.{''.join(chars)}") in (
            "bad signature",
            "malformed instance",
        )

    @pytest.mark.parametrize("where", [0, 20, 41])
    def test_a_flipped_byte_in_the_signature(self, script: TokenInfoScript, where: int) -> None:
        sig, data = signed().split(".")
        chars = list(sig)
        chars[where] = "A" if chars[where] != "A" else "B"
        assert rejected(script, f"{''.join(chars)}.{data}") == "bad signature"

    def test_a_second_spelling_of_the_signature(self, script: TokenInfoScript) -> None:
        # 32 bytes leave 2 spare bits in the last character: four spellings decode alike.
        sig, data = signed().split(".")
        alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
        index = alphabet.index(sig[-1])
        twin = alphabet[index ^ 1]
        assert base64.urlsafe_b64decode(sig[:-1] + twin + "=") == base64.urlsafe_b64decode(
            sig + "="
        )
        assert rejected(script, f"{sig[:-1]}{twin}.{data}") == "malformed instance"

    def test_wrong_padding(self, script: TokenInfoScript) -> None:
        sig, data = signed().split(".")
        assert rejected(script, f"{sig}==.{data}") == "malformed instance"
        wrong = data + "=" * ((-len(data) % 4) % 3 + 1)
        assert rejected(script, f"{sig}.{wrong}") == "malformed instance"

    def test_bad_base64(self, script: TokenInfoScript) -> None:
        sig, data = signed().split(".")
        assert rejected(script, f"{sig[:-1]}!.{data}") == "malformed instance"
        assert rejected(script, f"{sig}.{data[:-1]}+") == "malformed instance"
        assert rejected(script, f"{sig}.{data[:-2]}/x") == "malformed instance"

    @pytest.mark.parametrize(
        "raw",
        [
            b"not json at all",
            b"[1, 2, 3]",
            b'"a string"',
            b'{"instanceId": "inst-1", "instanceId": "inst-2", "signDate": "x"}',
            b'{"instanceId": "inst-1", "n": NaN}',
            b"\xff\xfe\x00",
            b"[" * 100_00,
        ],
    )
    def test_genuinely_signed_but_not_a_json_object(
        self, script: TokenInfoScript, raw: bytes
    ) -> None:
        assert rejected(script, signed(raw)) in ("malformed instance", "credential too long")

    @pytest.mark.parametrize(
        "data",
        [
            claims(instanceId=None),
            claims(instanceId=""),
            claims(instanceId=42),
            claims(instanceId=" inst-1"),
            claims(uid=7),
            claims(uid=""),
            claims(aid=False),
            claims(appDefId=["app-1"]),
            claims(signDate=None),
            claims(signDate=1800000000),
            claims(signDate="yesterday"),
            claims(signDate="2027-01-15T08:00:00"),  # no zone
        ],
        ids=lambda d: ",".join(f"{k}={d.get(k)!r}" for k in ("instanceId", "uid", "signDate")),
    )
    def test_genuinely_signed_with_bad_fields(
        self, script: TokenInfoScript, data: dict[str, object]
    ) -> None:
        assert rejected(script, signed(data)) == "malformed instance"

    def test_swapped_parts(self, script: TokenInfoScript) -> None:
        sig, data = signed().split(".")
        swapped = f"{data}.{sig}"
        assert not looks_like_instance(swapped)  # the data part is no HMAC's length
        with pytest.raises(IdentityRejected) as caught:
            identifier(script).identify(swapped)
        assert caught.value.reason == "inactive token"  # what Token Info says of it
        assert script.tokens == [swapped]

    @pytest.mark.parametrize("shape", ["{sig}.{data}.", "{sig}.{data}.{sig}", "{sig}..{data}"])
    def test_extra_dots_make_it_no_instance(self, script: TokenInfoScript, shape: str) -> None:
        sig, data = signed().split(".")
        credential = shape.format(sig=sig, data=data)
        assert not looks_like_instance(credential)
        with pytest.raises(IdentityRejected) as caught:
            identifier(script).identify(credential)
        assert caught.value.reason == "inactive token"  # Token Info's verdict, not ours
        assert script.tokens == [credential]

    def test_huge_input_is_refused_before_any_work(self, script: TokenInfoScript) -> None:
        huge = signed(json.dumps(claims(pad="x" * 20_000)).encode())
        assert rejected(script, huge) == "credential too long"
        assert rejected(script, "x" * 10_000_000) == "credential too long"

    @pytest.mark.parametrize(
        ("credential", "reason"),
        [
            ("", "no credential"),
            (None, "malformed credential"),
            (b"bytes", "malformed credential"),
            ("two words", "malformed credential"),
            ("tab\there", "malformed credential"),
            ("caf\u00e9.token", "malformed credential"),
        ],
    )
    def test_not_a_credential(
        self, script: TokenInfoScript, credential: object, reason: str
    ) -> None:
        assert rejected(script, credential) == reason

    def test_an_instance_of_another_app_signed_with_our_secret(
        self, script: TokenInfoScript
    ) -> None:
        assert rejected(script, signed(claims(appDefId="other-app"))) == "instance for another app"

    @settings(max_examples=300, deadline=None)
    @given(where=st.integers(min_value=0), char=st.sampled_from(string.printable.strip()))
    def test_no_single_character_change_is_accepted(self, where: int, char: str) -> None:
        genuine = signed()
        where %= len(genuine)
        if genuine[where] == char:
            return
        mangled = genuine[:where] + char + genuine[where + 1 :]
        with pytest.raises(IdentityRejected):
            identifier(TokenInfoScript()).identify(mangled)


class TestAnonymous:
    def test_an_anonymous_visitor_is_refused_by_default(self, script: TokenInfoScript) -> None:
        anonymous = claims(uid=None, aid="visitor-1")
        assert rejected(script, signed(anonymous)) == "anonymous caller"

    def test_and_allowed_when_asked(self, script: TokenInfoScript) -> None:
        anonymous = claims(uid=None, aid="visitor-1")
        identity = identifier(script).identify(signed(anonymous), allow_anonymous=True)
        assert identity.anonymous
        assert identity.user_id is None
        assert identity.claims["aid"] == "visitor-1"

    def test_aid_wins_over_uid(self, script: TokenInfoScript) -> None:
        assert rejected(script, signed(claims(aid="visitor-1"))) == "anonymous caller"

    def test_no_user_at_all_is_anonymous(self, script: TokenInfoScript) -> None:
        assert rejected(script, signed(claims(uid=None))) == "anonymous caller"


class TestSignDate:
    @pytest.mark.parametrize(
        ("offset", "reason"),
        [(-24 * 3600 - 1, "instance expired"), (61, "instance signed in the future")],
    )
    def test_too_old_or_from_the_future(
        self, script: TokenInfoScript, offset: float, reason: str
    ) -> None:
        assert rejected(script, signed(claims(signDate=iso(T0 + offset)))) == reason

    @pytest.mark.parametrize("offset", [-24 * 3600 + 1, 0, 59])
    def test_within_the_window(self, script: TokenInfoScript, offset: float) -> None:
        identity = identifier(script).identify(signed(claims(signDate=iso(T0 + offset))))
        assert identity.instance_id == INSTANCE

    def test_the_window_is_an_option(self, script: TokenInfoScript) -> None:
        clock = ManualClock(start=T0)
        strict = identifier(script, clock, max_instance_age=300, max_skew=0)
        credential = signed(claims(signDate=iso(T0 - 200)))
        assert strict.identify(credential).instance_id == INSTANCE
        clock.advance(101)
        with pytest.raises(IdentityRejected, match="instance expired"):
            strict.identify(credential)
        with pytest.raises(IdentityRejected, match="in the future"):
            strict.identify(signed(claims(signDate=iso(clock.time() + 1))))

    @pytest.mark.parametrize(
        "options",
        [
            {"max_instance_age": 0},
            {"max_instance_age": -1},
            {"max_instance_age": float("inf")},
            {"max_skew": -1},
            {"max_skew": True},
            {"max_skew": "60"},
            {"cache_max_age": 61},
            {"cache_size": 0},
        ],
    )
    def test_bad_options_are_config_errors(self, options: dict[str, object]) -> None:
        with pytest.raises(ConfigError):
            identifier(TokenInfoScript(), **options)  # type: ignore[arg-type]


class TestShape:
    def test_the_rule_that_tells_an_instance_from_a_token(self) -> None:
        assert looks_like_instance(signed())
        assert looks_like_instance("a" * 43 + "=.x")
        assert looks_like_instance("a" * 43 + "==.x")  # wrong padding: refused, but here
        assert not looks_like_instance("OAUTH2." + "a" * 43)  # Create Access Token's shape
        assert not looks_like_instance("OauthNG.JWS." + "a" * 43)  # Token Info's example
        assert not looks_like_instance("a" * 42 + ".x")
        assert not looks_like_instance("a" * 44 + ".x")
        assert not looks_like_instance("a" * 43)

    def test_our_signer_agrees_with_a_plain_hmac(self) -> None:
        part = b64(json.dumps(claims()).encode())
        digest = hmac.new(SECRET.encode(), part.encode(), hashlib.sha256).digest()
        assert identity_instance.sign(part, SECRET.encode()) == b64(digest)
        assert (
            APP in json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["appDefId"]
        )
