"""Responses in the shapes Wix answers with, and the canned ones tests inject."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

import attrs

from .server import _Response

_JSON: Final = "application/json"


def _json_response(
    status: int, payload: Mapping[str, Any], headers: tuple[tuple[str, str], ...] = ()
) -> _Response:
    body = json.dumps(payload).encode()
    return _Response(status, body, (("Content-Type", _JSON), *headers))


def _error(
    status: int,
    message: str,
    code: str,
    description: str,
    headers: tuple[tuple[str, str], ...] = (),
) -> _Response:
    """Answer in Wix's standard error shape, which clients must parse."""
    payload = {
        "message": message,
        "details": {"applicationError": {"code": code, "description": description}},
    }
    return _json_response(status, payload, headers)


def _standard_error(status: int, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    try:
        known = HTTPStatus(status)
    except ValueError:
        return _error(
            status, "Injected failure", f"ERROR_{status}", "Injected by the emulator", headers
        )
    return _error(status, known.phrase, known.name, "Injected by the emulator", headers)


def _unauthorized(description: str) -> _Response:
    return _error(HTTPStatus.UNAUTHORIZED, "Unauthorized", "UNAUTHORIZED", description)


def _bad_request(code: str, description: str) -> _Response:
    return _error(HTTPStatus.BAD_REQUEST, "Bad Request", code, description)


def _refusal(status: int, message: str) -> _Response:
    """Wix's error shape for a request the server refused (malformed, too big, too slow)."""
    try:
        known = HTTPStatus(status)
        phrase, name = known.phrase, known.name
    except ValueError:
        phrase, name = "Error", f"ERROR_{status}"
    return _error(status, phrase, name, message)


def _failure(
    status: int, body: bytes | str | Mapping[str, Any] | None, headers: Mapping[str, str] | None
) -> _Response:
    """The answer ``WixEmulator.fail_next`` queues."""
    if body is None:
        response = _standard_error(status)
    elif isinstance(body, Mapping):
        response = _json_response(status, body)
    else:
        raw = body.encode() if isinstance(body, str) else bytes(body)
        response = _Response(status, raw, (("Content-Type", "text/plain; charset=utf-8"),))
    return attrs.evolve(response, headers=_merge_headers(response.headers, headers))


def _garbage(status: int, body: bytes) -> _Response:
    """The answer ``WixEmulator.garbage_next`` queues."""
    return _Response(status, bytes(body), (("Content-Type", "text/html; charset=utf-8"),))


def _rate_limited(retry_after: float | None) -> _Response:
    """The answer ``WixEmulator.rate_limit_next`` queues."""
    headers: tuple[tuple[str, str], ...] = ()
    if retry_after is not None:
        headers = (("Retry-After", _format_retry_after(retry_after)),)
    return _error(
        HTTPStatus.TOO_MANY_REQUESTS,
        "Too Many Requests",
        "TOO_MANY_REQUESTS",
        "Rate limit exceeded",
        headers,
    )


def _merge_headers(
    defaults: tuple[tuple[str, str], ...], overrides: Mapping[str, str] | None
) -> tuple[tuple[str, str], ...]:
    """Let a test replace default headers by name; framing headers stay ours."""
    if not overrides:
        return defaults
    replaced = {name.lower() for name in overrides}
    kept = tuple((name, value) for name, value in defaults if name.lower() not in replaced)
    extra = tuple(
        (name, value)
        for name, value in overrides.items()
        if name.lower() not in {"content-length", "transfer-encoding", "connection"}
    )
    return kept + extra


def _format_retry_after(seconds: float) -> str:
    # Retry-After is whole seconds on the wire (RFC 9110 10.2.3); rounding up never
    # tells a client to come back sooner than asked.
    return str(math.ceil(seconds))
