"""Wix's three endpoints, and the installations and tokens they answer from.

``_WixEndpoints`` is the base of ``WixEmulator`` (in ``state``): it holds what the
emulated Wix knows (app credentials, installations, issued tokens, BI events) and turns
a parsed request into Wix's answer. Routing, faults and timing are the emulator's.
"""

from __future__ import annotations

import collections
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, Final

import attrs

from . import checks
from .responses import _JSON, _bad_request, _error, _json_response, _unauthorized
from .server import _Request, _Response

TOKEN_ENDPOINT: Final = "oauth2/token"  # noqa: S105 (a URL path, not a password)
BI_EVENT_ENDPOINT: Final = "apps/v1/bi-event"
INSTANCE_ENDPOINT: Final = "apps/v1/instance"
ENDPOINTS: Final = frozenset({TOKEN_ENDPOINT, BI_EVENT_ENDPOINT, INSTANCE_ENDPOINT})

# URL path -> (endpoint name, the one method it accepts).
_ROUTES: Final[Mapping[str, tuple[str, str]]] = {
    "/" + TOKEN_ENDPOINT: (TOKEN_ENDPOINT, "POST"),
    "/" + BI_EVENT_ENDPOINT: (BI_EVENT_ENDPOINT, "POST"),
    "/" + INSTANCE_ENDPOINT: (INSTANCE_ENDPOINT, "GET"),
}

_FINISHED_CONFIGURATION: Final = "APP_FINISHED_CONFIGURATION"
_TOKEN_FIELDS: Final = ("grant_type", "client_id", "client_secret", "instance_id")


@attrs.frozen
class _Installation:
    instance_id: str
    app_name: str
    site_id: str
    site_display_name: str


@attrs.define
class _IssuedToken:
    instance_id: str
    expires_at: float
    revoked: bool = False


def checked(check: Callable[[str, Any], object]) -> Callable[[Any, Any, Any], None]:
    """An attrs validator from one of ``checks``, naming the knob as it is passed."""

    def validate(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        check(attribute.alias or attribute.name, value)

    return validate


def _callable(name: str, value: object) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {value!r}")


def _max_tokens(name: str, value: object) -> None:
    checks.integer(name, value, low=1)


def _parse_json(body: bytes) -> tuple[Any, _Response | None]:
    """The body's JSON value, or the 400 to answer; nesting too deep for the parser is a 400."""
    try:
        return json.loads(body), None
    except (ValueError, RecursionError):
        return None, _bad_request("INVALID_JSON", "The request body is not valid JSON")


@attrs.define(eq=False, repr=False)
class _WixEndpoints:
    """The Wix half of the emulator; what changes is guarded by ``_lock``."""

    _app_id: str = attrs.field(default="demo-app-id", validator=checked(checks.text))
    _app_secret: str = attrs.field(default="demo-app-secret", validator=checked(checks.text))
    _token_lifetime: float = attrs.field(
        default=14400, kw_only=True, validator=checked(checks.positive)
    )
    _clock: Callable[[], float] = attrs.field(
        default=time.time, kw_only=True, validator=checked(_callable)
    )
    # Issued tokens are remembered up to this many, the oldest forgotten first, so a
    # long-running emulator does not grow without bound.
    _max_tokens: int = attrs.field(default=10_000, kw_only=True, validator=checked(_max_tokens))

    # The emulator's only lock: the subclass builds its condition on it, so one hold
    # covers these records and its counters alike (reset_counters clears both at once).
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _installations: dict[str, _Installation] = attrs.field(init=False, factory=dict)
    # In issue order (dicts keep it), so the first is the one to forget.
    _tokens: dict[str, _IssuedToken] = attrs.field(init=False, factory=dict)
    _tokens_by_instance: dict[str, collections.deque[str]] = attrs.field(init=False, factory=dict)
    _bi_events: list[tuple[str, str]] = attrs.field(init=False, factory=list)

    @property
    def app_id(self) -> str:
        return self._app_id

    @property
    def token_lifetime(self) -> float:
        """``expires_in`` given to tokens issued from now on: seconds, finite, positive."""
        with self._lock:
            return self._token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, value: float) -> None:
        checks.positive("token_lifetime", value)
        with self._lock:
            self._token_lifetime = value

    # -- installations ---------------------------------------------------------------

    def install(
        self,
        instance_id: str,
        *,
        app_name: str = "Demo App",
        site_id: str | None = None,
        site_display_name: str = "Demo Site",
    ) -> None:
        """Install the app on an instance (again, if it was installed before)."""
        checks.text("instance_id", instance_id)
        for name, value in (("app_name", app_name), ("site_display_name", site_display_name)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {type(value).__name__}")
        if site_id is not None:
            checks.text("site_id", site_id)
        else:
            # Stable per instance, so a test can predict it without passing one.
            site_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"wix-emulator:{instance_id}"))
        with self._lock:
            self._installations[instance_id] = _Installation(
                instance_id, app_name, site_id, site_display_name
            )

    def uninstall(self, instance_id: str) -> None:
        """Remove an installation and revoke its tokens; a no-op if not installed."""
        with self._lock:
            self._installations.pop(instance_id, None)
            self._revoke_instance_locked(instance_id)

    @property
    def installed(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._installations)

    # -- tokens ----------------------------------------------------------------------

    def revoke(self, access_token: str) -> None:
        """Make one token unusable; unknown tokens are ignored."""
        with self._lock:
            issued = self._tokens.get(access_token)
            if issued is not None:
                issued.revoked = True

    def revoke_instance(self, instance_id: str) -> None:
        """Revoke every token issued for an instance; the installation stays."""
        with self._lock:
            self._revoke_instance_locked(instance_id)

    def _revoke_instance_locked(self, instance_id: str) -> None:
        for token in self._tokens_by_instance.get(instance_id, ()):
            self._tokens[token].revoked = True

    def issued_tokens_for(self, instance_id: str) -> list[str]:
        """The tokens issued for the instance, oldest first, revoked or expired too.

        Only the newest ``max_tokens`` tokens (across all instances) are remembered;
        a forgotten token is unknown to the endpoints, as a purged one is to Wix.
        """
        with self._lock:
            return list(self._tokens_by_instance.get(instance_id, ()))

    # -- the endpoints (called from handler threads) --------------------------------

    def _create_access_token(self, request: _Request) -> _Response:
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
            return _bad_request("UNSUPPORTED_GRANT_TYPE", "grant_type must be client_credentials")
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
            )
        instance_id: str = payload["instance_id"]
        with self._lock:
            if instance_id not in self._installations:
                return _error(
                    HTTPStatus.BAD_REQUEST,
                    "App is not installed on this instance",
                    "APP_NOT_INSTALLED",
                    "The app is not installed on the given instance_id",
                )
            lifetime = self._token_lifetime
            token = "OAUTH2." + secrets.token_urlsafe(32)
            self._tokens[token] = _IssuedToken(instance_id, self._clock() + lifetime)
            self._tokens_by_instance.setdefault(instance_id, collections.deque()).append(token)
            self._forget_oldest_locked()
        return _json_response(
            HTTPStatus.OK,
            {"access_token": token, "token_type": "Bearer", "expires_in": lifetime},
        )

    def _forget_oldest_locked(self) -> None:
        while len(self._tokens) > self._max_tokens:
            oldest = next(iter(self._tokens))
            instance_id = self._tokens.pop(oldest).instance_id
            # Tokens are issued in one order, so the oldest overall is its instance's oldest.
            per_instance = self._tokens_by_instance[instance_id]
            per_instance.popleft()
            if not per_instance:
                del self._tokens_by_instance[instance_id]

    def _authenticate(self, request: _Request) -> _Installation | _Response:
        """Find the installation a raw ``Authorization`` token belongs to."""
        token = request.authorization
        if not token:
            return _unauthorized("Missing Authorization header")
        if token.lower().startswith("bearer "):
            return _unauthorized("Send the raw access token, without a 'Bearer ' prefix")
        with self._lock:
            issued = self._tokens.get(token)
            if issued is None:
                return _unauthorized("Unknown access token")
            if issued.revoked:
                return _unauthorized("The access token was revoked")
            if self._clock() >= issued.expires_at:
                return _unauthorized("The access token has expired")
            installation = self._installations.get(issued.instance_id)
            if installation is None:
                return _unauthorized("The app is no longer installed on this instance")
            return installation

    def _send_bi_event(self, request: _Request) -> _Response:
        installation = self._authenticate(request)
        if isinstance(installation, _Response):
            return installation
        payload, refused = _parse_json(request.body)
        if refused is not None:
            return refused
        event = payload.get("eventName") if isinstance(payload, dict) else None
        if event != _FINISHED_CONFIGURATION:
            return _bad_request(
                "INVALID_EVENT_NAME", f"eventName must be {_FINISHED_CONFIGURATION}"
            )
        with self._lock:
            self._bi_events.append((installation.instance_id, event))
        return _json_response(HTTPStatus.OK, {})

    def _get_app_instance(self, request: _Request) -> _Response:
        installation = self._authenticate(request)
        if isinstance(installation, _Response):
            return installation
        return _json_response(
            HTTPStatus.OK,
            {
                "instance": {
                    "instanceId": installation.instance_id,
                    "appName": installation.app_name,
                    "isFree": True,
                    "appVersion": "latest",
                },
                "site": {
                    "siteId": installation.site_id,
                    "siteDisplayName": installation.site_display_name,
                    "locale": "en",
                },
            },
        )
