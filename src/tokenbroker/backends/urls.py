"""Small helpers for backend URLs: printable forms, their passwords, schemes.

Every backend prints URLs with ``redact_url`` and scrubs driver messages with
``scrub(message, url_passwords(url))``; no backend has a redactor of its own.

Nothing here raises: these run while building error messages and reprs, where
a second failure would hide the first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote, unquote_plus

REDACTED: Final = "***"

# scheme "://" username ":" -- the password, if any, starts after that colon.
_USERINFO_START: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/@?#\s]*:)(.*)", re.DOTALL)
_AUTHORITY_END: Final = re.compile(r"[/?#]")
_SCHEME: Final = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.\-]*):")
# A secret in the query: "password" and anything ending in it (redis-py's
# "ssl_password", "sentinel_password"), and the usual other spellings.
_QUERY_SECRET: Final = re.compile(r"(?i)([?&](?:[^=&#]*password|passwd|pwd|secret|token)=)([^&#]*)")


def redact_url(url: str) -> str:
    """Return ``url`` with its passwords replaced by ``***``: the userinfo one, and
    query parameters such as ``?password=`` or ``?ssl_password=`` (redis-py
    reads them there).
    """
    redacted = _redact_userinfo(url)
    try:
        return _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, redacted)
    except TypeError:
        return redacted


def _redact_userinfo(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``.

    ``postgresql+psycopg://u:pw@h/db`` becomes ``postgresql+psycopg://u:***@h/db``;
    a URL without a password comes back unchanged. Passwords pasted without
    percent-encoding (holding ``@``, ``/``, ``?`` or ``#``) are still hidden:
    when in doubt this hides too much rather than too little.
    """
    try:
        match = _USERINFO_START.match(url)
        if match is None:
            return url
        head, rest = match.groups()
        end = _AUTHORITY_END.search(rest)
        authority = rest if end is None else rest[: end.start()]
        if "@" in authority:
            # The last "@" before the path ends the userinfo ("p@ss" stays hidden).
            cut = authority.rindex("@")
        elif "@" in rest:
            # A "/", "?" or "#" inside the password: read it as SQLAlchemy does,
            # up to the first "@".
            cut = rest.index("@")
        else:
            return url  # "host:port", no userinfo at all
        if cut == 0:
            return url  # "user:@host": an empty password, nothing to hide
        return f"{head}{REDACTED}{rest[cut:]}"
    except Exception:  # garbage in (not even a str): show nothing of it
        return "<unprintable url>"


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-cased (``postgresql+psycopg``), or ``""`` if it has none."""
    try:
        match = _SCHEME.match(url)
    except TypeError:
        return ""
    return "" if match is None else match.group(1).lower()


def url_passwords(url: str) -> tuple[str, ...]:
    """Every password ``redact_url`` hides in ``url``, the userinfo one and those in
    the query, each as written and percent-decoded: what to ``scrub`` from messages.
    """
    try:
        found: list[str] = []
        shown = _redact_userinfo(url)
        if shown != url:
            # The password is what was replaced: between the shared head and tail.
            star = shown.index(REDACTED)
            tail = len(shown) - star - len(REDACTED)
            found.append(url[star : len(url) - tail])
        # In what is left, so a pasted-in "?" inside the password is not a query.
        found.extend(match.group(2) for match in _QUERY_SECRET.finditer(shown))
    except Exception:
        return ()
    # A query value may reach a driver decoded either way ("+" as a space or not).
    spellings = (p for raw in found for p in (raw, unquote(raw), unquote_plus(raw)))
    return tuple(dict.fromkeys(p for p in spellings if p))


def scrub(message: str, passwords: Iterable[str]) -> str:
    """``message`` with each of ``passwords`` replaced by ``***``.

    Longest first: a password that contains another is hidden whole, not left
    with its middle starred out.
    """
    for password in sorted({p for p in passwords if p}, key=len, reverse=True):
        message = message.replace(password, REDACTED)
    return message
