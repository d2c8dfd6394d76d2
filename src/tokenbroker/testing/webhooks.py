"""Make Wix-shaped webhook bodies, genuine and forged, for tests and demos.

Wix signs each delivery with the app's private key, which only Wix holds; to
test a webhook endpoint we play Wix with a key pair of our own. The forgeries
(``alg: none``, HS256 keyed with the public PEM) are built by hand because
PyJWT rightly refuses to produce them, and a verifier is only trustworthy once
it has been shown to refuse them.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any, Final, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "DEFAULT_TTL",
    "forge_hs256",
    "forge_none",
    "make_key_pair",
    "sign_claims",
    "sign_webhook",
    "webhook_claims",
]

DEFAULT_TTL: Final = 300.0
"""Seconds between ``iat`` and ``exp`` when the caller does not choose: Wix-like."""


class _Default(enum.Enum):
    EXP = enum.auto()


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
    instance_id: str,
    data: Mapping[str, Any] | None = None,
    identity: Mapping[str, Any] | None = None,
    iat: float | None = None,
    exp: float | Literal[_Default.EXP] | None = _Default.EXP,
    extra_claims: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JWT claims of a Wix webhook, nested JSON strings and all.

    ``iat`` defaults to now and ``exp`` to ``iat + DEFAULT_TTL``; ``exp=None``
    leaves it out. ``extra_claims`` are merged last, so they can override.
    """
    issued = float(int(time.time())) if iat is None else iat
    envelope = {
        "eventType": event_type,
        "instanceId": instance_id,
        "data": json.dumps(dict(data or {})),
        "identity": json.dumps(dict(identity or {})),
    }
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
    instance_id: str,
    data: Mapping[str, Any] | None = None,
    identity: Mapping[str, Any] | None = None,
    iat: float | None = None,
    exp: float | Literal[_Default.EXP] | None = _Default.EXP,
    alg: str = "RS256",
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """A webhook body as Wix would POST it, signed with ``private_pem``.

    ``alg`` may name any asymmetric algorithm PyJWT can sign with that key
    (``RS512`` or ``PS256`` to prove a verifier refuses them); for ``none`` and
    HS256 forgeries use ``forge_none`` and ``forge_hs256``.
    """
    claims = webhook_claims(
        event_type=event_type,
        instance_id=instance_id,
        data=data,
        identity=identity,
        iat=iat,
        exp=exp,
        extra_claims=extra_claims,
    )
    return sign_claims(private_pem, claims, alg=alg)


def sign_claims(
    private_pem: str,
    claims: Mapping[str, Any],
    *,
    alg: str = "RS256",
    headers: Mapping[str, Any] | None = None,
) -> str:
    """Sign arbitrary claims: for bodies that are deliberately not Wix-shaped."""
    return jwt.encode(dict(claims), private_pem, algorithm=alg, headers=dict(headers or {}))


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


def _int_if_whole(value: float) -> float:
    # Wix sends whole seconds; keep fractional test times exact when given.
    return int(value) if float(value).is_integer() else value
