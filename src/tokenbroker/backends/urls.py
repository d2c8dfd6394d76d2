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

from ..core.secret import scrub_secrets

REDACTED: Final = "***"

# scheme "://": the authority, and any userinfo, starts after it.
_AUTHORITY_START: Final = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.\-]*://")
# [userinfo@]host[:port][,host[:port]...][/path]: what comes before a real query.
_HOST: Final = r"(?:\[[0-9A-Za-z:.%]*\]|[^:/@?#\s,\[\]]*)(?::\d*)?"
_BEFORE_QUERY: Final = re.compile(rf"(?:.*@)?{_HOST}(?:,{_HOST})*(?:/[^?#@]*)?", re.DOTALL)
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
    """Return ``url`` with its userinfo password replaced by ``***``.

    ``postgresql+psycopg://u:pw@h/db`` becomes ``postgresql+psycopg://u:***@h/db``;
    a URL without a password comes back unchanged. Passwords pasted without
    percent-encoding (holding ``@``, ``/``, ``?`` or ``#``) are still hidden whole,
    and so are those after a username holding spaces: when in doubt this hides
    too much rather than too little. An ``@`` inside a query secret
    (``?password=p@ss``) never ends a userinfo.
    """
    try:
        cut = _userinfo_end(url)
        if cut is None:
            return url
        start, end = cut
        return f"{url[:start]}{REDACTED}{url[end:]}"
    except Exception:  # garbage in (not even a str): show nothing of it
        return "<unprintable url>"


def _userinfo_end(url: str) -> tuple[int, int] | None:
    """Where the userinfo password of ``url`` starts and ends, or None if it has none."""
    match = _AUTHORITY_START.match(url)
    if match is None:
        return None
    base = match.end()
    rest = url[base:]
    ats = [i for i, ch in enumerate(rest) if ch == "@" and not _inside(i, _query_secrets(rest))]
    if not ats:
        return None
    # The last "@" ends the userinfo: the password may hold "@", "/", "?" or "#"
    # pasted in unencoded, and a host never holds an "@". A later "@" in a path or
    # an ordinary query value makes this hide too much, never too little.
    at = ats[-1]
    colon = rest.find(":", 0, at)
    if colon < 0 or colon + 1 == at:
        return None  # "user@host" or "user:@host": no password to hide
    return base + colon + 1, base + at


def _query_secrets(rest: str) -> list[tuple[int, int]]:
    """Where query secret values stand in ``rest`` (the URL after ``://``): only in a
    real query, one that follows ``host[:port][/path]`` (after any userinfo).
    Otherwise the "query" is text pasted into a password (``u:ab&token=cd@h``), and
    its ``@`` ends a userinfo.
    """
    # The query starts at the first "?" that can: one pasted into a password cannot.
    for start, char in enumerate(rest):
        if char == "?" and _BEFORE_QUERY.fullmatch(rest[:start]):
            return [m.span(2) for m in _QUERY_SECRET.finditer(rest, start)]
    return []


def _inside(index: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= index < end for start, end in spans)


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
    """``message`` with each of ``passwords`` replaced by ``***`` wherever it appears,
    longest first (``core.secret.scrub_secrets``, with no whole-value rule)."""
    return scrub_secrets(message, passwords, anywhere_from=0)
