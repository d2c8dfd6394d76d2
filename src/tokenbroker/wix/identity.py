"""Who is calling the app's backend: Token Info, the signed ``instance`` parameter.

The app's own frontend (a dashboard page, a widget, a site extension) calls
its backend with a credential Wix gave it. ``Identifier.identify`` turns that
credential into an ``Identity`` (which installation, which user), or raises
``IdentityRejected`` with a fixed, safe reason:

- a signed ``instance`` parameter (``<signature>.<data>``) is verified locally
  with the app secret (see ``tokenbroker.wix.identity_instance``): no call to
  Wix, no network failure;
- anything else is taken for an access token and checked with Wix's Token
  Info (``POST {api}/oauth2/token-info`` with ``{"token": ...}``; documented:
  https://dev.wix.com/docs/rest/app-management/oauth-2/token-info). It must be
  ``active``, issued for this app (``clientId`` equal to the app id: the check
  the SDK's ``AppStrategy.elevated()`` makes) and carry an ``instanceId`` (the
  SDK checks that too).

Token Info answers are cached briefly (``tokenbroker.wix.identity_cache``).
An outage of Token Info (5xx, timeouts, 429, the circuit breaker open) is a
``ProviderError``, never a rejection: the caller is not at fault and should be
told to try again, not to log in again. Any other 4xx is a rejection.
Token Info sends no ``Authorization`` (seen in the SDK, ``get-token-info.js``),
so it needs neither the app's token nor its secret.
"""

from __future__ import annotations

import logging
import math
from typing import Final

import httpx2

from ..core.clock import Clock, to_timestamp
from ..core.errors import ConfigError, ProviderError
from ..core.flow import Flow, run_async, run_sync
from ..core.secret import Secret, scrub_secrets
from ..core.token import validate_id
from .http import WixHttp
from .identity_cache import DEFAULT_MAX_AGE, DEFAULT_MAX_SIZE, TokenInfoCache
from .identity_instance import (
    MAX_CREDENTIAL_LENGTH,
    check_credential,
    looks_like_instance,
    verify_instance,
)
from .identity_model import (
    ANONYMOUS,
    IDENTIFIED_SUBJECTS,
    INACTIVE_TOKEN,
    REASONS,
    TOKEN_EXPIRED,
    TOKEN_FOR_ANOTHER_APP,
    TOKEN_REFUSED,
    TOKEN_WITHOUT_INSTANCE,
    Identity,
    IdentityRejected,
    TokenInfo,
    parse_token_info,
)

__all__ = [
    "DEFAULT_MAX_INSTANCE_AGE",
    "DEFAULT_MAX_SKEW",
    "MAX_CREDENTIAL_LENGTH",
    "REASONS",
    "TOKEN_INFO_PATH",
    "Identifier",
    "Identity",
    "IdentityRejected",
    "TokenInfo",
    "TokenInfoCache",
    "looks_like_instance",
    "token_info_flow",
]

log = logging.getLogger("tokenbroker.wix.identity")

TOKEN_INFO_PATH: Final = "/oauth2/token-info"  # noqa: S105 - a path, not a password
DEFAULT_MAX_INSTANCE_AGE: Final = 24 * 3600.0
"""How old a signed ``instance`` parameter may be: tokenbroker's choice (Wix documents
no expiry); Wix signs a fresh one each time it loads the app's page."""
DEFAULT_MAX_SKEW: Final = 60.0
"""How far in the future a ``signDate`` may be: clock skew between Wix and this host."""


def _seconds(value: object, name: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{name} must be a finite number of seconds {bound}, not {value}")
    return float(value)


def _client_error(status: int | None) -> bool:
    """A 4xx that is about the token, not an outage (408 and 429 are outages)."""
    return status is not None and 400 <= status < 500 and status not in (408, 429)


def token_info_flow(http: WixHttp, token: str) -> Flow[TokenInfo]:
    """``POST {api}/oauth2/token-info`` within the retry budget and the breaker.

    A 4xx other than 408 and 429 is ``IdentityRejected`` (``token refused by
    Wix``); an outage is the ``ProviderError`` ``WixHttp`` raises, with the token
    scrubbed out of its message should Wix have quoted it.
    """
    request = httpx2.Request("POST", http.api_url + TOKEN_INFO_PATH, json={"token": token})
    try:
        response = yield from http.request_flow(request, "Token Info")
    except ProviderError as exc:
        if _client_error(exc.status):
            log.debug("Token Info refused a token: %s", exc.status)
            raise IdentityRejected(TOKEN_REFUSED) from None
        _scrub_token(exc, token)
        raise
    if response.status_code != 200:  # the SDK, too, takes nothing but a 200
        raise ProviderError(
            f"Token Info: Wix answered {response.status_code}, not 200",
            status=response.status_code,
        )
    return parse_token_info(response)


def _scrub_token(exc: ProviderError, token: str) -> None:
    exc.args = tuple(
        scrub_secrets(arg, [token], anywhere_from=0) if isinstance(arg, str) else arg
        for arg in exc.args
    )
    if exc.wix_message:
        exc.wix_message = scrub_secrets(exc.wix_message, [token], anywhere_from=0)


class Identifier:
    """Identifies the callers of one app, from an ``instance`` parameter or a token.

    Thread-safe and usable from several event loops (it is ``WixHttp``'s). It
    holds the app secret (to check ``instance`` signatures) and never shows it.
    ``max_instance_age`` (24 h) bounds how old an ``instance`` parameter may be,
    ``max_skew`` (60 s) how far ahead of this host's clock; ``cache_max_age``
    (at most 60 s; 0 turns the cache off) and ``cache_size`` bound the Token
    Info cache.
    """

    def __init__(
        self,
        *,
        app_id: str,
        app_secret: Secret | str,
        http: WixHttp,
        clock: Clock,
        max_instance_age: float = DEFAULT_MAX_INSTANCE_AGE,
        max_skew: float = DEFAULT_MAX_SKEW,
        cache_max_age: float = DEFAULT_MAX_AGE,
        cache_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.app_id = validate_id(app_id, "app id")
        secret = Secret(app_secret)
        if not secret.reveal():
            raise ConfigError("app secret is empty")
        self._key = secret.reveal().encode("utf-8")
        self.http = http
        self.clock = clock
        self.max_instance_age = _seconds(max_instance_age, "max_instance_age", positive=True)
        self.max_skew = _seconds(max_skew, "max_skew", positive=False)
        self.cache = TokenInfoCache(clock, max_age=cache_max_age, max_size=cache_size)

    def __repr__(self) -> str:
        return (
            f"Identifier(app_id={self.app_id!r}, max_instance_age={self.max_instance_age:g}, "
            f"max_skew={self.max_skew:g}, cache={self.cache!r})"
        )

    # -- the decision core ----------------------------------------------------------
    def token_info_flow(self, token: str) -> Flow[TokenInfo]:
        """Token Info for ``token``, from the cache when it has a fresh answer."""
        token = check_credential(token)
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        info = yield from token_info_flow(self.http, token)
        self.cache.put(token, info)
        return info

    def identify_flow(self, credential: object, *, allow_anonymous: bool) -> Flow[Identity]:
        """The decisions of ``identify`` and ``aidentify``."""
        try:
            checked = check_credential(credential)
            if looks_like_instance(checked):
                return self.identify_instance(checked, allow_anonymous=allow_anonymous)
            info = yield from self.token_info_flow(checked)
            return self.identity_from(info, allow_anonymous=allow_anonymous)
        except IdentityRejected as exc:
            log.debug("caller not identified: %s", exc.reason)
            raise

    def identify_instance(self, credential: str, *, allow_anonymous: bool) -> Identity:
        """The identity a signed ``instance`` parameter proves (no I/O)."""
        claims = verify_instance(
            check_credential(credential),
            self._key,
            app_id=self.app_id,
            now=self.clock.time(),
            max_age=self.max_instance_age,
            max_skew=self.max_skew,
        )
        # Wix: "block access when aid is returned" (an anonymous visitor, not the site's
        # owner or a collaborator, who carry uid). Neither is anonymous too.
        uid = claims.get("uid")
        anonymous = claims.get("aid") is not None or uid is None
        if anonymous and not allow_anonymous:
            raise IdentityRejected(ANONYMOUS)
        return Identity(
            instance_id=claims["instanceId"],
            user_id=None if anonymous else uid,
            anonymous=anonymous,
            site_id=claims.get("siteId"),
            source="instance",
            claims=claims,
        )

    def identity_from(self, info: TokenInfo, *, allow_anonymous: bool) -> Identity:
        """The identity a Token Info answer proves, for this app."""
        if not info.active:
            raise IdentityRejected(INACTIVE_TOKEN)
        if info.exp is not None and to_timestamp(info.exp) <= self.clock.time():
            raise IdentityRejected(TOKEN_EXPIRED)
        if info.client_id != self.app_id:
            raise IdentityRejected(TOKEN_FOR_ANOTHER_APP)
        try:
            instance_id = validate_id(info.instance_id, "instance id")
        except ConfigError:
            raise IdentityRejected(TOKEN_WITHOUT_INSTANCE) from None
        identified = info.subject_type in IDENTIFIED_SUBJECTS and info.subject_id is not None
        if not identified and not allow_anonymous:
            raise IdentityRejected(ANONYMOUS)
        return Identity(
            instance_id=instance_id,
            user_id=info.subject_id if identified else None,
            anonymous=not identified,
            site_id=info.site_id,
            source="token",
            claims=info.raw,
            subject_type=info.subject_type,
        )

    # -- drivers --------------------------------------------------------------------
    def token_info(self, token: str) -> TokenInfo:
        """Wix's Token Info answer for ``token`` (``IdentityRejected`` on a 4xx)."""
        return run_sync(self.token_info_flow(token), self.http)

    async def atoken_info(self, token: str) -> TokenInfo:
        """The async twin of ``token_info``."""
        return await run_async(self.token_info_flow(token), self.http)

    def identify(self, credential: object, *, allow_anonymous: bool = False) -> Identity:
        """The caller ``credential`` identifies, or ``IdentityRejected``."""
        return run_sync(self.identify_flow(credential, allow_anonymous=allow_anonymous), self.http)

    async def aidentify(self, credential: object, *, allow_anonymous: bool = False) -> Identity:
        """The async twin of ``identify``: never blocks the event loop."""
        flow = self.identify_flow(credential, allow_anonymous=allow_anonymous)
        return await run_async(flow, self.http)
