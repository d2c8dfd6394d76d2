"""The legacy signed ``instance`` parameter, verified locally with the app secret.

Wix adds ``?instance=<signature>.<data>`` to the URLs of an app's dashboard
page and iframes (documented: "Parse the App Instance Query Parameter",
https://dev.wix.com/docs/build-apps/develop-your-app/access/app-instances/parse-the-app-instance-query-parameter,
and "App Instance (Client Side)" on Wix's developer forum):

- ``data`` is the base64url encoding of a JSON object with ``instanceId``,
  ``signDate``, ``uid`` (a Wix user) or ``aid`` (an anonymous visitor),
  ``permissions``, ``appDefId`` and more;
- ``signature`` is the base64url encoding of HMAC-SHA256 over the data part
  as it stands in the parameter (ASCII), keyed with the app secret;
- Wix does not pad either part with ``=`` (documented); padding is tolerated
  here, but only the exact padding the length calls for.

Everything else is strict: a bounded length, printable ASCII, canonical
base64url (no spare bits set: otherwise four spellings of one signature would
all pass), a JSON object without duplicate keys, a non-empty ``instanceId``, an
``appDefId`` (when present) equal to the app id, and a ``signDate`` no older
than a maximum age. Wix documents no expiry for the parameter: the maximum age
(24 hours by default) is tokenbroker's choice, so a leaked URL does not open
the dashboard forever. The signature is compared in constant time and checked
before anything in the data part is parsed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from datetime import datetime
from typing import Any, Final

from ..core.errors import ConfigError
from ..core.token import validate_id
from .identity_model import (
    BAD_SIGNATURE,
    CREDENTIAL_TOO_LONG,
    INSTANCE_EXPIRED,
    INSTANCE_FOR_ANOTHER_APP,
    INSTANCE_FROM_THE_FUTURE,
    MALFORMED_CREDENTIAL,
    MALFORMED_INSTANCE,
    NO_CREDENTIAL,
    IdentityRejected,
)

MAX_CREDENTIAL_LENGTH: Final = 16 * 1024
"""The longest credential looked at, in characters. Wix's instance parameters are
a few hundred characters and its access tokens about 1 KiB (assumed, from
samples): anything near this is an attack or a bug, refused before any work."""

SIGNATURE_LENGTH: Final = 43
"""Characters of an unpadded base64url HMAC-SHA256 (32 bytes)."""

_PRINTABLE: Final = re.compile(r"[\x21-\x7e]+")
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+")
_MAX_SIGN_DATE: Final = 64


def check_credential(credential: object) -> str:
    """``credential`` if it is a non-empty printable-ASCII string of bounded length.

    The length is checked first, so a huge input costs nothing more.
    """
    if not isinstance(credential, str):
        raise IdentityRejected(MALFORMED_CREDENTIAL)
    if not credential:
        raise IdentityRejected(NO_CREDENTIAL)
    if len(credential) > MAX_CREDENTIAL_LENGTH:
        raise IdentityRejected(CREDENTIAL_TOO_LONG)
    if not _PRINTABLE.fullmatch(credential):
        raise IdentityRejected(MALFORMED_CREDENTIAL)
    return credential


def looks_like_instance(credential: str) -> bool:
    """Whether ``credential`` has the shape of a signed ``instance`` parameter.

    The rule: exactly one ``.``, and the part before it as long as a base64url
    HMAC-SHA256: 43 characters, not counting any ``=`` after them (wrong
    padding is then refused by the verification, not sent to Wix). Wix's access tokens
    start with a short type prefix and a dot (Token Info's documented example is
    ``OauthNG.JWS.eyJ...``; Create Access Token's are ``OAUTH2.``-prefixed, seen
    in samples), and JWT-shaped ones have two or more dots, so none of them
    matches, not even ``OAUTH2.<43 characters>``. What does not match is sent to
    Token Info, which is Wix's own authority on it; what matches is verified
    here and never leaves the process. The characters are not looked at here,
    so a mangled signature is still refused locally rather than sent to Wix.
    """
    if credential.count(".") != 1:
        return False
    return len(credential.partition(".")[0].rstrip("=")) == SIGNATURE_LENGTH


def b64url_decode(part: str) -> bytes | None:
    """Strict base64url: unpadded or exactly padded, canonical; ``None`` if not."""
    body = part.rstrip("=")
    padding = len(part) - len(body)
    if not body or not _B64URL.fullmatch(body):
        return None
    remainder = len(body) % 4
    if remainder == 1:
        return None  # no byte string encodes to this length
    needed = (4 - remainder) % 4
    if padding and padding != needed:
        return None
    try:
        raw = base64.urlsafe_b64decode(body + "=" * needed)
    except (binascii.Error, ValueError):  # pragma: no cover - the checks above rule it out
        return None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != body:
        return None  # spare bits set: a second spelling of the same bytes
    return raw


def sign(data_part: str, secret: bytes) -> str:
    """The signature part Wix would put before ``data_part`` (unpadded base64url)."""
    digest = hmac.new(secret, data_part.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_instance(
    credential: str,
    secret: bytes,
    *,
    app_id: str,
    now: float,
    max_age: float,
    max_skew: float,
) -> dict[str, Any]:
    """The decoded data of a genuine, current ``instance`` parameter for ``app_id``,
    or ``IdentityRejected``. ``credential`` has passed ``check_credential``."""
    signature_part, dot, data_part = credential.partition(".")
    if not dot or "." in data_part:
        raise IdentityRejected(MALFORMED_INSTANCE)
    signature = b64url_decode(signature_part)
    if signature is None or len(signature) != hashlib.sha256().digest_size:
        raise IdentityRejected(MALFORMED_INSTANCE)
    if b64url_decode(data_part) is None:
        raise IdentityRejected(MALFORMED_INSTANCE)
    if not _signed(signature, data_part, secret):
        raise IdentityRejected(BAD_SIGNATURE)
    claims = _json_object(b64url_decode(data_part) or b"")
    if claims is None:
        raise IdentityRejected(MALFORMED_INSTANCE)
    _check_claims(claims, app_id=app_id, now=now, max_age=max_age, max_skew=max_skew)
    return claims


def _signed(signature: bytes, data_part: str, secret: bytes) -> bool:
    """HMAC-SHA256 of the data part as sent; a padded data part may also have been
    signed unpadded (Wix signs what it sends, and it sends no padding)."""
    message = data_part.encode("ascii")
    good = hmac.compare_digest(signature, hmac.new(secret, message, hashlib.sha256).digest())
    stripped = message.rstrip(b"=")
    if stripped != message:
        expected = hmac.new(secret, stripped, hashlib.sha256).digest()
        good = hmac.compare_digest(signature, expected) or good
    return good


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """A JSON object (no NaN, no duplicate keys), or ``None``; deep nesting too is malformed."""
    try:
        value = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _check_claims(
    claims: dict[str, Any], *, app_id: str, now: float, max_age: float, max_skew: float
) -> None:
    try:
        validate_id(claims.get("instanceId"), "instance id")
    except ConfigError:
        raise IdentityRejected(MALFORMED_INSTANCE) from None
    app = claims.get("appDefId")
    if app is not None:
        if not isinstance(app, str):
            raise IdentityRejected(MALFORMED_INSTANCE)
        if app != app_id:  # signed with our secret, yet another app's: refuse all the same
            raise IdentityRejected(INSTANCE_FOR_ANOTHER_APP)
    for name in ("uid", "aid", "siteId"):
        value = claims.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise IdentityRejected(MALFORMED_INSTANCE)
    signed = sign_date(claims.get("signDate"))
    if now - signed > max_age:
        raise IdentityRejected(INSTANCE_EXPIRED)
    if signed - now > max_skew:
        raise IdentityRejected(INSTANCE_FROM_THE_FUTURE)


def sign_date(value: object) -> float:
    """``signDate`` (ISO 8601 with a zone, e.g. ``2026-12-02T07:00:00.000Z``) in epoch seconds."""
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_SIGN_DATE:
        raise IdentityRejected(MALFORMED_INSTANCE)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise IdentityRejected(MALFORMED_INSTANCE) from None
    if moment.tzinfo is None:
        raise IdentityRejected(MALFORMED_INSTANCE)  # a time without a zone means nothing here
    return moment.timestamp()
