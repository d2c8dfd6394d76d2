"""What identifying a caller yields: ``TokenInfo``, ``Identity``, ``IdentityRejected``.

``TokenInfo`` is Wix's Token Info answer (``POST {api}/oauth2/token-info``),
parsed strictly: a field of the wrong type is a ``ProviderError`` (Wix sent
something we cannot trust), never a guess. The field names and types are
documented by Wix (REST reference, "Token Info":
https://dev.wix.com/docs/rest/app-management/oauth-2/token-info) and seen in
Wix's SDK (``@wix/sdk`` ``get-token-info.d.ts``: ``clientId`` and
``instanceId`` may be missing, ``subjectType`` may be ``UNKNOWN``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, Literal

import attrs
import httpx2

from ..core.clock import to_datetime
from ..core.errors import ProviderError, TokenBrokerError
from .errors import request_id_of
from .http import json_object

# The reasons an ``IdentityRejected`` carries: short fixed phrases, safe to send
# back to the caller. None of them quotes the credential (nor is one a password).
# ruff: noqa: S105
NO_CREDENTIAL: Final = "no credential"
CREDENTIAL_TOO_LONG: Final = "credential too long"
MALFORMED_CREDENTIAL: Final = "malformed credential"
MALFORMED_INSTANCE: Final = "malformed instance"
BAD_SIGNATURE: Final = "bad signature"
INSTANCE_FOR_ANOTHER_APP: Final = "instance for another app"
INSTANCE_EXPIRED: Final = "instance expired"
INSTANCE_FROM_THE_FUTURE: Final = "instance signed in the future"
ANONYMOUS: Final = "anonymous caller"
INACTIVE_TOKEN: Final = "inactive token"
TOKEN_REFUSED: Final = "token refused by Wix"
TOKEN_FOR_ANOTHER_APP: Final = "token for another app"
TOKEN_WITHOUT_INSTANCE: Final = "token without instance"
TOKEN_EXPIRED: Final = "token expired"

REASONS: Final = frozenset(
    {
        NO_CREDENTIAL,
        CREDENTIAL_TOO_LONG,
        MALFORMED_CREDENTIAL,
        MALFORMED_INSTANCE,
        BAD_SIGNATURE,
        INSTANCE_FOR_ANOTHER_APP,
        INSTANCE_EXPIRED,
        INSTANCE_FROM_THE_FUTURE,
        ANONYMOUS,
        INACTIVE_TOKEN,
        TOKEN_REFUSED,
        TOKEN_FOR_ANOTHER_APP,
        TOKEN_WITHOUT_INSTANCE,
        TOKEN_EXPIRED,
    }
)
"""Every reason ``IdentityRejected`` can give."""

IDENTIFIED_SUBJECTS: Final = frozenset({"USER", "MEMBER"})
"""Token Info subject types that name a person: a Wix user (the dashboard) or a
logged-in site member. A ``VISITOR``, an ``APP`` or an ``UNKNOWN`` subject is
anonymous as far as ``identify`` is concerned."""

_MAX_FIELD: Final = 1024
_MAX_TIMESTAMP: Final = 253402300799  # 9999-12-31T23:59:59Z, the last datetime
_DIGITS: Final = re.compile(r"[0-9]{1,12}")
_Bad = Callable[[str], ProviderError]


class IdentityRejected(TokenBrokerError):
    """A credential that does not identify a caller of this app.

    ``reason`` is one of a few fixed phrases (``REASONS``) that is safe to send
    back, like ``WebhookRejected``'s: it never quotes the credential, the app
    secret or anything Wix said about the token.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"identity rejected: {reason}")
        self.reason = reason


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen
class TokenInfo:
    """Wix's Token Info answer about one token; the token itself is not kept.

    ``active`` is whether Wix accepts the token now; the other fields are
    ``None`` when Wix left them out (an inactive token's answer carries only
    ``active: false``; this is assumed, after RFC 7662, Wix documents none).
    ``raw`` is the answer as Wix sent it.
    """

    active: bool
    subject_type: str | None = None
    subject_id: str | None = None
    exp: datetime | None = None
    iat: datetime | None = None
    client_id: str | None = None
    account_id: str | None = None
    site_id: str | None = None
    instance_id: str | None = None
    vendor_product_id: str | None = None
    raw: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_mapping, repr=False, eq=False
    )

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON-ready values (times in ISO 8601, UTC)."""
        return {
            "active": self.active,
            "subject_type": self.subject_type,
            "subject_id": self.subject_id,
            "exp": None if self.exp is None else self.exp.isoformat(),
            "iat": None if self.iat is None else self.iat.isoformat(),
            "client_id": self.client_id,
            "account_id": self.account_id,
            "site_id": self.site_id,
            "instance_id": self.instance_id,
            "vendor_product_id": self.vendor_product_id,
        }


@attrs.frozen
class Identity:
    """Who is calling: an installation of the app, and the person behind it if known.

    ``source`` says what proved it: ``"instance"`` (the signed ``instance``
    parameter, checked locally with the app secret) or ``"token"`` (an access
    token, checked with Wix's Token Info). ``user_id`` is the Wix user's
    (``uid``) or, for a token, the subject's id when the subject is a user or a
    site member; ``anonymous`` is true when no person is identified (an
    instance with ``aid``, a visitor's token, an app's token). ``claims`` are the
    instance's decoded data or Token Info's answer, as Wix sent them.
    """

    instance_id: str
    user_id: str | None
    anonymous: bool
    site_id: str | None
    source: Literal["instance", "token"]
    claims: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_mapping, repr=False, eq=False
    )
    subject_type: str | None = None
    """Token Info's ``subjectType`` (``USER``, ``MEMBER``, ``VISITOR``, ``APP``,
    ``UNKNOWN``); ``None`` for an instance parameter, which has none."""

    def to_json(self) -> dict[str, Any]:
        """The identity as JSON-ready values, claims included."""
        return {
            "instance_id": self.instance_id,
            "user_id": self.user_id,
            "anonymous": self.anonymous,
            "site_id": self.site_id,
            "source": self.source,
            "subject_type": self.subject_type,
            "claims": dict(self.claims),
        }


# ------------------------------------------------------------------ parsing Token Info


def parse_token_info(response: httpx2.Response) -> TokenInfo:
    """Strictly parse a 200 answer to Token Info; anything odd is a ``ProviderError``."""
    status = response.status_code
    request_id = request_id_of(response)

    def bad(why: str) -> ProviderError:
        return ProviderError(
            f"Token Info: Wix answered {status} with {why}", status=status, request_id=request_id
        )

    body = json_object(response, bad)
    active = body.get("active")
    # Wix's own Token Info example writes it as a string ("active": "true"), the SDK's
    # types as a boolean (documented / seen in Wix's SDK): both are read, nothing else.
    if active in ("true", "false"):
        active = active == "true"
    if not isinstance(active, bool):
        raise bad("no boolean 'active'")
    if not active:
        return TokenInfo(active=False, raw=body)
    return TokenInfo(
        active=True,
        subject_type=_text(body, "subjectType", bad),
        subject_id=_text(body, "subjectId", bad),
        exp=_time(body, "exp", bad),
        iat=_time(body, "iat", bad),
        client_id=_text(body, "clientId", bad),
        account_id=_text(body, "accountId", bad),
        site_id=_text(body, "siteId", bad),
        instance_id=_text(body, "instanceId", bad),
        vendor_product_id=_text(body, "vendorProductId", bad),
        raw=body,
    )


def _text(body: Mapping[str, Any], name: str, bad: _Bad) -> str | None:
    """A string field: absent, ``null`` and ``""`` are ``None``; anything else must
    be a short string without control characters (ids reach logs and store keys)."""
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad(f"a {name!r} that is {type(value).__name__}, not a string")
    if len(value) > _MAX_FIELD:
        raise bad(f"a {name!r} of {len(value)} characters (at most {_MAX_FIELD})")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in value):
        raise bad(f"a {name!r} with control characters")
    return value


def _time(body: Mapping[str, Any], name: str, bad: _Bad) -> datetime | None:
    """Epoch seconds. The SDK types them as numbers (``get-token-info.d.ts``); Wix's
    documented example writes them as decimal strings (as its REST APIs render
    int64 fields), so both are accepted."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(f"a {name!r} that is not a number of seconds")
    if not 0 < value <= _MAX_TIMESTAMP:  # also false for NaN; compared before float()
        raise bad(f"a {name!r} out of range")
    return to_datetime(float(value))
