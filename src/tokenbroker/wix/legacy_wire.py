"""Wix's legacy OAuth on the wire: ``POST /oauth/access``, its two grants and its answers.

Wix's "custom authentication" (legacy; no longer offered to new apps, still run by
older ones): at install, Wix redirects the site owner to the app with a one-time
authorization ``code``; the app exchanges it for a refresh token and a first access
token (Request an Access Token), and later swaps the refresh token for each new access
token (Refresh an Access Token). Each fact is tagged with its source:

* **documented** (https://dev.wix.com/docs/rest/app-management/oauth-2/request-an-access-token
  and .../refresh-an-access-token): ``POST https://www.wixapis.com/oauth/access`` with a
  JSON body of ``grant_type``, ``client_id`` (the app id), ``client_secret`` (the app
  secret) and ``code`` or ``refresh_token``; the answer is ``{"access_token",
  "refresh_token"}``; the access token "expires after 5 minutes"; the refresh token
  "never expires" and comes back "identical to the one that you've sent"; errors are
  Wix's standard ones;
* **documented** (Build Apps > Custom Authentication (Legacy)): the redirect carries
  ``code``, ``instanceId`` and ``state``; the code "is valid for 10 minutes";
* **seen in Wix's SDK** (``@wix/sdk`` ``build/auth/AppStrategy.js``,
  ``handleOAuthCallback`` and ``getAuthHeaders``): the bodies, in the order sent here,
  as ``application/json``; the client keeps the ``refresh_token`` of every answer (so
  a rotated one is never lost) and reads no ``expires_in`` from a refresh answer;
* **assumed**: an answer may carry ``expires_in`` (then it is used, checked as Create
  Access Token's is); a refresh answer without ``refresh_token`` leaves the stored one
  in place (RFC 6749 section 6); a refused code or refresh token is ``invalid_grant``
  (RFC 6749 section 5.2), or ``INVALID_AUTHORIZATION_CODE`` / ``INVALID_REFRESH_TOKEN``
  in Wix's shape (extendable by ``ProviderConfig.not_installed``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

import attrs
import httpx2

from ..core.clock import to_datetime
from ..core.errors import ProviderError
from ..core.token import Token, TokenKey
from .errors import DEFAULT_RULES, NotInstalledRules, request_id_of
from .http import json_object
from .provider import MAX_LIFETIME, MAX_TOKEN_LENGTH

ACCESS_PATH: Final = "/oauth/access"
REQUEST: Final = "Request an Access Token"
"""The code exchange, as Wix's reference names it."""
REFRESH: Final = "Refresh an Access Token"
REFRESH_PROVIDER: Final = "wix-legacy~refresh"
"""The provider part of the store key under which an installation's refresh token is
kept (``wix-legacy~refresh:<app id>:<instance id>``): a name no provider registers."""
REFRESH_TYPE: Final = "refresh_token"
NEVER: Final = datetime(2200, 1, 1, tzinfo=UTC)
"""The expiry stored with a refresh token (documented: it "never expires")."""
STEP: Final = timedelta(microseconds=1)
"""The smallest step of a stored time (every store keeps microseconds)."""
DEFAULT_LIFETIME: Final = 300.0
"""Seconds an access token lives when the answer does not say (documented: 5 minutes)."""
MIN_LIFETIME: Final = 30.0
MAX_DEFAULT_LIFETIME: Final = 3600.0
MAX_GRANT_LENGTH: Final = 4096
"""The longest code or refresh token accepted (assumed: Wix's are far shorter)."""

GRANT_REFUSALS: Final = ("invalid_grant", "INVALID_AUTHORIZATION_CODE", "INVALID_REFRESH_TOKEN")
"""Codes that mean the code or refresh token itself was refused (assumed, see above)."""
RULES: Final = DEFAULT_RULES.extend(codes=GRANT_REFUSALS)
"""What reads as "this grant is gone" (an ``InstanceNotInstalled``): the Wix provider's
not-installed rules and the grant refusals."""


class AuthorizationCodeRefused(ProviderError):
    """Wix refused an install's authorization code: used already, more than 10 minutes
    old (documented), or not this app's. The code cannot be tried again; the site owner
    installs the app again for a new one."""


_PRINTABLE: Final = re.compile(r"[\x21-\x7e]+")
# RFC 7230 token characters: what an HTTP auth scheme such as "Bearer" is made of.
_TOKEN_TYPE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")


def legacy_rules(base: NotInstalledRules | None = None) -> NotInstalledRules:
    """``base`` (default: the Wix provider's rules) with the grant refusals added."""
    return RULES if base is None else base.extend(codes=GRANT_REFUSALS)


def refresh_key(key: TokenKey) -> TokenKey:
    """Where the refresh token of ``key``'s installation is stored."""
    return TokenKey(REFRESH_PROVIDER, key.app_id, key.instance_id)


def refresh_record(key: TokenKey, refresh_token: str, version: datetime) -> Token:
    """The stored form of a refresh token: a ``Token`` under ``refresh_key``, so every
    backend keeps it and the encrypting wrapper encrypts it. ``obtained_at`` is its
    version: the store's compare-and-set keeps the record with the latest one."""
    return Token(
        key=key,
        access_token=refresh_token,
        token_type=REFRESH_TYPE,
        expires_at=NEVER,
        obtained_at=version,
    )


def next_version(previous: Token | None, now: float) -> datetime:
    """The version of a refresh token obtained at ``now`` with (or after) ``previous``.

    Later than ``previous``'s in every case, so a token derived from the stored one
    always wins the compare-and-set over it, whatever the clocks of the hosts say.
    """
    moment = to_datetime(now)
    if previous is not None and moment <= previous.obtained_at:
        return previous.obtained_at + STEP
    return moment


def grant_text(value: object, what: str) -> str:
    """A code or refresh token given to us: printable ASCII without spaces, bounded.
    ``ValueError`` names ``what`` (never the value)."""
    if not isinstance(value, str):
        raise ValueError(f"the {what} must be a string, not {type(value).__name__}")
    if not value:
        raise ValueError(f"the {what} is empty")
    if len(value) > MAX_GRANT_LENGTH:
        raise ValueError(
            f"the {what} is {len(value)} characters long; the limit is {MAX_GRANT_LENGTH}"
        )
    if not _PRINTABLE.fullmatch(value):
        raise ValueError(f"the {what} holds spaces or control characters")
    return value


def code_body(app_id: str, secret: str, code: str) -> dict[str, str]:
    """Request an Access Token's body, in the order Wix's SDK sends it (seen in the SDK)."""
    return {
        "code": code,
        "client_id": app_id,
        "client_secret": secret,
        "grant_type": "authorization_code",
    }


def refresh_body(app_id: str, secret: str, refresh_token: str) -> dict[str, str]:
    """Refresh an Access Token's body, in the order Wix's SDK sends it (seen in the SDK)."""
    return {
        "refresh_token": refresh_token,
        "client_id": app_id,
        "client_secret": secret,
        "grant_type": "refresh_token",
    }


def access_request(api_url: str, body: dict[str, str]) -> httpx2.Request:
    return httpx2.Request("POST", api_url + ACCESS_PATH, json=body)


@attrs.frozen
class Answer:
    """A parsed ``/oauth/access`` answer: the access token, and the refresh token if any."""

    token: Token
    refresh_token: str | None = attrs.field(repr=False)


def parse_answer(
    key: TokenKey,
    response: httpx2.Response,
    obtained: float,
    *,
    what: str,
    default_lifetime: float,
    scrub: Callable[[str], str],
    need_refresh: bool,
) -> Answer:
    """Strictly parse a 2xx answer of ``/oauth/access``; anything odd is a ProviderError
    naming what is wrong (never a value of the answer)."""

    def bad(why: str) -> ProviderError:
        return ProviderError(
            f"{what}: Wix answered {response.status_code} with {why}",
            status=response.status_code,
            request_id=request_id_of(response, scrub),
        )

    body = json_object(response, bad)
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise bad("no access_token string")
    if len(access_token) > MAX_TOKEN_LENGTH:
        raise bad(f"an access_token of {len(access_token)} characters (at most {MAX_TOKEN_LENGTH})")
    if not _PRINTABLE.fullmatch(access_token):
        raise bad("an access_token with whitespace or control characters (not printable ASCII)")
    refresh_token = body.get("refresh_token")
    # Assumed (RFC 6749 section 6): a refresh answer without one leaves the stored one in use.
    if refresh_token is not None or need_refresh:
        try:
            refresh_token = grant_text(refresh_token, "refresh_token")
        except ValueError as why:
            raise bad(f"an unusable refresh_token ({why})") from None
        if refresh_token == access_token:
            raise bad("a refresh_token equal to its access_token")
    lifetime = body.get("expires_in", default_lifetime)  # documented: no expires_in
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float):
        raise bad("an expires_in that is not a number")
    # Compared before any float arithmetic, so 10**400 cannot overflow it.
    if not 0 < lifetime <= MAX_LIFETIME:  # also false for NaN
        raise bad(
            f"an expires_in out of range ({repr(lifetime)[:24]}; "
            f"0 < expires_in <= {MAX_LIFETIME:.0f})"
        )
    token_type = body.get("token_type", "Bearer")
    if not isinstance(token_type, str) or not _TOKEN_TYPE.fullmatch(token_type):
        raise bad("a token_type that is not a short token such as 'Bearer'")
    token = Token(
        key=key,
        access_token=access_token,
        token_type=token_type,
        expires_at=to_datetime(obtained + float(lifetime)),
        obtained_at=to_datetime(obtained),
    )
    return Answer(token, refresh_token)
