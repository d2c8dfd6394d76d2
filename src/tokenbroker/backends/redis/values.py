"""The bytes the Redis store keeps: tokens and installations as JSON documents of
the shared codec's fields, and what a read can find instead of a document.

Documents are compact JSON with sorted keys and raw UTF-8 (no ``\\u`` escapes),
so the same record always makes the same bytes: the compare-and-set scripts
compare stored bytes with what Python read and judged.
"""

from __future__ import annotations

from typing import Final, TypeAlias

from ...core.installation import Installation
from ...core.token import Token, TokenKey
from ..codec import (
    Corrupt,
    installation_fields,
    installation_from_fields,
    json_object,
    json_text,
    token_fields,
    token_from_fields,
)

__all__ = [
    "WRONG_TYPE",
    "Raw",
    "WrongType",
    "decode_installation",
    "decode_token",
    "encode_installation",
    "encode_token",
]


class WrongType:
    """What a GET reads from a key holding something other than a string."""

    def __repr__(self) -> str:
        return "WRONG_TYPE"


WRONG_TYPE: Final = WrongType()
Raw: TypeAlias = "bytes | WrongType | None"
"""What a GET gives back: the stored bytes, ``WRONG_TYPE``, or ``None`` (no key)."""


def _document(raw: bytes | WrongType) -> dict[str, object]:
    if isinstance(raw, WrongType):
        raise Corrupt("the key holds a value that is not a string")
    return json_object(raw, "the value")


def encode_token(token: Token) -> bytes:
    return json_text(token_fields(token), ensure_ascii=False).encode()


def decode_token(key: TokenKey, raw: bytes | WrongType) -> Token:
    """The token stored as ``raw`` under ``key``; ``Corrupt`` if it cannot be read."""
    return token_from_fields(key, _document(raw))


def encode_installation(inst: Installation) -> bytes:
    # The ids are in the document too: a record copied to another key is caught.
    document = {"app_id": inst.app_id, "instance_id": inst.instance_id}
    return json_text({**document, **installation_fields(inst)}, ensure_ascii=False).encode()


def decode_installation(app_id: str, instance_id: str, raw: bytes | WrongType) -> Installation:
    """The installation stored as ``raw``; ``Corrupt`` if it cannot be read or names
    another installation than the key it was read from."""
    document = _document(raw)
    if document.get("app_id") != app_id or document.get("instance_id") != instance_id:
        raise Corrupt("the record names another installation")
    return installation_from_fields(app_id, instance_id, document)
