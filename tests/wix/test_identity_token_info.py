"""Access tokens through Token Info (httpx2.MockTransport): the checks, the strict parse,
rejections versus outages, and the cache (ManualClock)."""

from __future__ import annotations

import hashlib
import json

import httpx2
import pytest

from tokenbroker import ManualClock, ProviderError, RateLimited, TransientProviderError
from tokenbroker.wix.identity import IdentityRejected

from .test_identity_kit import APP, INSTANCE, T0, TokenInfoScript, active, identifier

TOKEN = "OauthNG.JWS.user-token-of-this-app"


def one_answer(body: object, status: int = 200) -> TokenInfoScript:
    script = TokenInfoScript()
    script.queue = [httpx2.Response(status, json=body)] * 5
    return script


class TestTheCall:
    def test_posts_the_token_as_json_without_authorization(self) -> None:
        script = TokenInfoScript({TOKEN: active()})
        identifier(script).identify(TOKEN)
        (request,) = script.requests
        assert request.method == "POST"
        assert str(request.url) == "https://wix.example/oauth2/token-info"
        assert json.loads(request.content) == {"token": TOKEN}
        assert "authorization" not in request.headers

    def test_an_active_user_token_of_this_app(self) -> None:
        identity = identifier(TokenInfoScript({TOKEN: active()})).identify(TOKEN)
        assert identity.instance_id == INSTANCE
        assert identity.user_id == "user-1"
        assert not identity.anonymous
        assert identity.site_id == "site-1"
        assert identity.source == "token"
        assert identity.subject_type == "USER"
        assert identity.claims["accountId"] == "account-1"

    def test_a_member_is_a_person_too(self) -> None:
        body = active(subjectType="MEMBER", subjectId="member-7")
        identity = identifier(TokenInfoScript({TOKEN: body})).identify(TOKEN)
        assert (identity.user_id, identity.anonymous) == ("member-7", False)

    def test_token_info_answers_in_full(self) -> None:
        info = identifier(TokenInfoScript({TOKEN: active(vendorProductId="premium")})).token_info(
            TOKEN
        )
        assert info.active
        assert info.client_id == APP
        assert info.vendor_product_id == "premium"
        assert info.exp is not None
        assert info.exp.timestamp() == T0 + 3600
        assert info.iat is not None
        assert info.iat.timestamp() == T0
        assert info.to_json()["exp"] == info.exp.isoformat()
        assert TOKEN not in repr(info)

    def test_an_inactive_token_is_an_answer_from_token_info(self) -> None:
        info = identifier(TokenInfoScript()).token_info(TOKEN)
        assert not info.active
        assert info.instance_id is None


class TestRejections:
    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            ({"active": False}, "inactive token"),
            (active(clientId="another-app"), "token for another app"),
            (active(clientId=None), "token for another app"),
            (active(instanceId=None), "token without instance"),
            (active(instanceId=""), "token without instance"),
            (active(exp=int(T0) - 1), "token expired"),
            (active(subjectType="VISITOR", subjectId="visitor-1"), "anonymous caller"),
            (active(subjectType="APP", subjectId=APP), "anonymous caller"),
            (active(subjectType="UNKNOWN"), "anonymous caller"),
            (active(subjectId=None), "anonymous caller"),
        ],
    )
    def test_refused_with_a_fixed_reason(self, body: dict[str, object], reason: str) -> None:
        with pytest.raises(IdentityRejected) as caught:
            identifier(TokenInfoScript({TOKEN: body})).identify(TOKEN)
        assert caught.value.reason == reason
        assert TOKEN not in str(caught.value)

    def test_a_visitor_passes_when_anonymous_callers_are_allowed(self) -> None:
        body = active(subjectType="VISITOR", subjectId="visitor-1")
        identity = identifier(TokenInfoScript({TOKEN: body})).identify(TOKEN, allow_anonymous=True)
        assert identity.anonymous
        assert identity.user_id is None
        assert identity.subject_type == "VISITOR"

    def test_another_apps_token_is_refused_even_when_anonymous_callers_are_allowed(self) -> None:
        body = active(clientId="another-app", subjectType="VISITOR")
        with pytest.raises(IdentityRejected, match="token for another app"):
            identifier(TokenInfoScript({TOKEN: body})).identify(TOKEN, allow_anonymous=True)

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
    def test_a_4xx_is_a_rejection(self, status: int) -> None:
        script = one_answer({"message": f"bad token {TOKEN}"}, status)
        with pytest.raises(IdentityRejected) as caught:
            identifier(script).identify(TOKEN)
        assert caught.value.reason == "token refused by Wix"
        assert caught.value.__cause__ is None
        assert TOKEN not in str(caught.value)
        assert len(script.requests) == 1  # never retried


class TestOutages:
    @pytest.mark.parametrize("status", [500, 502, 503, 408])
    def test_a_5xx_or_408_is_a_provider_error_after_the_retries(self, status: int) -> None:
        script = one_answer({"message": f"oops, {TOKEN} broke us"}, status)
        with pytest.raises(TransientProviderError) as caught:
            identifier(script).identify(TOKEN)
        assert not isinstance(caught.value, IdentityRejected)
        assert len(script.requests) == 2  # the retry budget of the test identifier
        assert TOKEN not in str(caught.value)
        assert TOKEN not in (caught.value.wix_message or "")

    def test_a_timeout_is_a_provider_error(self) -> None:
        script = TokenInfoScript()
        script.queue = [httpx2.ReadTimeout("slow"), httpx2.ReadTimeout("slow")]
        with pytest.raises(TransientProviderError):
            identifier(script).identify(TOKEN)

    def test_a_429_is_rate_limiting_not_a_rejection(self) -> None:
        script = TokenInfoScript()
        script.queue = [httpx2.Response(429, headers={"Retry-After": "120"})]
        with pytest.raises(RateLimited) as caught:
            identifier(script).identify(TOKEN)
        assert caught.value.retry_after == 120

    def test_the_retry_recovers(self) -> None:
        script = TokenInfoScript({TOKEN: active()})
        script.queue = [httpx2.Response(503)]
        assert identifier(script).identify(TOKEN).instance_id == INSTANCE
        assert len(script.requests) == 2


class TestStrictParse:
    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"active": "yes"},
            {"active": 1},
            [True],
            active(clientId=42),
            active(instanceId={"id": INSTANCE}),
            active(subjectType=["USER"]),
            active(exp=True),
            active(exp="soon"),
            active(exp=-5),
            active(exp=10**400),
            active(iat=1.5e300),
            active(siteId="x" * 2000),
            active(instanceId="inst\n1"),
        ],
    )
    def test_a_strange_answer_is_a_provider_error(self, body: object) -> None:
        with pytest.raises(ProviderError, match="Token Info: Wix answered 200") as caught:
            identifier(one_answer(body)).identify(TOKEN)
        assert not isinstance(caught.value, IdentityRejected)

    def test_a_body_that_is_not_json(self) -> None:
        script = TokenInfoScript()
        script.queue = [httpx2.Response(200, text="<html>proxy</html>")]
        with pytest.raises(ProviderError, match="not JSON"):
            identifier(script).identify(TOKEN)

    def test_a_2xx_that_is_not_200(self) -> None:
        with pytest.raises(ProviderError, match="answered 202, not 200"):
            identifier(one_answer(active(), 202)).identify(TOKEN)

    def test_times_as_decimal_strings_are_read(self) -> None:
        body = active(exp=str(int(T0) + 60), iat=str(int(T0)))
        info = identifier(one_answer(body)).token_info(TOKEN)
        assert info.exp is not None
        assert info.exp.timestamp() == T0 + 60

    def test_wix_documented_example_with_string_values_is_read(self) -> None:
        # Wix's Token Info reference writes active, exp and iat as strings.
        body = active(active="true", exp=str(int(T0) + 60), iat=str(int(T0)))
        info = identifier(one_answer(body)).token_info(TOKEN)
        assert info.active is True
        assert info.exp is not None
        assert info.exp.timestamp() == T0 + 60
        inactive = identifier(one_answer({"active": "false"})).token_info(TOKEN)
        assert inactive.active is False

    def test_empty_strings_are_missing_fields(self) -> None:
        info = identifier(one_answer(active(vendorProductId="", accountId=""))).token_info(TOKEN)
        assert info.vendor_product_id is None
        assert info.account_id is None


class TestCache:
    def test_an_answer_is_reused_for_60_seconds(self) -> None:
        clock = ManualClock(start=T0)
        script = TokenInfoScript({TOKEN: active()})
        who = identifier(script, clock)
        who.identify(TOKEN)
        clock.advance(59.9)
        who.identify(TOKEN)
        assert len(script.requests) == 1
        clock.advance(0.1)
        who.identify(TOKEN)
        assert len(script.requests) == 2

    def test_never_past_the_tokens_exp(self) -> None:
        clock = ManualClock(start=T0)
        script = TokenInfoScript()
        script.queue = [lambda: httpx2.Response(200, json=active(exp=int(clock.time()) + 10))] * 3
        who = identifier(script, clock)
        who.identify(TOKEN)
        clock.advance(9)
        who.identify(TOKEN)
        assert len(script.requests) == 1
        clock.advance(1)  # exp reached: the cached answer is gone, Wix is asked again
        who.identify(TOKEN)
        assert len(script.requests) == 2

    def test_an_active_answer_already_expired_is_not_kept(self) -> None:
        script = one_answer(active(exp=int(T0)))
        who = identifier(script)
        for _ in range(2):
            with pytest.raises(IdentityRejected, match="token expired"):
                who.identify(TOKEN)
        assert len(script.requests) == 2

    def test_inactive_answers_are_kept_too(self) -> None:
        script = TokenInfoScript()
        who = identifier(script)
        for _ in range(3):
            with pytest.raises(IdentityRejected, match="inactive token"):
                who.identify(TOKEN)
        assert len(script.requests) == 1

    def test_failures_and_rejections_are_not_kept(self) -> None:
        script = TokenInfoScript({TOKEN: active()})
        script.queue = [httpx2.Response(500), httpx2.Response(500), httpx2.Response(401)]
        who = identifier(script)
        with pytest.raises(TransientProviderError):
            who.identify(TOKEN)
        with pytest.raises(IdentityRejected, match="refused by Wix"):
            who.identify(TOKEN)
        assert who.identify(TOKEN).instance_id == INSTANCE
        assert len(script.requests) == 4

    def test_keyed_by_a_hash_never_the_token(self) -> None:
        who = identifier(TokenInfoScript({TOKEN: active()}))
        who.identify(TOKEN)
        assert list(who.cache._entries) == [hashlib.sha256(TOKEN.encode()).digest()]
        assert TOKEN not in repr(who) + repr(who.cache)

    def test_bounded_least_recently_used_first(self) -> None:
        tokens = [f"OauthNG.JWS.t{n}" for n in range(3)]
        script = TokenInfoScript(dict.fromkeys(tokens, active()))
        who = identifier(script, cache_size=2)
        for token in [*tokens[:2], tokens[0], tokens[2]]:  # t1 is then the oldest
            who.identify(token)
        assert len(who.cache) == 2
        who.identify(tokens[0])
        who.identify(tokens[2])
        assert len(script.requests) == 3
        who.identify(tokens[1])
        assert script.tokens == [tokens[0], tokens[1], tokens[2], tokens[1]]

    def test_a_cache_age_of_zero_turns_it_off(self) -> None:
        script = TokenInfoScript({TOKEN: active()})
        who = identifier(script, cache_max_age=0)
        who.identify(TOKEN)
        who.identify(TOKEN)
        assert len(script.requests) == 2


class TestAsync:
    async def test_aidentify_and_atoken_info(self) -> None:
        script = TokenInfoScript({TOKEN: active()})
        who = identifier(script, cache_max_age=0)
        assert (await who.aidentify(TOKEN)).user_id == "user-1"
        assert (await who.atoken_info(TOKEN)).client_id == APP
        with pytest.raises(IdentityRejected, match="inactive token"):
            await who.aidentify("OauthNG.JWS.unknown")
        assert len(script.requests) == 3
