"""A token endpoint's error answers, read from the RFC 6749 section 5.2 body.

``{"error": "<code>", "error_description": "...", "error_uri": "..."}`` is what
RFC 6749 section 5.2 prescribes; a plain-text body is quoted (scrubbed, cut
short), an HTML page or an empty body only named. Every text is scrubbed of the
client secret before it is cut or quoted. ``error_class`` maps the answer to an
error class; each rule says where it comes from.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

import attrs
import httpx2

from ..core.errors import (
    InvalidCredentials,
    ProviderError,
    RateLimited,
    TransientProviderError,
)

Scrub = Callable[[str], str]

CREDENTIAL_CODES: Final = frozenset({"invalid_client", "unauthorized_client"})
"""RFC 6749 5.2: the client failed to authenticate, or may not use this grant."""
CONFIGURATION_CODES: Final = frozenset(
    {"invalid_request", "invalid_scope", "unsupported_grant_type", "invalid_grant"}
)
"""RFC 6749 5.2: the request as configured is wrong; sending it again cannot help."""
TRANSIENT_CODES: Final = frozenset({"server_error", "temporarily_unavailable"})
"""RFC 6749 4.1.2.1 names these for the authorization endpoint; token endpoints
send them too, with a 4xx now and then (assumed: they mean what they say)."""

_MAX_TEXT: Final = 300
_SPACE: Final = re.compile(r"[\s\x00-\x1f\x7f]+")
# RFC 6749 5.2: error is NQSCHAR, %x20-21 / %x23-5B / %x5D-7E.
_CODE: Final = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,100}")
_REQUEST_ID: Final = re.compile(r"[\x21-\x7e]{1,128}")


def _text(value: object, scrub: Scrub) -> str | None:
    """``value`` as one scrubbed line of at most 300 characters (scrubbed before
    it is cut, so no part of a secret survives the cut), or ``None``."""
    if not isinstance(value, str):
        return None
    line = scrub(_SPACE.sub(" ", value).strip())[:_MAX_TEXT].strip()
    return line or None


def request_id_of(response: httpx2.Response, header: str, scrub: Scrub) -> str | None:
    """The answer's request id (``header``), if it is 1 to 128 printable ASCII
    characters and holds nothing ``scrub`` would hide (assumed: an id worth
    quoting is an opaque token)."""
    value = response.headers.get(header, "").strip()
    if not _REQUEST_ID.fullmatch(value) or scrub(value) != value:
        return None
    return value


@attrs.frozen
class ErrorAnswer:
    """What one error answer says; every text already scrubbed."""

    status: int
    shape: str
    """``oauth`` (RFC 6749 5.2), ``json`` (JSON without ``error``), ``text``,
    ``html`` or ``empty``."""
    code: str | None = None
    description: str | None = None
    request_id: str | None = None

    def summary(self) -> str:
        said = f"answered {self.status}"
        if self.shape == "html":
            return f"{said} with an HTML page"
        if self.shape == "empty":
            return f"{said} with an empty body"
        if self.shape == "json":
            return f"{said} with JSON that is not an RFC 6749 error object"
        if self.code:
            said += f" {self.code}"
        if self.description:
            said += f": {self.description}"
        return said


def read_error(response: httpx2.Response, scrub: Scrub, request_id_header: str) -> ErrorAnswer:
    """What a non-2xx ``response`` says, in any shape."""
    status = response.status_code
    request_id = request_id_of(response, request_id_header, scrub)
    if not response.content.strip():
        return ErrorAnswer(status, "empty", request_id=request_id)
    try:
        body = response.json()
    except ValueError:  # not JSON, or not UTF-8
        html = "html" in response.headers.get("Content-Type", "").lower()
        if html or response.text.lstrip()[:1] == "<":  # a proxy's page: named, not quoted
            return ErrorAnswer(status, "html", request_id=request_id)
        return ErrorAnswer(
            status, "text", description=_text(response.text, scrub), request_id=request_id
        )
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return ErrorAnswer(status, "json", request_id=request_id)
    code = _text(body["error"], scrub)
    return ErrorAnswer(
        status,
        "oauth",
        code=code if code is not None and _CODE.fullmatch(code) else None,
        description=_text(body.get("error_description"), scrub),
        request_id=request_id,
    )


def error_class(answer: ErrorAnswer) -> type[ProviderError]:
    """The error class ``answer`` stands for; the first rule that matches wins."""
    status, code = answer.status, answer.code
    # RFC 6585 4: 429 Too Many Requests, whatever the body says.
    if status == 429:
        return RateLimited
    # RFC 9110 15.6: a 5xx is the server's trouble; 408 (RFC 9110 15.5.9) asks for a retry.
    if status >= 500 or status == 408:
        return TransientProviderError
    if code is not None:
        if code in CREDENTIAL_CODES:  # RFC 6749 5.2
            return InvalidCredentials
        if code in TRANSIENT_CODES:  # see TRANSIENT_CODES (assumed)
            return TransientProviderError
        if code in CONFIGURATION_CODES:  # RFC 6749 5.2
            return ProviderError
    # RFC 6749 5.2: a failed client authentication may be answered 401; RFC 9110 15.5.4:
    # 403 is a refusal the credentials decide.
    if status in (401, 403):
        return InvalidCredentials
    # RFC 9110 15.5: any other 4xx is a problem with the request.
    return ProviderError


def classify(
    response: httpx2.Response, what: str, scrub: Scrub, request_id_header: str
) -> ProviderError:
    """The error a non-2xx answer to ``what`` stands for, with its status, code, the
    server's (scrubbed) words and its request id."""
    answer = read_error(response, scrub, request_id_header)
    cls = error_class(answer)
    message = f"{what}: {answer.summary()}"
    if cls is ProviderError and answer.code in CONFIGURATION_CODES:
        message += " (check the oauth2 provider options)"
    return cls(
        message,
        status=answer.status,
        wix_message=answer.description,
        code=answer.code,
        request_id=answer.request_id,
    )
