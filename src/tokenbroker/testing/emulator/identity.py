"""Who is calling the app: Token Info, and the credentials Wix hands the app's front ends.

``_Identity`` adds to the endpoints what a test needs to play the user's side: tokens
as Wix gives a dashboard or widget (``issue_token``), the legacy signed ``instance``
parameter (``sign_instance``), and ``POST /oauth2/token-info``, which describes any
token the emulator issued.

Sources: Token Info is documented (App Management > OAuth 2 > Token Info: ``active``,
``subjectType``, ``subjectId``, ``exp``, ``iat``, ``clientId``, ``accountId``,
``siteId``, ``instanceId``), and ``@wix/sdk`` calls it at
``https://www.wixapis.com/oauth2/token-info`` with ``{"token": ...}`` and no
``Authorization`` (seen in the SDK: ``build/get-token-info.js``). The signed instance is
documented (Build Apps > App Instances > Parse the App Instance Query Parameter, and
"App Instance (Client Side)"): ``<signature>.<data>``, both unpadded base64url, the
signature an HMAC-SHA256 of the data part under the app secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import attrs

from . import checks
from .endpoints import _WixEndpoints
from .records import _IssuedToken
from .responses import _Answer, _invalid_field, _json_response, _parse_json
from .server import _Request


def _b64url(data: bytes) -> str:
    # Documented: "Wix encoding does not add the padding character."
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as Wix writes ``signDate``: 2026-12-02T07:00:00.000Z."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _aware(name: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (it is sent in UTC)")
    return value


@attrs.define(eq=False, repr=False)
class _Identity(_WixEndpoints):
    """Token Info and the user-side credentials, on the endpoints' records and lock."""

    def issue_token(
        self,
        instance_id: str,
        *,
        subject_type: str = "USER",
        subject_id: str | None = None,
        client_id: str | None = None,
        lifetime: float | None = None,
    ) -> str:
        """A token as Wix gives the app's dashboard or widget, known to Token Info.

        ``subject_type`` is ``"USER"`` (a Wix user: by default the site owner),
        ``"MEMBER"``, ``"VISITOR"`` (by default a new random ID each) or ``"APP"``.
        With ``client_id`` it is a token of another app, which Token Info reports as
        that app's. ``lifetime`` is seconds (default: ``token_lifetime``). The token
        also authenticates Get App Instance and Send BI Event, and ``revoke``,
        ``revoke_instance`` and ``uninstall`` end it as they end the app's tokens.

        Raises:
            ValueError: The instance is not installed, or a value is out of range.
        """
        checks.text("instance_id", instance_id)
        checks.one_of("subject_type", subject_type, checks.SUBJECT_TYPES)
        checks.optional_text("subject_id", subject_id)
        checks.optional_text("client_id", client_id)
        if lifetime is not None:
            checks.positive("lifetime", lifetime)
        with self._lock:
            installation = self._installations.get(instance_id)
            if installation is None:
                raise ValueError(f"instance {instance_id!r} is not installed")
            client = client_id or self._app_id
            if subject_id is not None:
                subject = subject_id
            elif subject_type == "APP":
                subject = client
            elif subject_type == "USER":
                subject = installation.owner_id
            else:
                subject = str(uuid.uuid4())
            now = self._clock()
            expires_at = now + (self._token_lifetime if lifetime is None else lifetime)
            # Documented example token: "OauthNG.JWS.eyJ..." (Token Info).
            token = "OauthNG.JWS." + secrets.token_urlsafe(32)
            issued = _IssuedToken(instance_id, expires_at, now, subject_type, subject, client)
            self._issue_locked(token, issued)
        return token

    def sign_instance(
        self,
        instance_id: str,
        *,
        uid: str | None = None,
        aid: str | None = None,
        permissions: str = "OWNER",
        sign_date: datetime | None = None,
        secret: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """The legacy signed ``instance`` query parameter Wix gives the app's pages.

        ``<signature>.<data>``: data is the unpadded base64url of the JSON
        ``{"instanceId", "appDefId", "signDate", "uid" (or "aid"), "permissions",
        "demoMode": false, "siteOwnerId"}`` (and ``vendorProductId`` for a paid
        instance), then ``extra``'s fields; the signature is the unpadded base64url of
        HMAC-SHA256 of the data part, keyed with the app secret, or ``secret`` to forge
        one. ``uid`` names a Wix user (by default the site owner), ``aid`` an anonymous
        visitor instead; ``sign_date`` is a timezone-aware datetime (by default the
        emulator clock's now).

        Raises:
            ValueError: The instance is not installed, both ``uid`` and ``aid`` are
                given, or a value is out of range.
        """
        checks.text("instance_id", instance_id)
        checks.optional_text("uid", uid)
        checks.optional_text("aid", aid)
        if uid is not None and aid is not None:
            raise ValueError("give uid or aid, not both")
        checks.plain_str("permissions", permissions)
        signed_at = None if sign_date is None else _aware("sign_date", sign_date)
        checks.optional_text("secret", secret)
        more = {} if extra is None else checks.json_object("extra", extra)
        with self._lock:
            installation = self._installations.get(instance_id)
            if installation is None:
                raise ValueError(f"instance {instance_id!r} is not installed")
            if signed_at is None:
                signed_at = datetime.fromtimestamp(self._clock(), UTC)
            key = secret or self._app_secret
            data: dict[str, Any] = {
                "instanceId": instance_id,
                "appDefId": self._app_id,
                "signDate": iso_utc(signed_at),
            }
            if aid is not None:
                data["aid"] = aid
            else:
                data["uid"] = uid or installation.owner_id
            data.update(permissions=permissions, demoMode=False)
            data["siteOwnerId"] = installation.owner_id
            if installation.vendor_product_id is not None:
                data["vendorProductId"] = installation.vendor_product_id
        data.update(more)
        part = _b64url(json.dumps(data, separators=(",", ":")).encode())
        digest = hmac.new(key.encode(), part.encode("ascii"), hashlib.sha256).digest()
        return f"{_b64url(digest)}.{part}"

    def _token_info(self, request: _Request) -> _Answer:
        """``POST /oauth2/token-info``: what a token is, or ``{"active": false}``."""
        payload, refused = _parse_json(request.body)
        if refused is not None:
            return refused
        token = payload.get("token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            return _invalid_field("token", "token must be a non-empty string")
        with self._lock:
            issued = self._live_token_locked(token)
            if isinstance(issued, str):
                # Assumed, after RFC 7662 2.2: an inactive token is described by no
                # more than "active": false, whatever made it so.
                return _json_response(HTTPStatus.OK, {"active": False})
            installation = self._installations[issued.instance_id]
            answer = {
                "active": True,
                "subjectType": issued.subject_type,
                "subjectId": issued.subject_id,
                # Epoch seconds: the SDK's typing says number (get-token-info.d.ts);
                # Wix's documented example writes them as strings.
                "exp": int(issued.expires_at),
                "iat": int(issued.issued_at),
                "clientId": issued.client_id,
                "accountId": installation.account_id,
                "siteId": installation.site_id,
                "instanceId": installation.instance_id,
                "vendorProductId": installation.vendor_product_id,
            }
        return _json_response(HTTPStatus.OK, answer)
