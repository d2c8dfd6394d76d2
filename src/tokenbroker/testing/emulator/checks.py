"""Checks on the values a test gives the emulator's knobs.

A bad value is refused where it is given (``ValueError`` for a value out of range,
``TypeError`` for one of the wrong type), naming the knob, rather than surfacing later
as a broken answer or a handler thread dying mid-request.
"""

from __future__ import annotations

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
