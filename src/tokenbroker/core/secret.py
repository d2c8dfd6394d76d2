"""A string that refuses to show itself, and scrubbing secrets out of text."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

_MASK: Final = "'**********'"
_ANYWHERE_FROM: Final = 12
# A secret stands alone when no identifier character touches it: `http` in
# `https://` or `s` in `auto_finish_setup` is part of a word, not the secret.
_WORD: Final = "A-Za-z0-9_-"


class Secret:
    """Holds a secret string; ``repr``/``str`` show a mask, ``reveal()`` the value.

    Equality compares values in constant time so a ``Secret`` can be checked
    without leaking its length through timing.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        self._value = value.reveal() if isinstance(value, Secret) else value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_MASK})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        import hmac  # noqa: PLC0415 - only needed on this rare path

        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))


def scrub_secrets(text: str, secrets: Iterable[str], *, anywhere_from: int = _ANYWHERE_FROM) -> str:
    """``text`` with each of ``secrets`` replaced by ``***`` where it stands as a whole value.

    A secret shorter than 12 characters is replaced only where no letter, digit,
    ``_`` or ``-`` touches it, so a short secret does not star out ordinary
    words. A longer one is replaced wherever it appears: twelve characters
    matching the secret inside other text are a leak (``%3D`` before it, or
    something pasted onto it), not a coincidence. ``anywhere_from=0`` replaces
    every secret wherever it appears (store passwords in driver messages, where
    hiding too much costs nothing). Longest first, so a secret that contains
    another is hidden whole.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if len(secret) >= anywhere_from:
            text = text.replace(secret, "***")
        else:
            text = re.sub(f"(?<![{_WORD}]){re.escape(secret)}(?![{_WORD}])", "***", text)
    return text
