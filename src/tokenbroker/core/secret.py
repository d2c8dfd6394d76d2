"""A string that refuses to show itself."""

from __future__ import annotations

from typing import Final

_MASK: Final = "'**********'"


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
