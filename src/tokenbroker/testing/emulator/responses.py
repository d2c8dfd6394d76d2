"""Responses in the shapes Wix answers with, and the canned ones tests inject.

An error is built as a ``_Problem``, not yet worded: the emulator words it when it is
sent, in the shape its ``error_shape`` knob names then, so one fault queued before the
knob changes is answered in the new shape. The two shapes:

* ``"wix"``: Wix's standard error shape, documented in "About Errors" (Wix REST API
  reference, Getting Started > Errors): ``{"message", "details": {"applicationError":
  {"code", "description", "data"}}}``, or ``{"message", "details": {"validationError":
  {"fieldViolations": [...]}}}`` for input that fails validation. ``@wix/sdk`` reads
  the same shape (``build/fetch-error.js``, ``build/rest-modules.js``).
* ``"ietf"``: ``{"error", "error_description"}`` (RFC 6749 section 5.2). Documented for
  Create Access Token only ("Error details follow the conventions of the Internet
  Engineering Task Force (IETF)", OAuth 2 > Create Access Token); the emulator uses it
  for every answer when asked, so a client is tested against both.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final, TypeAlias

import attrs

from .server import _Response

_JSON: Final = "application/json"

# RFC 6749 4.1.2.1 names these two; any other Wix code is sent lower-cased in the ietf
# shape (assumed: no RFC has a code for "not found" or "too many requests").
_IETF_CODES: Final[Mapping[str, str]] = {
    "INTERNAL_SERVER_ERROR": "server_error",
    "SERVICE_UNAVAILABLE": "temporarily_unavailable",
}


@attrs.frozen
class _Violation:
    """One entry of a validation error's ``fieldViolations`` (documented: About Errors)."""

    field: str
    description: str
    # "REQUIRED_FIELD" and the like; the values are assumed, the key is documented.
    violated_rule: str = "REQUIRED_FIELD"


@attrs.frozen
class _Problem:
    """An error answer, worded in either shape when it is sent."""

    status: int
    message: str
    code: str
    description: str
    # The RFC 6749 code, where the endpoint has one; else derived from ``code``.
    ietf_error: str | None = None
    # The ietf ``error_description``, where it differs from ``description``.
    ietf_description: str | None = None
    # Non-empty for a validation error: then the wix shape sends these, not the code.
    violations: tuple[_Violation, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def render(self, shape: str) -> _Response:
        payload: dict[str, Any]
        if shape == "ietf":
            error = self.ietf_error or _IETF_CODES.get(self.code, self.code.lower())
            payload = {
                "error": error,
                "error_description": self.ietf_description or self.description,
            }
        elif self.violations:
            violations = [
                {"field": v.field, "description": v.description, "violatedRule": v.violated_rule}
                for v in self.violations
            ]
            payload = {
                "message": self.message,
                "details": {"validationError": {"fieldViolations": violations}},
            }
        else:
            payload = {
                "message": self.message,
                "details": {
                    "applicationError": {
                        "code": self.code,
                        "description": self.description,
                        "data": {},
                    }
                },
            }
        response = _json_response(self.status, payload)
        return attrs.evolve(response, headers=_merge_headers(response.headers, dict(self.headers)))


# What an endpoint answers: a response as it is, or a problem to word.
_Answer: TypeAlias = _Response | _Problem


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
    *,
    ietf_error: str | None = None,
) -> _Problem:
    """An application error, which clients must parse."""
    return _Problem(status, message, code, description, ietf_error=ietf_error, headers=headers)


def _standard_error(status: int, headers: tuple[tuple[str, str], ...] = ()) -> _Problem:
    try:
        known = HTTPStatus(status)
    except ValueError:
        return _error(
            status, "Injected failure", f"ERROR_{status}", "Injected by the emulator", headers
        )
    return _error(status, known.phrase, known.name, "Injected by the emulator", headers)


def _unauthorized(description: str) -> _Problem:
    # RFC 6750 3.1 names a bad access token invalid_token.
    return _error(
        HTTPStatus.UNAUTHORIZED,
        "Unauthorized",
        "UNAUTHORIZED",
        description,
        ietf_error="invalid_token",
    )


def _bad_request(code: str, description: str) -> _Problem:
    return _error(
        HTTPStatus.BAD_REQUEST, "Bad Request", code, description, ietf_error="invalid_request"
    )


def _invalid_field(field: str, description: str) -> _Problem:
    """A validation error naming one field (a required one missing, or of the wrong type)."""
    return _Problem(
        HTTPStatus.BAD_REQUEST,
        description,
        "INVALID_ARGUMENT",
        description,
        ietf_error="invalid_request",
        violations=(_Violation(field, description),),
    )


def _refusal(status: int, message: str) -> _Problem:
    """The error for a request the server refused (malformed, too big, too slow)."""
    try:
        known = HTTPStatus(status)
        phrase, name = known.phrase, known.name
    except ValueError:
        phrase, name = "Error", f"ERROR_{status}"
    ietf = "invalid_request" if 400 <= status < 500 else None
    return _error(status, phrase, name, message, ietf_error=ietf)


def _failure(
    status: int, body: bytes | str | Mapping[str, Any] | None, headers: Mapping[str, str] | None
) -> _Answer:
    """The answer ``WixEmulator.fail_next`` queues: a body given is sent as it is."""
    if body is None:
        problem = _standard_error(status)
        return attrs.evolve(problem, headers=_merge_headers(problem.headers, headers))
    if isinstance(body, Mapping):
        response = _json_response(status, body)
    else:
        raw = body.encode() if isinstance(body, str) else bytes(body)
        response = _Response(status, raw, (("Content-Type", "text/plain; charset=utf-8"),))
    return attrs.evolve(response, headers=_merge_headers(response.headers, headers))


def _parse_json(body: bytes) -> tuple[Any, _Problem | None]:
    """The body's JSON value, or the 400 to answer; nesting too deep for the parser is a 400."""
    try:
        return json.loads(body), None
    except (ValueError, RecursionError):
        return None, _bad_request("INVALID_JSON", "The request body is not valid JSON")


def _garbage(status: int, body: bytes) -> _Response:
    """The answer ``WixEmulator.garbage_next`` queues."""
    return _Response(status, bytes(body), (("Content-Type", "text/html; charset=utf-8"),))


def _rate_limited(retry_after: float | None) -> _Problem:
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
