"""Wix's errors: classifying its error answers, and refusing its webhook deliveries.

``read_error`` reads an error answer in any of its shapes: Wix's standard one,
``{"message", "details": {"applicationError": {"code", "description", "data"}}}``
or ``{..., "details": {"validationError": {"fieldViolations": [...]}}}``
(documented: https://dev.wix.com/docs/api-reference/articles/work-with-wix-apis/troubleshooting/about-errors;
seen in Wix's SDK: ``rest-modules.js``, ``fetch-error.js``); the OAuth one of RFC
6749 section 5.2, ``{"error", "error_description"}`` (documented: Create Access
Token's "error details follow the conventions of the IETF",
https://dev.wix.com/docs/rest/app-management/oauth-2/create-access-token); plain
text, quoted scrubbed and cut short; an HTML page or an empty body, only named.
``error_class`` maps that to an error class, each rule tagged with its source.
What means "not installed" Wix does not document: those rules are assumed, and
``NotInstalledRules`` or ``TOKENBROKER_WIX_NOT_INSTALLED`` extend them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

import attrs
import httpx2

from ..core.errors import (
    ConfigError,
    InstanceNotInstalled,
    InvalidCredentials,
    ProviderError,
    RateLimited,
    TokenBrokerError,
    TransientProviderError,
)
from ..core.secret import scrub_secrets

REQUEST_ID_HEADER: Final = "x-wix-request-id"
"""Names one answer for Wix support. Seen in Wix's SDK: ``auth/AppStrategy.js`` quotes it
in every token failure; ``fetch-error.js`` and ``rest-modules.js`` read it too."""

DEFAULT_NOT_INSTALLED_CODES: Final = (
    "APP_NOT_INSTALLED",
    "INSTANCE_NOT_FOUND",
    "APP_INSTANCE_NOT_FOUND",
    "APP_REMOVED",
)
"""Error codes read as "not installed". Assumed: Wix documents none."""
DEFAULT_NOT_INSTALLED_PHRASES: Final = ("not installed", "instance not found", "app removed")
"""Phrases in Wix's words read as "not installed". Assumed: Wix documents none."""
TEXT_STATUSES: Final = frozenset({400, 401, 403, 404})
"""The statuses on which a not-installed phrase counts (assumed)."""
TEXT_PREFIX: Final = "text:"

Shape = Literal["wix", "ietf", "json", "text", "html", "empty"]

_MAX_TEXT: Final = 300
_MAX_FIELDS: Final = 5
_MAX_PHRASE: Final = 100
_SPACE: Final = re.compile(r"[\s\x00-\x1f\x7f]+")
_REQUEST_ID: Final = re.compile(r"[\x21-\x7e]{1,128}")
_WIRE_CODE: Final = re.compile(r"[\x21-\x7e]{1,100}")
_CODE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,99}")
_NEVER: Final = re.compile(r"(?!)")

Scrub = Callable[[str], str]


# -- the not-installed rules --------------------------------------------------------
def _entry_error(source: str, entry: object) -> ConfigError:
    return ConfigError(
        f"{source}: {entry!r} is neither an error code (a letter, then letters, digits "
        f"or _ . : -, at most 100) nor {TEXT_PREFIX}<phrase> (1 to {_MAX_PHRASE} characters)"
    )


def _code(value: object, source: str) -> str:
    if not isinstance(value, str) or not _CODE.fullmatch(value.strip()):
        raise _entry_error(source, value)
    return value.strip().upper()


def _phrase(value: object, source: str) -> str:
    text = _SPACE.sub(" ", value).strip().lower() if isinstance(value, str) else ""
    if not text or len(text) > _MAX_PHRASE:
        raise _entry_error(source, value)
    return text


def _strings(values: Iterable[str], source: str) -> list[object]:
    if isinstance(values, str | bytes):  # a lone string would be read letter by letter
        raise ConfigError(f"{source}: expected a list of strings, not one string")
    return list(values)


def _codes(values: Iterable[str]) -> frozenset[str]:
    source = "NotInstalledRules.codes"
    return frozenset(_code(value, source) for value in _strings(values, source))


def _phrases(values: Iterable[str]) -> tuple[str, ...]:
    source = "NotInstalledRules.phrases"
    return tuple(dict.fromkeys(_phrase(value, source) for value in _strings(values, source)))


def not_installed_entries(entries: Iterable[str], *, source: str) -> tuple[str, ...]:
    """``entries`` checked and normalised: each an error code (upper-cased) or
    ``text:<phrase>`` (lower-cased, whitespace collapsed). A bad one is a
    one-line ``ConfigError`` naming ``source``."""
    normal: list[str] = []
    for entry in _strings(entries, source):
        given = entry.strip() if isinstance(entry, str) else _code(entry, source)
        if not given:
            raise ConfigError(f"{source}: an entry is empty (a doubled or trailing comma?)")
        if given[: len(TEXT_PREFIX)].lower() == TEXT_PREFIX:
            normal.append(TEXT_PREFIX + _phrase(given[len(TEXT_PREFIX) :], source))
        else:
            normal.append(_code(given, source))
    return tuple(dict.fromkeys(normal))


@attrs.frozen
class NotInstalledRules:
    """Which error codes and phrases mean "the app is not installed on this instance".

    Wix documents none of them (assumed), so they extend without a release:
    ``NotInstalledRules().extend(codes=["APP_GONE"], phrases=["site deleted"])``,
    handed to ``WixProvider(config, not_installed=...)``, or the
    ``TOKENBROKER_WIX_NOT_INSTALLED`` setting. Codes compare case-insensitively
    (on any 4xx but 408 and 429); a phrase matches case-insensitively in Wix's
    message or description (on 400, 401, 403 and 404), any run of whitespace
    matching its spaces. An OAuth ``invalid_client`` always stays
    ``InvalidCredentials``.
    """

    codes: frozenset[str] = attrs.field(default=DEFAULT_NOT_INSTALLED_CODES, converter=_codes)
    phrases: tuple[str, ...] = attrs.field(
        default=DEFAULT_NOT_INSTALLED_PHRASES, converter=_phrases
    )
    _pattern: re.Pattern[str] = attrs.field(init=False, repr=False, eq=False)

    @_pattern.default
    def _compile(self) -> re.Pattern[str]:
        if not self.phrases:
            return _NEVER
        parts = []
        for phrase in self.phrases:
            body = r"\s+".join(re.escape(word) for word in phrase.split(" "))
            start = r"\b" if re.match(r"\w", phrase) else ""
            end = r"\b" if re.search(r"\w$", phrase) else ""
            parts.append(f"{start}{body}{end}")
        return re.compile("|".join(parts), re.IGNORECASE)

    def extend(
        self, *, codes: Iterable[str] = (), phrases: Iterable[str] = ()
    ) -> NotInstalledRules:
        """These rules with more codes and phrases (each checked: a ``ConfigError``)."""
        return NotInstalledRules(
            codes=self.codes | _codes(codes), phrases=self.phrases + _phrases(phrases)
        )

    def with_entries(self, entries: Iterable[str], *, source: str) -> NotInstalledRules:
        """These rules extended by setting-style entries: ``CODE`` or ``text:<phrase>``."""
        codes, phrases = [], []
        for entry in not_installed_entries(entries, source=source):
            if entry.startswith(TEXT_PREFIX):
                phrases.append(entry[len(TEXT_PREFIX) :])
            else:
                codes.append(entry)
        return self.extend(codes=codes, phrases=phrases)

    def code_matches(self, code: str | None) -> bool:
        return code is not None and code.upper() in self.codes

    def text_matches(self, texts: Iterable[str]) -> bool:
        return any(self._pattern.search(text) for text in texts)


DEFAULT_RULES: Final = NotInstalledRules()


# -- reading an error answer --------------------------------------------------------
@attrs.frozen
class ErrorAnswer:
    """What one error answer says, whatever its shape; every text already scrubbed."""

    status: int
    shape: Shape
    code: str | None = None
    """``applicationError.code`` (Wix's shape) or ``error`` (the OAuth shape)."""
    message: str | None = None
    """``message``, ``error_description``, or the text of a plain-text body."""
    description: str | None = None
    """``applicationError.description`` (Wix's shape)."""
    fields: tuple[str, ...] = ()
    """``field: description`` of each validation error (the first few)."""
    request_id: str | None = None

    @property
    def texts(self) -> tuple[str, ...]:
        """Wix's own words: what the not-installed phrases are looked for in."""
        return tuple(t for t in (self.message, self.description, *self.fields) if t)

    def summary(self) -> str:
        """``Wix answered 400 CODE: message (description); field: ...``, without the id."""
        said = f"Wix answered {self.status}"
        if self.shape == "html":
            return f"{said} with an HTML page"
        if self.shape == "empty":
            return f"{said} with an empty body"
        if self.shape == "json":
            return f"{said} with JSON that is not an error object"
        if self.code:
            said += f" {self.code}"
        if self.message:
            said += f": {self.message}"
        if self.description and self.description != self.message:
            said += f" ({self.description})"
        if self.fields:
            said += "; " + "; ".join(self.fields)
        return said


def _sent_tokens(response: httpx2.Response) -> list[str]:
    """The credential the request carried (an instance's access token), to scrub."""
    try:
        value = response.request.headers.get("Authorization")
    except RuntimeError:  # a response built by hand has no request
        return []
    if not value:
        return []
    return [value, value.split(" ", 1)[-1]]


def _text(value: object, scrub: Scrub) -> str | None:
    """``value`` as one scrubbed line of at most 300 characters, or ``None``.

    Scrubbed before it is cut, so no part of a secret survives the cut."""
    if not isinstance(value, str):
        return None
    line = scrub(_SPACE.sub(" ", value).strip())[:_MAX_TEXT].strip()
    return line or None


def _wire_code(value: object, scrub: Scrub) -> str | None:
    text = _text(value, scrub)
    return text if text is not None and _WIRE_CODE.fullmatch(text) else None


def request_id_of(response: httpx2.Response, scrub: Scrub = str) -> str | None:
    """The answer's ``x-wix-request-id``, if it is a short printable token.

    Seen in Wix's SDK (see ``REQUEST_ID_HEADER``). A value that is not 1 to 128
    printable ASCII characters, or that holds a secret (what ``scrub`` would
    change, or the token the request carried), is dropped (assumed: an id is an
    opaque token, and only worth quoting when it is one)."""
    value = response.headers.get(REQUEST_ID_HEADER, "").strip()
    if not _REQUEST_ID.fullmatch(value):
        return None
    if scrub(scrub_secrets(value, _sent_tokens(response))) != value:
        return None
    return value


def _violations(details: Mapping[str, Any], scrub: Scrub) -> tuple[str, ...]:
    validation = details.get("validationError")
    found = validation.get("fieldViolations") if isinstance(validation, dict) else None
    if not isinstance(found, list):
        return ()
    fields = []
    for violation in found[:_MAX_FIELDS]:
        if isinstance(violation, dict):
            field = _text(violation.get("field"), scrub)
            why = _text(violation.get("description"), scrub)
            if field or why:
                fields.append(_text(f"{field or '?'}: {why or 'invalid'}", scrub) or "")
    return tuple(f for f in fields if f)


def _read_json(status: int, body: object, request_id: str | None, scrub: Scrub) -> ErrorAnswer:
    if isinstance(body, str):  # a bare JSON string: words all the same
        return ErrorAnswer(status, "text", message=_text(body, scrub), request_id=request_id)
    if not isinstance(body, dict):
        return ErrorAnswer(status, "json", request_id=request_id)
    if isinstance(body.get("error"), str):  # RFC 6749 section 5.2
        return ErrorAnswer(
            status,
            "ietf",
            code=_wire_code(body["error"], scrub),
            message=_text(body.get("error_description"), scrub),
            request_id=request_id,
        )
    details = body.get("details")
    details = details if isinstance(details, dict) else {}
    if "message" not in body and not details:
        return ErrorAnswer(status, "json", request_id=request_id)
    app = details.get("applicationError")
    app = app if isinstance(app, dict) else {}
    return ErrorAnswer(
        status,
        "wix",
        code=_wire_code(app.get("code"), scrub),
        message=_text(body.get("message"), scrub),
        description=_text(app.get("description"), scrub),
        fields=_violations(details, scrub),
        request_id=request_id,
    )


def read_error(response: httpx2.Response, scrub: Scrub) -> ErrorAnswer:
    """What ``response`` says, in any shape; ``scrub`` cleans every text taken from it
    (the access token the request carried is scrubbed as well)."""
    tokens = _sent_tokens(response)

    def clean(text: str) -> str:
        return scrub(scrub_secrets(text, tokens))

    status = response.status_code
    request_id = request_id_of(response, scrub)
    if not response.content.strip():
        return ErrorAnswer(status, "empty", request_id=request_id)
    try:
        body = response.json()
    except ValueError:  # not JSON (or not UTF-8)
        text = response.text
        html = "html" in response.headers.get("Content-Type", "").lower()
        if html or text.lstrip()[:1] == "<":  # a proxy's page, not Wix's words (assumed)
            return ErrorAnswer(status, "html", request_id=request_id)
        return ErrorAnswer(status, "text", message=_text(text, clean), request_id=request_id)
    return _read_json(status, body, request_id, clean)


# -- classifying it -----------------------------------------------------------------
def error_class(
    answer: ErrorAnswer, rules: NotInstalledRules = DEFAULT_RULES
) -> type[ProviderError]:
    """The error class ``answer`` stands for. First match wins; each rule is tagged."""
    status, code = answer.status, answer.code
    # Assumed: a code is trusted on a 4xx but 408 and 429, which (like a 5xx) ask for a retry.
    coded = code is not None and 400 <= status < 500 and status not in (408, 429)
    # Documented: RFC 6749 section 5.2, "client authentication failed", which Wix says
    # Create Access Token follows. Checked first, so no phrase turns a refused secret
    # into "not installed". The same code in Wix's own shape: assumed.
    if coded and code is not None and code.lower() == "invalid_client":
        return InvalidCredentials
    # Assumed: a not-installed code.
    if coded and rules.code_matches(code):
        return InstanceNotInstalled
    # Assumed: a not-installed phrase in Wix's words (message, description, OAuth
    # error_description such as invalid_grant's, or plain text) on 400/401/403/404.
    if status in TEXT_STATUSES and rules.text_matches(answer.texts):
        return InstanceNotInstalled
    # Documented ("About Errors"): 401 could not authenticate you, 403 permission denied.
    if status in (401, 403):
        return InvalidCredentials
    # Documented ("About Errors"): 429 resource exhausted (too many requests).
    if status == 429:
        return RateLimited
    # Documented ("About Errors"): 5xx is Wix's problem, try again later.
    # Assumed: 408 (RFC 9110 Request Timeout) is as transient.
    if status == 408 or status >= 500:
        return TransientProviderError
    # Documented ("About Errors"): any other 4xx is a problem with the request.
    return ProviderError


def classify(
    response: httpx2.Response,
    what: str,
    scrub: Scrub,
    rules: NotInstalledRules = DEFAULT_RULES,
) -> ProviderError:
    """The error a non-2xx answer to ``what`` stands for, carrying its status, code,
    Wix's (scrubbed) words and request id; ``scrub`` cleans every text quoted."""
    answer = read_error(response, scrub)
    return error_class(answer, rules)(
        f"{what}: {answer.summary()}",
        status=answer.status,
        wix_message=answer.message,
        code=answer.code,
        request_id=answer.request_id,
    )


class WebhookRejected(TokenBrokerError):
    """A webhook delivery that must not be acted on.

    ``status`` is the HTTP status to answer with (400 malformed, 401 not
    authentic or not current, 413 too big) and ``reason`` a short fixed phrase
    that is safe to send back: it never quotes the body, the key or a traceback.
    Wix retries anything that is not a 200, so a rejection is also a signal to
    whoever is forging or mangling deliveries, and says as little as possible.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"webhook rejected ({status}): {reason}")
        self.status = status
        self.reason = reason
