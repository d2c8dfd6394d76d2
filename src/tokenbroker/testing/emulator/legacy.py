"""Wix's legacy OAuth ("custom authentication"): authorization codes and refresh tokens.

``_LegacyOAuth`` adds ``POST /oauth/access`` to the endpoints, for both of its grants,
and what a test needs to play Wix's installer: ``authorization_code`` issues the code
Wix hands the app when a site owner installs it.

Sources (each behaviour's tag is also in a comment beside it):

* documented (OAuth 2 > Request an Access Token, and Refresh an Access Token, at
  https://dev.wix.com/docs/rest/app-management/oauth-2/): ``POST
  https://www.wixapis.com/oauth/access`` with a JSON body; ``{"grant_type":
  "authorization_code", "client_id", "client_secret", "code"}`` answers ``{"access_token",
  "refresh_token"}``, and ``{"grant_type": "refresh_token", "client_id",
  "client_secret", "refresh_token"}`` answers the same two fields; the access token
  "expires after 5 minutes"; the refresh token "never expires" and is "identical to the
  one that you've sent in the request"; no custom errors, only standard ones;
* documented (Build Apps > Custom Authentication (Legacy)): the code "is valid for 10
  minutes";
* seen in Wix's SDK (``@wix/sdk``, ``build/auth/AppStrategy.js``: ``handleOAuthCallback``
  and ``getAuthHeaders``): the same bodies, sent as ``application/json``, and the
  client keeps whichever ``refresh_token`` each answer carries;
* assumed: a code works once (RFC 6749 section 4.1.2); a refused code or refresh token
  is a 400 ``invalid_grant`` (RFC 6749 section 5.2) or, in Wix's shape, the codes
  ``INVALID_AUTHORIZATION_CODE`` and ``INVALID_REFRESH_TOKEN``; removing the app ends its
  refresh tokens; and refresh tokens rotate on each use unless
  ``rotate_refresh_tokens`` is off. Rotation is the default because it is the harder
  case for a client (each answer's token must be kept, atomically); off is what Wix
  documents.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

import attrs

from . import checks
from .identity import _Identity
from .records import _IssuedToken, checked
from .responses import _JSON, _Answer, _bad_request, _error, _json_response, _parse_json
from .server import _Request

AUTHORIZATION_CODE: Final = "authorization_code"
REFRESH_TOKEN: Final = "refresh_token"  # noqa: S105 (a grant type, not a password)
# Documented (Custom Authentication (Legacy)): "The code is valid for 10 minutes".
CODE_LIFETIME: Final = 600.0
# The fields each grant needs besides grant_type, in the order Wix documents them.
_GRANT_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    AUTHORIZATION_CODE: ("client_id", "client_secret", "code"),
    REFRESH_TOKEN: ("client_id", "client_secret", "refresh_token"),
}


@attrs.define
class _Code:
    """An authorization code Wix handed the app for one installation."""

    instance_id: str
    expires_at: float
    used: bool = False


@attrs.define
class _Grant:
    """A refresh token: live until it is used (when they rotate), revoked or removed."""

    instance_id: str
    issued_at: float
    live: bool = True


def _refused(grant: str) -> _Answer:
    """The answer to a code or refresh token that is unknown, used, expired or revoked."""
    if grant == AUTHORIZATION_CODE:
        code, words = (
            "INVALID_AUTHORIZATION_CODE",
            "The authorization code is unknown, used or expired",
        )
    else:
        code, words = "INVALID_REFRESH_TOKEN", "The refresh token is unknown, used or revoked"
    return _error(HTTPStatus.BAD_REQUEST, "Invalid grant", code, words, ietf_error="invalid_grant")


@attrs.define(eq=False, repr=False)
class _LegacyOAuth(_Identity):
    """Codes, refresh tokens and ``POST /oauth/access``, on the endpoints' records and lock."""

    _rotate_refresh_tokens: bool = attrs.field(
        default=True, kw_only=True, validator=checked(checks.flag)
    )
    _legacy_token_lifetime: float = attrs.field(
        default=300.0, kw_only=True, validator=checked(checks.positive)
    )
    # Both in issue order, bounded like issued tokens (max_tokens, oldest forgotten first).
    _codes: dict[str, _Code] = attrs.field(init=False, factory=dict)
    _grants: dict[str, _Grant] = attrs.field(init=False, factory=dict)

    # -- knobs -------------------------------------------------------------------------

    @property
    def rotate_refresh_tokens(self) -> bool:
        """Whether each refresh answers a new refresh token and ends the one used."""
        with self._lock:
            return self._rotate_refresh_tokens

    @rotate_refresh_tokens.setter
    def rotate_refresh_tokens(self, value: bool) -> None:
        checks.flag("rotate_refresh_tokens", value)
        with self._lock:
            self._rotate_refresh_tokens = value

    @property
    def legacy_token_lifetime(self) -> float:
        """Seconds the access tokens of ``/oauth/access`` live (documented: 5 minutes)."""
        with self._lock:
            return self._legacy_token_lifetime

    @legacy_token_lifetime.setter
    def legacy_token_lifetime(self, value: float) -> None:
        checks.positive("legacy_token_lifetime", value)
        with self._lock:
            self._legacy_token_lifetime = value

    # -- the installer's side ------------------------------------------------------------

    def authorization_code(self, instance_id: str) -> str:
        """The one-time code Wix sends the app when a site owner installs it.

        The app is installed on the instance first if it is not (with the defaults of
        ``install``). The code is valid for 10 minutes by the emulator's clock.
        """
        checks.text("instance_id", instance_id)
        if instance_id not in self.installed:
            self.install(instance_id)
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = _Code(instance_id, self._clock() + CODE_LIFETIME)
            self._forget_oldest_locked(self._codes)
        return code

    def refresh_tokens_for(self, instance_id: str) -> list[str]:
        """Every refresh token issued for the instance, oldest first, ended ones too."""
        with self._lock:
            return [t for t, grant in self._grants.items() if grant.instance_id == instance_id]

    def live_refresh_tokens(self, instance_id: str) -> list[str]:
        """The instance's refresh tokens that Wix would still accept, oldest first."""
        with self._lock:
            return [
                token
                for token, grant in self._grants.items()
                if grant.instance_id == instance_id and grant.live
            ]

    def revoke_refresh_token(self, refresh_token: str) -> None:
        """End one refresh token (as a cloned site's or a corrupted install's); unknown
        ones are ignored."""
        with self._lock:
            grant = self._grants.get(refresh_token)
            if grant is not None:
                grant.live = False

    def revoke_grants(self, instance_id: str) -> None:
        """End every refresh token and unused code of the instance; it stays installed."""
        with self._lock:
            self._revoke_grants_locked(instance_id)

    def uninstall(self, instance_id: str) -> None:
        """Remove an installation, revoking its tokens, codes and refresh tokens."""
        super().uninstall(instance_id)
        with self._lock:
            self._revoke_grants_locked(instance_id)  # assumed: removal ends the grant

    def _revoke_grants_locked(self, instance_id: str) -> None:
        for grant in self._grants.values():
            if grant.instance_id == instance_id:
                grant.live = False
        for code in self._codes.values():
            if code.instance_id == instance_id:
                code.used = True

    def _forget_oldest_locked(self, records: dict[str, Any]) -> None:
        while len(records) > self._max_tokens:
            del records[next(iter(records))]

    # -- the endpoint (called from handler threads) ---------------------------------------

    def _request_access(self, request: _Request) -> _Answer:
        """``POST /oauth/access``: Request an Access Token, or Refresh an Access Token."""
        media_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        if media_type != _JSON:
            return _bad_request("INVALID_CONTENT_TYPE", "Content-Type must be application/json")
        payload, refused = _parse_json(request.body)
        if refused is not None:
            return refused
        if not isinstance(payload, dict):
            return _bad_request("INVALID_REQUEST", "The request body must be a JSON object")
        grant = payload.get("grant_type")
        if not isinstance(grant, str) or not grant:
            return _bad_request("INVALID_REQUEST", "Missing or invalid fields: grant_type")
        fields = _GRANT_FIELDS.get(grant)
        if fields is None:
            problem = _bad_request(
                "UNSUPPORTED_GRANT_TYPE", "grant_type must be authorization_code or refresh_token"
            )
            return attrs.evolve(problem, ietf_error="unsupported_grant_type")
        missing = [f for f in fields if not (isinstance(payload.get(f), str) and payload[f])]
        if missing:
            return _bad_request(
                "INVALID_REQUEST", f"Missing or invalid fields: {', '.join(missing)}"
            )
        # compare_digest on both, so a wrong ID and a wrong secret cost the same.
        id_ok = hmac.compare_digest(payload["client_id"].encode(), self._app_id.encode())
        secret_ok = hmac.compare_digest(
            payload["client_secret"].encode(), self._app_secret.encode()
        )
        if not (id_ok and secret_ok):
            return _error(
                HTTPStatus.UNAUTHORIZED,
                "Invalid client credentials",
                "INVALID_CLIENT",
                "The client_id or client_secret is wrong",
                ietf_error="invalid_client",
            )
        with self._lock:
            if grant == AUTHORIZATION_CODE:
                answer = self._exchange_code_locked(payload["code"])
            else:
                answer = self._refresh_locked(payload["refresh_token"])
        if isinstance(answer, tuple):
            access_token, refresh_token = answer
            # Documented: the answer is these two fields (no token_type, no expires_in).
            return _json_response(
                HTTPStatus.OK, {"access_token": access_token, "refresh_token": refresh_token}
            )
        return answer

    def _exchange_code_locked(self, code: str) -> tuple[str, str] | _Answer:
        found = self._codes.get(code)
        if found is None or found.used or self._clock() >= found.expires_at:
            return _refused(AUTHORIZATION_CODE)
        found.used = True  # assumed: a code works once (RFC 6749 4.1.2)
        if found.instance_id not in self._installations:
            return _refused(AUTHORIZATION_CODE)
        return self._issue_access_locked(found.instance_id), self._new_grant_locked(
            found.instance_id
        )

    def _refresh_locked(self, refresh_token: str) -> tuple[str, str] | _Answer:
        grant = self._grants.get(refresh_token)
        if grant is None or not grant.live or grant.instance_id not in self._installations:
            return _refused(REFRESH_TOKEN)
        if self._rotate_refresh_tokens:
            grant.live = False
            refresh_token = self._new_grant_locked(grant.instance_id)
        # else documented: the answer's refresh token is "identical to the one ... sent".
        return self._issue_access_locked(grant.instance_id), refresh_token

    def _new_grant_locked(self, instance_id: str) -> str:
        token = secrets.token_urlsafe(32)
        self._grants[token] = _Grant(instance_id, self._clock())
        self._forget_oldest_locked(self._grants)
        return token

    def _issue_access_locked(self, instance_id: str) -> str:
        now = self._clock()
        token = "LEGACY." + secrets.token_urlsafe(32)
        issued = _IssuedToken(
            instance_id, now + self._legacy_token_lifetime, now, "APP", self._app_id, self._app_id
        )
        self._issue_locked(token, issued)
        return token
