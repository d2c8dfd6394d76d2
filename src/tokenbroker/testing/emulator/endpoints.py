"""Wix's endpoints that act for the app: Create Access Token, Send BI Event, Get App Instance.

``_WixEndpoints`` turns a parsed request into Wix's answer from the records it inherits
(``records``), and keeps the BI events it accepted. Token Info and the app's user-side
credentials are added by ``identity``; routing, faults and timing are the emulator's.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from http import HTTPStatus
from typing import Final, Literal

import attrs

from . import checks
from .installation import _Installation
from .records import _IssuedToken, _Records, checked
from .responses import (
    _JSON,
    _Answer,
    _bad_request,
    _error,
    _invalid_field,
    _json_response,
    _parse_json,
    _unauthorized,
)
from .server import _Request

TOKEN_ENDPOINT: Final = "oauth2/token"  # noqa: S105 (a URL path, not a password)
TOKEN_INFO_ENDPOINT: Final = "oauth2/token-info"  # noqa: S105 (a URL path, not a password)
BI_EVENT_ENDPOINT: Final = "apps/v1/bi-event"
INSTANCE_ENDPOINT: Final = "apps/v1/instance"
# Wix's legacy OAuth ("custom authentication"): Request and Refresh an Access Token.
ACCESS_ENDPOINT: Final = "oauth/access"
ENDPOINTS: Final = frozenset(
    {TOKEN_ENDPOINT, TOKEN_INFO_ENDPOINT, BI_EVENT_ENDPOINT, INSTANCE_ENDPOINT, ACCESS_ENDPOINT}
)

# URL path -> (endpoint name, the one method it accepts). The documented paths on
# www.wixapis.com, and the ones @wix/sdk's generated modules call on any other API host
# (seen in the SDK: the "_" entry of domainToMappings in
# @wix/auto_sdk_app-management_bi-events and ..._app-instances, build/cjs/index.js, which
# @wix/sdk-runtime's resolveUrl picks for a host it does not know, such as this one).
_ROUTES: Final[Mapping[str, tuple[str, str]]] = {
    "/" + TOKEN_ENDPOINT: (TOKEN_ENDPOINT, "POST"),
    "/" + TOKEN_INFO_ENDPOINT: (TOKEN_INFO_ENDPOINT, "POST"),
    "/" + BI_EVENT_ENDPOINT: (BI_EVENT_ENDPOINT, "POST"),
    "/" + INSTANCE_ENDPOINT: (INSTANCE_ENDPOINT, "GET"),
    # Documented both ways: the endpoint is given as https://www.wixapis.com/oauth/access/
    # and its curl example posts to .../oauth/access (OAuth 2 > Refresh an Access Token).
    "/" + ACCESS_ENDPOINT: (ACCESS_ENDPOINT, "POST"),
    "/" + ACCESS_ENDPOINT + "/": (ACCESS_ENDPOINT, "POST"),
    "/devcenter/bi-events/v1/bi-event": (BI_EVENT_ENDPOINT, "POST"),
    "/devcenter/app-instance/v1/instance": (INSTANCE_ENDPOINT, "GET"),
}

_TOKEN_FIELDS: Final = ("grant_type", "client_id", "client_secret", "instance_id")
_NOT_INSTALLED: Final = "App is not installed on this instance"
_BEARER: Final = "bearer"


@attrs.define(eq=False, repr=False)
class _WixEndpoints(_Records):
    """The app's endpoints on the records, and the knobs of how they answer."""

    _error_shape: Literal["wix", "ietf"] = attrs.field(
        default="wix", kw_only=True, validator=checked(checks.error_shape)
    )
    _not_installed_status: int = attrs.field(
        default=400, kw_only=True, validator=checked(checks.not_installed_status)
    )
    _bi_events: list[tuple[str, str]] = attrs.field(init=False, factory=list)
    _bearer_prefixed: int = attrs.field(init=False, default=0)

    @property
    def error_shape(self) -> Literal["wix", "ietf"]:
        """The shape of every error answer from now on: ``"wix"`` or ``"ietf"``."""
        with self._lock:
            return self._error_shape

    @error_shape.setter
    def error_shape(self, value: Literal["wix", "ietf"]) -> None:
        checks.error_shape("error_shape", value)
        with self._lock:
            self._error_shape = value

    @property
    def not_installed_status(self) -> int:
        """Create Access Token's status for an instance not installed: 400, 401, 403 or 404."""
        with self._lock:
            return self._not_installed_status

    @not_installed_status.setter
    def not_installed_status(self, value: int) -> None:
        checks.not_installed_status("not_installed_status", value)
        with self._lock:
            self._not_installed_status = value

    @property
    def bearer_prefixed(self) -> int:
        """Requests whose ``Authorization`` had a ``Bearer `` prefix (accepted, counted)."""
        with self._lock:
            return self._bearer_prefixed

    # -- the endpoints (called from handler threads) --------------------------------

    def _create_access_token(self, request: _Request) -> _Answer:
        media_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        if media_type != _JSON:
            return _bad_request("INVALID_CONTENT_TYPE", "Content-Type must be application/json")
        payload, refused = _parse_json(request.body)
        if refused is not None:
            return refused
        if not isinstance(payload, dict):
            return _bad_request("INVALID_REQUEST", "The request body must be a JSON object")
        missing = [f for f in _TOKEN_FIELDS if not (isinstance(payload.get(f), str) and payload[f])]
        if missing:
            return _bad_request(
                "INVALID_REQUEST", f"Missing or invalid fields: {', '.join(missing)}"
            )
        if payload["grant_type"] != "client_credentials":
            problem = _bad_request(
                "UNSUPPORTED_GRANT_TYPE", "grant_type must be client_credentials"
            )
            return attrs.evolve(problem, ietf_error="unsupported_grant_type")
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
        instance_id: str = payload["instance_id"]
        with self._lock:
            if instance_id not in self._installations:
                # Assumed: Wix documents neither the status nor the body here (only that
                # errors "follow the conventions of the IETF"), so a knob picks the status
                # and the body is in the shape set, with the same words in both.
                problem = _error(
                    self._not_installed_status,
                    _NOT_INSTALLED,
                    "APP_NOT_INSTALLED",
                    "The app is not installed on the given instance_id",
                    ietf_error="invalid_grant",
                )
                return attrs.evolve(problem, ietf_description=_NOT_INSTALLED)
            lifetime = self._token_lifetime
            now = self._clock()
            token = "OAUTH2." + secrets.token_urlsafe(32)
            issued = _IssuedToken(
                instance_id, now + lifetime, now, "APP", self._app_id, self._app_id
            )
            self._issue_locked(token, issued)
        # Documented (Create Access Token): token_type "Bearer", expires_in 14400.
        return _json_response(
            HTTPStatus.OK,
            {"access_token": token, "token_type": "Bearer", "expires_in": lifetime},
        )

    def _authenticate(self, request: _Request) -> _Installation | _Answer:
        """Find the installation an ``Authorization`` token belongs to.

        Wix documents sending the raw token; it does not document refusing a ``Bearer ``
        prefix, so one is accepted (assumed) and counted in ``bearer_prefixed``.
        """
        token = request.authorization or ""
        scheme, _, rest = token.partition(" ")
        if scheme.lower() == _BEARER:
            token = rest.strip()
            with self._lock:
                self._bearer_prefixed += 1
        if not token:
            return _unauthorized("Missing Authorization header")
        with self._lock:
            issued = self._live_token_locked(token)
            if isinstance(issued, str):
                return _unauthorized(issued)
            return self._installations[issued.instance_id]

    def _send_bi_event(self, request: _Request) -> _Answer:
        installation = self._authenticate(request)
        if not isinstance(installation, _Installation):
            return installation
        payload, refused = _parse_json(request.body)
        if refused is not None:
            return refused
        event = payload.get("eventName") if isinstance(payload, dict) else None
        # Any name is taken (the SDK knows eleven, from UNKNOWN to APP_SETUP_FINISHED,
        # and Wix may add more); a request without one names no event at all.
        if not isinstance(event, str) or not event:
            return _invalid_field("eventName", "eventName must be a non-empty string")
        with self._lock:
            self._bi_events.append((installation.instance_id, event))
        return _json_response(HTTPStatus.OK, {})

    def _get_app_instance(self, request: _Request) -> _Answer:
        installation = self._authenticate(request)
        if not isinstance(installation, _Installation):
            return installation
        return _json_response(HTTPStatus.OK, installation.app_instance())
