"""The token endpoint's rules (RFC 6749): reading the form, authenticating the
client, and deciding whether a token may be granted; answers in RFC 6749's shapes."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import urllib.parse
from typing import Final

import attrs

from ..emulator import checks
from ..emulator.server import _Request, _Response

AUTH_METHODS: Final = ("client_secret_basic", "client_secret_post")
REQUEST_ID_HEADER: Final = "x-request-id"
FORM: Final = "application/x-www-form-urlencoded"
NO_STORE: Final = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))
_CHALLENGE: Final = ("WWW-Authenticate", 'Basic realm="token"')


def json_answer(
    status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()
) -> _Response:
    body = json.dumps(payload).encode()
    return _Response(status, body, (("Content-Type", "application/json"), *headers))


def oauth_error(status: int, error: str, description: str, *more: tuple[str, str]) -> _Response:
    """An RFC 6749 5.2 error answer."""
    payload = {"error": error, "error_description": description}
    return json_answer(status, payload, (*NO_STORE, *more))


def auth_methods(name: str, value: object) -> None:
    for method in checks.texts(name, value):
        checks.one_of(name, method, AUTH_METHODS)


def parse_form(request: _Request) -> dict[str, str] | _Response:
    """The request's form (RFC 6749 4.4.2, each parameter at most once: 3.2), or the
    refusal."""
    media_type = (request.content_type or "").split(";", 1)[0].strip().lower()
    if media_type != FORM:
        return oauth_error(400, "invalid_request", f"Content-Type must be {FORM}")
    try:
        pairs = urllib.parse.parse_qsl(
            request.body.decode("ascii"), keep_blank_values=True, strict_parsing=True
        )
    except (UnicodeDecodeError, ValueError):
        return oauth_error(400, "invalid_request", "The body is not a form")
    form = dict(pairs)
    if len(form) != len(pairs):
        return oauth_error(400, "invalid_request", "A parameter is repeated")
    return form


@attrs.frozen
class TokenRules:
    """Who may have a token, and what the request must say (see ``OAuth2Server``)."""

    client_id: str
    client_secret: str = attrs.field(repr=False)
    auth_methods: tuple[str, ...]
    required_scope: str | None
    audience: str | None
    tenant_param: str | None

    def grant(self, authorization: str | None, form: dict[str, str]) -> str | _Response:
        """The tenant to issue a token for ("" outside the per-tenant mode), or the
        refusal."""
        if "grant_type" not in form:
            return oauth_error(400, "invalid_request", "Missing grant_type")
        if form["grant_type"] != "client_credentials":
            return oauth_error(400, "unsupported_grant_type", "Only client_credentials")
        refused = self.authenticate(authorization, form)
        if refused is not None:
            return refused
        if self.required_scope is not None:
            wanted = set(form.get("scope", "").split(" "))
            if not set(self.required_scope.split()) <= wanted:
                return oauth_error(400, "invalid_scope", f"Ask for {self.required_scope}")
        if self.audience is not None and form.get("audience") != self.audience:
            return oauth_error(400, "invalid_request", "Unknown audience")
        tenant = ""
        if self.tenant_param is not None:
            tenant = form.get(self.tenant_param, "")
            if not tenant:
                return oauth_error(400, "invalid_request", f"Missing {self.tenant_param}")
        return tenant

    def authenticate(self, authorization: str | None, form: dict[str, str]) -> _Response | None:
        """None when the client authenticated as RFC 6749 2.3 says; else the refusal.
        Records the method used in ``form["(auth)"]``."""
        scheme, _, encoded = (authorization or "").partition(" ")
        if authorization is not None and scheme.lower() == "basic":
            if "client_secret" in form:  # RFC 6749 2.3: one method, never two
                return oauth_error(400, "invalid_request", "More than one client authentication")
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return oauth_error(401, "invalid_client", "Malformed Basic credentials", _CHALLENGE)
            raw_id, colon, raw_secret = decoded.partition(":")
            if not colon:
                return oauth_error(401, "invalid_client", "Malformed Basic credentials", _CHALLENGE)
            method = "client_secret_basic"
            client_id = urllib.parse.unquote_plus(raw_id)
            secret = urllib.parse.unquote_plus(raw_secret)
        elif "client_secret" in form:
            method, client_id, secret = (
                "client_secret_post",
                form.get("client_id", ""),
                form["client_secret"],
            )
        else:
            return oauth_error(401, "invalid_client", "No client authentication", _CHALLENGE)
        form["(auth)"] = method
        # compare_digest on both, so a wrong id and a wrong secret cost the same
        id_ok = hmac.compare_digest(client_id.encode(), self.client_id.encode())
        secret_ok = hmac.compare_digest(secret.encode(), self.client_secret.encode())
        if method not in self.auth_methods or not (id_ok and secret_ok):
            status = 401 if method == "client_secret_basic" else 400
            more = (_CHALLENGE,) if status == 401 else ()
            return oauth_error(status, "invalid_client", "Client authentication failed", *more)
        return None
