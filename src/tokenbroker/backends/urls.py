"""Small helpers for backend URLs: printable forms and schemes.

Nothing here raises: these run while building error messages and reprs, where
a second failure would hide the first.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote

REDACTED: Final = "***"

# scheme "://" username ":" -- the password, if any, starts after that colon.
_USERINFO_START: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/@?#\s]*:)(.*)", re.DOTALL)
_AUTHORITY_END: Final = re.compile(r"[/?#]")
_SCHEME: Final = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.\-]*):")


_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd|secret|token)=)[^&#]*")


def redact_url(url: str) -> str:
    """Return ``url`` with its passwords replaced by ``***``: the userinfo one, and
    query parameters such as ``?password=`` (redis-py reads one there).
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
    """The password of ``url`` as written and percent-decoded, for scrubbing messages."""
    try:
        redacted = redact_url(url)
        if redacted == url:
            return ()
        # The password is what redact_url replaced: between the shared head and tail.
        star = redacted.index(REDACTED)
        tail = len(redacted) - star - len(REDACTED)
        raw = url[star : len(url) - tail]
    except Exception:
        return ()
    return tuple(dict.fromkeys(p for p in (raw, unquote(raw)) if p))
