"""Checks on the values a test gives the emulator's knobs.

A bad value is refused where it is given (``ValueError`` for a value out of range,
``TypeError`` for one of the wrong type), naming the knob, rather than surfacing later
as a broken answer or a handler thread dying mid-request.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Final

_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NOT_IN_VALUE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# Statuses whose answers cannot carry a body (RFC 9110 15.3.5, 15.3.6, 15.4.5).
BODYLESS: Final = frozenset({204, 205, 304})


def number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def non_negative(name: str, value: object) -> float:
    seconds = number(name, value)
    if seconds < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return seconds


def positive(name: str, value: object) -> float:
    seconds = number(name, value)
    if seconds <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return seconds


def integer(name: str, value: object, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return value


def text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def answer_status(status: object, *, body_given: bool) -> int:
    """A status the emulator can answer with a body: 200-599 but 204, 205 and 304.

    Wix's error shape, the default body, only fits an error status; a lower one
    (a 200 with a malformed body, say) needs the body given.
    """
    value = integer("status", status, low=200, high=599)
    if value in BODYLESS:
        raise ValueError(f"status {value} cannot carry a body, so it cannot be injected")
    if value < 400 and not body_given:
        raise ValueError(f"status {value} is not an error status: give the body to send with it")
    return value


def header_fields(headers: Mapping[str, str] | None) -> None:
    """Names must be tokens and values free of line breaks, or the answer breaks its framing."""
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name!r} is not an HTTP token")
        if not isinstance(value, str) or _NOT_IN_VALUE.search(value):
            raise ValueError(f"header {name} must be a str without control characters")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"header {name} must be Latin-1 text") from None


# The shapes the emulator can word its error answers in (see ``responses``).
ERROR_SHAPES: Final = ("wix", "ietf")
# The statuses Create Access Token may answer for an instance that is not installed.
NOT_INSTALLED_STATUSES: Final = (400, 401, 403, 404)
# Token Info's subject types (documented: OAuth 2 > Token Info, ``subjectType``).
SUBJECT_TYPES: Final = ("APP", "USER", "MEMBER", "VISITOR")


def one_of(name: str, value: object, allowed: tuple[object, ...]) -> None:
    """``value`` is one of ``allowed`` (of the same type as they are, bool never an int)."""
    kind = type(allowed[0])
    if isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind):
        article = "an" if kind.__name__[0] in "aeiou" else "a"
        raise TypeError(f"{name} must be {article} {kind.__name__}, got {value!r}")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def error_shape(name: str, value: object) -> None:
    one_of(name, value, ERROR_SHAPES)


def not_installed_status(name: str, value: object) -> None:
    one_of(name, value, NOT_INSTALLED_STATUSES)


def optional_text(name: str, value: object) -> None:
    if value is not None:
        text(name, value)


def plain_str(name: str, value: object) -> None:
    """A str, empty allowed (a display name, say)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")


def texts(name: str, value: object) -> tuple[str, ...]:
    """A list or tuple of non-empty strs (never one str, which would iterate by letter)."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise TypeError(f"{name} must be a list of str, got {type(value).__name__}")
    for item in value:
        text(f"{name} item", item)
    return tuple(value)


def json_object(name: str, value: object) -> dict[str, object]:
    """A mapping with str keys that ``json`` can encode, copied (later changes do not leak in)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping, got {type(value).__name__}")
    if not all(isinstance(key, str) for key in value):
        raise TypeError(f"{name} keys must be str")
    try:
        return dict(json.loads(json.dumps(dict(value), allow_nan=False)))
    except (TypeError, ValueError, RecursionError):
        raise TypeError(f"{name} must hold only JSON values") from None


def flag(name: str, value: object) -> None:
    """A bool (never an int standing in for one)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
