"""The app's webhook public key, from whichever form it turns up in.

PEM, PEM with literal ``\\n`` escapes, base64-wrapped PEM, bare base64 DER, or a
path to a file holding one of those. Errors name where the value came from and
never repeat it.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Final

from ...core.errors import ConfigError

try:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "tokenbroker's webhooks need cryptography: pip install 'tokenbroker[webhooks]'"
    ) from exc

__all__ = ["DEFAULT_SOURCE", "load_public_key", "require_rsa"]

DEFAULT_SOURCE: Final = "TOKENBROKER_APP_PUBLIC_KEY"

# A key file is a few hundred bytes; refusing big files keeps a mistyped path
# (a log file, a disk image) from being read into memory.
_MAX_KEY_FILE_BYTES: Final = 64 * 1024
_MAX_PATH_LENGTH: Final = 4096
_PEM_MARKER = "-----BEGIN "


def load_public_key(value: str, *, source: str = DEFAULT_SOURCE) -> RSAPublicKey:
    """Load the app's RSA public key from the forms it turns up in.

    Wix's dashboard shows a PEM, sometimes base64-wrapped as a whole; env vars
    and secret managers often hold the PEM with literal ``\\n`` escapes; config
    files point at a file. All of those are accepted, and so is the bare base64
    key body without its BEGIN/END lines (what people copy out of the middle of
    a PEM). ``source`` names where the value came from so the ``ConfigError``
    can point at it; the error never repeats the value.
    """
    if not isinstance(value, str):
        raise ConfigError(f"{source} must be a string, not {type(value).__name__}")
    text = _unquote(value.strip())
    if not text:
        raise ConfigError(f"{source} is empty: set it to the app's public key (PEM)")
    if _PEM_MARKER not in text:
        path = _as_existing_file(text)
        if path is not None:
            return _key_from_text(_read_key_file(path, source), f"{source} (file {path})")
    return _key_from_text(text, source)


def _unquote(text: str) -> str:
    """Drop one pair of surrounding quotes, as left by ``KEY="..."`` in .env files."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1].strip()
    return text


def _as_existing_file(text: str) -> Path | None:
    if "\n" in text or len(text) > _MAX_PATH_LENGTH:
        return None
    expanded = os.path.expanduser(text)
    # os.path.isfile, unlike Path.is_file, swallows ENAMETOOLONG and NUL bytes.
    return Path(expanded) if os.path.isfile(expanded) else None


def _read_key_file(path: Path, source: str) -> str:
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {path}: {exc.strerror}") from None
    if len(raw) > _MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{source}: {path} is too large to be a public key file")
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: {path} is not a text PEM file") from None
    if not text:
        raise ConfigError(f"{source}: {path} is empty")
    return text


def _key_from_text(text: str, source: str) -> RSAPublicKey:
    """Parse PEM, escaped PEM, base64-wrapped PEM or a bare base64 DER key."""
    text = _unquote(text.strip())
    if _PEM_MARKER in text:
        return _key_from_pem(_normalise_pem(text), source)
    decoded = _b64decode_loose(text)
    if decoded is None:
        raise ConfigError(
            f"{source} is not a PEM public key, a base64-wrapped PEM, "
            "or a path to a file holding one"
        )
    if _PEM_MARKER.encode() in decoded:
        try:
            inner = decoded.decode("ascii")
        except UnicodeDecodeError:
            raise ConfigError(f"{source} is base64 of something that is not a PEM") from None
        return _key_from_pem(_normalise_pem(inner), source)
    try:
        key = serialization.load_der_public_key(decoded)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{source} is base64, but neither of a PEM nor of a DER public key"
        ) from None
    return require_rsa(key, source)


def _normalise_pem(text: str) -> str:
    """Undo the ways env vars and YAML mangle a PEM: escapes, CRLF, indentation."""
    text = text.replace("\\r", "").replace("\\n", "\n")
    lines = (line.strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line) + "\n"


def _b64decode_loose(text: str) -> bytes | None:
    compact = "".join(text.split())
    if not compact or not re.fullmatch(r"[A-Za-z0-9+/_-]+={0,2}", compact):
        return None
    compact = compact.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _key_from_pem(pem: str, source: str) -> RSAPublicKey:
    if "PRIVATE KEY-----" in pem:
        # Never echo it; just say what went wrong so the operator can rotate it.
        raise ConfigError(
            f"{source} holds a private key: give the app's public key instead "
            "(and treat that private key as exposed)"
        )
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
        raise ConfigError(f"{source} has PEM markers but is not a valid public key") from None
    return require_rsa(key, source)


def require_rsa(key: object, source: str) -> RSAPublicKey:
    if not isinstance(key, RSAPublicKey):
        raise ConfigError(f"{source} is {_key_kind(key)}, but Wix signs webhooks with an RSA key")
    return key


def _key_kind(key: object) -> str:
    kinds: tuple[tuple[type, str], ...] = (
        (ec.EllipticCurvePublicKey, "an EC key"),
        (ed25519.Ed25519PublicKey, "an Ed25519 key"),
        (ed448.Ed448PublicKey, "an Ed448 key"),
        (dsa.DSAPublicKey, "a DSA key"),
    )
    for cls, kind in kinds:
        if isinstance(key, cls):
            return kind
    return f"a {type(key).__name__.lstrip('_')}"
