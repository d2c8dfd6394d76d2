"""Verify Wix webhook deliveries and turn them into typed events.

The whole POST body of a Wix webhook is a JWT signed RS256 with the app's key
pair; the app holds the public half. Anyone can POST to the webhook URL, so
every delivery is treated as hostile until its signature checks out: the body
is size-capped before anything parses it, the header's ``alg`` must be exactly
``RS256`` (the ``none`` and HS256-with-the-public-key forgeries die there), and
only ``RS256`` is ever handed to PyJWT.

Once the signature holds, ``tokenbroker.wix.webhooks.envelope`` reads the
``data`` claim: a JSON string, as Wix's SDK requires (anything else is a 400).

Time claims are checked here rather than by PyJWT so that an injected
``Clock`` (a ``ManualClock`` in tests, an ``OffsetClock`` in the demo) decides
what "now" is. The reasons carried by ``WebhookRejected`` are short fixed
strings: safe to answer with, never a traceback, never part of the body or key.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from ...core.clock import Clock, SystemClock, to_datetime
from ...core.errors import ConfigError
from ...core.token import validate_id
from ..errors import WebhookRejected
from .envelope import event_from_claims, json_object
from .events import WebhookEvent
from .keys import load_public_key, require_rsa

try:
    import jwt
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "tokenbroker's webhooks need PyJWT and cryptography: pip install 'tokenbroker[webhooks]'"
    ) from exc

__all__ = ["WebhookRejected", "WebhookVerifier", "load_public_key"]

log = logging.getLogger(__name__)

RETRY_HORIZON: Final = 48 * 3600.0
"""Wix retries a delivery for about 47 hours: an event without ``exp`` issued longer
ago than this (plus the verifier's ``leeway`` for clock skew) is refused as stale."""

ALGORITHM: Final = "RS256"
"""The one algorithm Wix signs webhooks with, and the only one ever accepted."""

# Only RS256 is even registered: no other algorithm can be reached by any path.
_JWS: Final = jwt.PyJWS(algorithms=[ALGORITHM])

_MAX_TIMESTAMP: Final = 253402300799  # 9999-12-31T23:59:59Z, the last datetime
_B64URL_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*")


# ----------------------------------------------------------------------- verifier


class WebhookVerifier:
    """Checks a webhook body and returns the typed event it carries.

    One verifier is built at start-up with the app's public key and shared by
    every request (it holds no per-request state, so it is thread-safe).
    ``app_id``, when given, makes events addressed to another app a 400: a
    shared webhook URL or a copied key must not let one app act on another's
    installations. ``leeway`` absorbs clock skew between Wix and this host.
    """

    __slots__ = ("_clock", "_key", "app_id", "leeway", "max_body_bytes")

    def __init__(
        self,
        public_key: RSAPublicKey | str,
        *,
        app_id: str | None = None,
        leeway: float = 60.0,
        max_body_bytes: int = 65536,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(public_key, str):
            public_key = load_public_key(public_key, source="WebhookVerifier public_key")
        self._key: RSAPublicKey = require_rsa(public_key, "WebhookVerifier public_key")
        self.app_id = None if app_id is None else validate_id(app_id, "app id")
        if isinstance(leeway, bool) or not isinstance(leeway, int | float):
            raise ConfigError(f"leeway must be a number of seconds, not {type(leeway).__name__}")
        if not math.isfinite(leeway) or leeway < 0:
            raise ConfigError(f"leeway must be a finite number of seconds >= 0, not {leeway}")
        self.leeway = float(leeway)
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
            raise ConfigError("max_body_bytes must be an int")
        if max_body_bytes <= 0:
            raise ConfigError(f"max_body_bytes must be positive, not {max_body_bytes}")
        self.max_body_bytes = max_body_bytes
        self._clock: Clock = clock if clock is not None else SystemClock()

    def __repr__(self) -> str:
        # The key is public, but nothing gains from printing it.
        return (
            f"WebhookVerifier(app_id={self.app_id!r}, leeway={self.leeway!r}, "
            f"max_body_bytes={self.max_body_bytes!r}, key=<RSA {self._key.key_size}>)"
        )

    def verify(self, body: bytes | str) -> WebhookEvent:
        """Return the event in ``body``, or raise ``WebhookRejected``.

        Checks run cheapest and least trusting first: size, shape, algorithm,
        signature; only a signed payload's claims are looked at.
        """
        try:
            event = self._verify(body)
        except WebhookRejected as exc:
            log.debug("webhook rejected: %s %s", exc.status, exc.reason)
            raise
        log.debug("webhook verified: %s for instance %s", event.event_type, event.instance_id)
        return event

    def _verify(self, body: bytes | str) -> WebhookEvent:
        raw = self._bounded_bytes(body)
        token = raw.strip()
        if not token:
            raise WebhookRejected(400, "empty body")
        _check_header(token)
        try:
            payload_bytes = _JWS.decode(token, self._key, algorithms=[ALGORITHM])
        except jwt.InvalidSignatureError:
            raise WebhookRejected(401, "bad signature") from None
        except jwt.DecodeError:
            raise WebhookRejected(400, "not a JWT") from None
        except jwt.PyJWTError:
            raise WebhookRejected(401, "invalid token") from None
        claims = json_object(payload_bytes)
        if claims is None:
            raise WebhookRejected(400, "malformed claims")
        issued_at = self._check_times(claims)
        return event_from_claims(claims, issued_at, app_id=self.app_id)

    def _bounded_bytes(self, body: bytes | str) -> bytes:
        # A str is at least one byte per character: its length alone can refuse
        # a huge body before anything (even encoding it) touches it.
        if isinstance(body, str):
            if len(body) > self.max_body_bytes:
                raise WebhookRejected(413, "body too large")
            body = body.encode("utf-8", "surrogatepass")
        if len(body) > self.max_body_bytes:
            raise WebhookRejected(413, "body too large")
        return body

    def _check_times(self, claims: Mapping[str, Any]) -> datetime:
        now = self._clock.time()
        if "iat" not in claims:
            raise WebhookRejected(400, "no iat")
        iat = _timestamp(claims["iat"], "iat")
        if iat > now + self.leeway:
            raise WebhookRejected(401, "issued in the future")
        if "exp" in claims:
            exp = _timestamp(claims["exp"], "exp")
            if exp < now - self.leeway:
                raise WebhookRejected(401, "expired")
        elif iat < now - RETRY_HORIZON - self.leeway:
            # Without exp, a signed event would be valid forever: anything older than
            # Wix's whole retry schedule is a replay, not a late delivery.
            raise WebhookRejected(401, "stale")
        if "nbf" in claims:
            nbf = _timestamp(claims["nbf"], "nbf")
            if nbf > now + self.leeway:
                raise WebhookRejected(401, "not yet valid")
        return to_datetime(iat)


# ------------------------------------------------------------------------ helpers


def _check_header(token: bytes) -> None:
    """Refuse anything that is not a three-part compact JWS with ``alg: RS256``.

    Done by hand, before PyJWT, so that the answer for a forged ``alg`` is a
    clear 401 and PyJWT is only ever given a token that claims RS256.
    """
    parts = token.split(b".")
    if len(parts) != 3:
        raise WebhookRejected(400, "not a JWT")
    header_seg, payload_seg, signature_seg = parts
    # The signature may be empty here: an ``alg: none`` forgery has none, and it
    # deserves "unsupported algorithm" rather than "not a JWT".
    if not header_seg or not payload_seg:
        raise WebhookRejected(400, "not a JWT")
    if not all(_B64URL_SEGMENT.fullmatch(p) for p in parts):
        raise WebhookRejected(400, "not a JWT")
    header_raw = _b64url_decode(header_seg)
    if header_raw is None or _b64url_decode(payload_seg) is None:
        raise WebhookRejected(400, "not a JWT")
    if _b64url_decode(signature_seg) is None:
        raise WebhookRejected(400, "not a JWT")
    header = json_object(header_raw)
    if header is None:
        raise WebhookRejected(400, "not a JWT")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg != ALGORITHM:
        raise WebhookRejected(401, "unsupported algorithm")
    if not signature_seg:
        raise WebhookRejected(401, "bad signature")


def _b64url_decode(segment: bytes) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None


def _timestamp(value: object, name: str) -> float:
    # bool is an int, NaN compares false to everything, and a negative or huge
    # value cannot become a datetime: all are malformed, not merely "old".
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WebhookRejected(400, f"malformed {name}")
    # Compared before float() so a 400-digit int cannot overflow it.
    if not 0 <= value <= _MAX_TIMESTAMP:  # also false for NaN
        raise WebhookRejected(400, f"malformed {name}")
    return float(value)
