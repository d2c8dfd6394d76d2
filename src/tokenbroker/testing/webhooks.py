"""Make Wix-shaped webhook bodies, genuine and forged, for tests and demos.

Wix signs each delivery with the app's private key, which only Wix holds; to
test a webhook endpoint we play Wix with a key pair of our own. The forgeries
(``alg: none``, HS256 keyed with the public PEM) are built by hand because
PyJWT rightly refuses to produce them, and a verifier is only trustworthy once
it has been shown to refuse them.

The bodies are shaped as Wix's SDK reads them (``parseJWT`` and ``runHandler`` in
``@wix/sdk`` ``event-handlers-modules.js``): the ``data`` claim is a JSON string
``{eventType, instanceId, data: <JSON string>, identity: <JSON string>,
accountInfo: {...}}``; a standardized event's nested ``data`` is built by
``domain_event`` (``app_installation_event`` for the App Installations API's
events), and ``sign_domain_event`` signs one. The header carries a ``kid``
(assumed: what Wix puts there is not documented; this one is derived from the key).
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..wix.webhooks.events import APP_INSTALLATION_FQDN, domain_event_type

__all__ = [
    "APP_INSTALLATION_CREATED",
    "APP_INSTALLATION_UPDATED",
    "DEFAULT_TTL",
    "app_installation_event",
    "domain_event",
    "forge_hs256",
    "forge_none",
    "key_id",
    "make_key_pair",
    "sign_claims",
    "sign_domain_event",
    "sign_webhook",
    "webhook_claims",
]

DEFAULT_TTL: Final = 300.0
"""Seconds between ``iat`` and ``exp`` when the caller does not choose: Wix-like."""


APP_INSTALLATION_CREATED: Final = domain_event_type(APP_INSTALLATION_FQDN, "created")
"""The ``eventType`` of App Installation Created (assumed ``<entityFqdn>_<slug>``)."""
APP_INSTALLATION_UPDATED: Final = domain_event_type(APP_INSTALLATION_FQDN, "updated")
"""The ``eventType`` of App Installation Updated (assumed ``<entityFqdn>_<slug>``)."""

DomainKind = Literal["created", "updated", "deleted", "action"]
_KINDS: Final[dict[str, DomainKind]] = {
    "created": "created",
    "updated": "updated",
    "deleted": "deleted",
}


class _Default(enum.Enum):
    EXP = enum.auto()
    KID = enum.auto()
    ID = enum.auto()


def make_key_pair(label: str = "default", *, fresh: bool = False) -> tuple[str, str]:
    """Return ``(private_pem, public_pem)`` for an RSA 2048 key pair.

    RSA key generation takes tens of milliseconds, so one pair is made per
    ``label`` per process; ask for another label (``"other"``) when a test
    needs a second, unrelated key, or ``fresh=True`` for a pair nobody else
    will ever be handed.
    """
    return _new_key_pair() if fresh else _key_pair(label)


@functools.cache
def _key_pair(label: str) -> tuple[str, str]:
    del label  # only the cache key
    return _new_key_pair()


def _new_key_pair() -> tuple[str, str]:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public_pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return private_pem, public_pem


def webhook_claims(
    *,
    event_type: str,
    instance_id: str | None,
    data: Mapping[str, Any] | None = None,
    identity: Mapping[str, Any] | None = None,
    iat: float | None = None,
    exp: float | Literal[_Default.EXP] | None = _Default.EXP,
    account_info: Mapping[str, Any] | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JWT claims of a Wix webhook, nested JSON strings and all.

    ``iat`` defaults to now and ``exp`` to ``iat + DEFAULT_TTL``; ``exp=None``
    leaves it out. ``account_info`` (``{"accountId", "parentAccountId", "siteId"}``)
    goes beside ``eventType`` as an object; ``instance_id=None`` leaves
    ``instanceId`` out. ``extra_claims`` are merged last, so they can override.
    """
    issued = float(int(time.time())) if iat is None else iat
    envelope: dict[str, Any] = {"eventType": event_type}
    if instance_id is not None:
        envelope["instanceId"] = instance_id
    envelope["data"] = json.dumps(dict(data or {}))
    envelope["identity"] = json.dumps(dict(identity or {}))
    if account_info is not None:
        envelope["accountInfo"] = dict(account_info)
    claims: dict[str, Any] = {"data": json.dumps(envelope), "iat": _int_if_whole(issued)}
    if exp is _Default.EXP:
        claims["exp"] = _int_if_whole(issued + DEFAULT_TTL)
    elif exp is not None:
        claims["exp"] = _int_if_whole(exp)
    claims.update(extra_claims or {})
    return claims


def sign_webhook(
    private_pem: str,
    *,
    event_type: str,
    instance_id: str | None,
    data: Mapping[str, Any] | None = None,
    identity: Mapping[str, Any] | None = None,
    iat: float | None = None,
    exp: float | Literal[_Default.EXP] | None = _Default.EXP,
    alg: str = "RS256",
    account_info: Mapping[str, Any] | None = None,
    kid: str | Literal[_Default.KID] | None = _Default.KID,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """A webhook body as Wix would POST it, signed with ``private_pem``.

    ``alg`` may name any asymmetric algorithm PyJWT can sign with that key
    (``RS512`` or ``PS256`` to prove a verifier refuses them); for ``none`` and
    HS256 forgeries use ``forge_none`` and ``forge_hs256``. ``kid`` defaults to
    ``key_id(private_pem)``; ``None`` leaves it out of the header.
    """
    claims = webhook_claims(
        event_type=event_type,
        instance_id=instance_id,
        data=data,
        identity=identity,
        iat=iat,
        exp=exp,
        account_info=account_info,
        extra_claims=extra_claims,
    )
    return sign_claims(private_pem, claims, alg=alg, kid=kid)


def sign_domain_event(
    private_pem: str,
    event: Mapping[str, Any],
    *,
    instance_id: str | None,
    event_type: str | None = None,
    identity: Mapping[str, Any] | None = None,
    iat: float | None = None,
    exp: float | Literal[_Default.EXP] | None = _Default.EXP,
    account_info: Mapping[str, Any] | None = None,
    kid: str | Literal[_Default.KID] | None = _Default.KID,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """A standardized event's body: ``event`` (from ``domain_event``) as the nested
    ``data``; ``event_type`` defaults to ``<entityFqdn>_<slug>`` (assumed)."""
    if event_type is None:
        event_type = domain_event_type(str(event["entityFqdn"]), str(event["slug"]))
    return sign_webhook(
        private_pem,
        event_type=event_type,
        instance_id=instance_id,
        data=event,
        identity=identity,
        iat=iat,
        exp=exp,
        account_info=account_info,
        kid=kid,
        extra_claims=extra_claims,
    )


def domain_event(
    entity_fqdn: str,
    slug: str,
    *,
    kind: DomainKind | None = None,
    entity: Mapping[str, Any] | None = None,
    body: Mapping[str, Any] | None = None,
    modified_fields: Mapping[str, Any] | None = None,
    event_id: str | Literal[_Default.ID] | None = _Default.ID,
    entity_id: str | None = None,
    event_time: datetime | float | str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The nested ``data`` of a standardized event, as the SDK's ``runHandler`` reads it.

    ``kind`` defaults to ``slug`` when that is ``created``, ``updated`` or ``deleted``,
    else ``action``: the entity goes in ``createdEvent.entity``,
    ``updatedEvent.currentEntity`` (with ``modifiedFields``) or
    ``deletedEvent.deletedEntity``; an action's ``body`` in ``actionEvent.body``.
    ``event_id`` defaults to a fresh UUID (``None`` leaves ``id`` out); ``event_time``
    (a datetime, epoch seconds or a string sent as it is) defaults to now, written
    as Wix does: ISO 8601 UTC with milliseconds and ``Z``. ``extra`` is merged last.
    """
    if kind is None:
        kind = _KINDS.get(slug, "action")
    event: dict[str, Any] = {}
    if event_id is _Default.ID:
        event["id"] = str(uuid.uuid4())
    elif event_id is not None:
        event["id"] = event_id
    event["entityFqdn"] = entity_fqdn
    event["slug"] = slug
    if entity_id is not None:
        event["entityId"] = entity_id
    event["eventTime"] = _iso_time(event_time)
    if kind == "created":
        event["createdEvent"] = {"entity": dict(entity or {})}
    elif kind == "updated":
        updated: dict[str, Any] = {"currentEntity": dict(entity or {})}
        if modified_fields is not None:
            updated["modifiedFields"] = dict(modified_fields)
        event["updatedEvent"] = updated
    elif kind == "deleted":
        event["deletedEvent"] = {} if entity is None else {"deletedEntity": dict(entity)}
    else:
        event["actionEvent"] = {"body": dict(body or {})}
    event.update(extra or {})
    return event


def app_installation_event(
    slug: Literal["created", "updated"],
    *,
    app_id: str,
    instance_id: str,
    status: str = "INSTALLED",
    event_id: str | Literal[_Default.ID] | None = _Default.ID,
    event_time: datetime | float | str | None = None,
    entity: Mapping[str, Any] | None = None,
    modified_fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The nested ``data`` of App Installation Created or Updated: the App Installation
    object (documented fields ``appId``, ``instanceId``, ``status``, ...; ``entity``
    adds or overrides any) as the created or current entity."""
    installation = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{app_id}/{instance_id}")),
        "appId": app_id,
        "instanceId": instance_id,
        "status": status,
        **(entity or {}),
    }
    return domain_event(
        APP_INSTALLATION_FQDN,
        slug,
        entity=installation,
        modified_fields=modified_fields,
        event_id=event_id,
        entity_id=str(installation["id"]),
        event_time=event_time,
    )


def sign_claims(
    private_pem: str,
    claims: Mapping[str, Any],
    *,
    alg: str = "RS256",
    headers: Mapping[str, Any] | None = None,
    kid: str | Literal[_Default.KID] | None = None,
) -> str:
    """Sign arbitrary claims: for bodies that are deliberately not Wix-shaped.

    ``kid`` is put in the header when given (``sign_webhook`` gives ``key_id``'s).
    """
    header = dict(headers or {})
    if kid is _Default.KID:
        kid = key_id(private_pem)
    if kid is not None:
        header.setdefault("kid", kid)
    return jwt.encode(dict(claims), private_pem, algorithm=alg, headers=header)


@functools.lru_cache(maxsize=16)
def key_id(private_pem: str) -> str:
    """A stable key id for ``private_pem``'s key pair: the first 16 hex digits of the
    SHA-256 of its public key (DER). Wix's ``kid`` values are not documented."""
    private_key = serialization.load_pem_private_key(private_pem.encode("ascii"), password=None)
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def forge_hs256(public_pem: str, claims: Mapping[str, Any], *, header_alg: str = "HS256") -> str:
    """The key-confusion forgery: HMAC-SHA256 keyed with the *public* key PEM.

    A verifier that lets the token pick its algorithm would check this HMAC with
    the PEM it holds and accept it. ``header_alg="RS256"`` makes the header lie
    too, so the forgery reaches the signature check itself.
    """
    signing_input = _segment({"alg": header_alg, "typ": "JWT"}) + "." + _segment(claims)
    mac = hmac.new(public_pem.encode("ascii"), signing_input.encode("ascii"), hashlib.sha256)
    return signing_input + "." + _b64url(mac.digest())


def forge_none(claims: Mapping[str, Any], *, header_alg: str = "none") -> str:
    """The unsigned token: ``alg: none`` and an empty signature segment."""
    return _segment({"alg": header_alg, "typ": "JWT"}) + "." + _segment(claims) + "."


def _segment(obj: Mapping[str, Any]) -> str:
    return _b64url(json.dumps(dict(obj), separators=(",", ":")).encode("utf-8"))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _iso_time(moment: datetime | float | str | None) -> str:
    if isinstance(moment, str):
        return moment
    if moment is None:
        moment = time.time()
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, tz=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int_if_whole(value: float) -> float:
    # Wix sends whole seconds; keep fractional test times exact when given.
    return int(value) if float(value).is_integer() else value
