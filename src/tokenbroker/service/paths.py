"""The proxy's target: the app's API URL plus the caller's path, and never anywhere else.

The caller's ``{path}`` is taken from the raw request target (still percent-encoded,
as it arrived), checked, checked again after percent-decoding it once (so that an
encoding cannot smuggle past the first look what the second would refuse: ``%2e%2e``
is ``..``, ``%252e`` becomes ``%2e``), and forwarded as it arrived. Refused:

* control characters, backslashes, ``@``, and characters beyond ASCII once decoded;
* ``%2f`` and ``%5c``: an encoded ``/`` or ``\\`` that a server behind may decode;
* empty segments (``//host``, ``a//b``; one trailing ``/`` is fine);
* ``.`` and ``..`` segments, however encoded;
* a first segment with a ``:`` (``http:``, ``host:443``): an absolute URL.

Then the URL is built and compared with the API URL once more: the same scheme, host
and port, and a path under the API URL's own path.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

import attrs
import httpx2

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_ENCODED_SEPARATOR: Final = re.compile(r"%(2f|5c)", re.IGNORECASE)
_PERCENT_U: Final = re.compile(r"%u[0-9a-f]{4}", re.IGNORECASE)  # IIS's non-standard escape
_PREFIX: Final = (b"", b"v1", b"apps", None, b"instances", None, b"wix")
"""The raw segments before ``{path}`` (``None``: the app name, the instance id)."""


class UnsafePath(ValueError):
    """A proxy path that could leave the API URL; the message says why (no path)."""


def why_unsafe(path: str) -> str | None:
    """Why ``path`` (relative, no leading ``/``) could leave its base, or ``None``."""
    if not path:
        return "no path after /wix/"
    if _CONTROL.search(path):
        return "control characters"
    if not path.isascii():
        return "characters beyond ASCII"
    if "\\" in path:
        return "a backslash"
    if "@" in path:
        return "an '@'"
    if _ENCODED_SEPARATOR.search(path):
        return "an encoded '/' or '\\'"
    if _PERCENT_U.search(path):
        return "a %u escape"
    segments = path.split("/")
    if ":" in segments[0]:
        return "an absolute URL"
    for position, segment in enumerate(segments):
        if not segment and position < len(segments) - 1:
            return "an empty segment ('//')"
        # '..;x', '.. ', '...' are read as '..' by some servers (Tomcat and Jetty drop
        # ';' path parameters, IIS trims trailing dots and spaces): refuse them all.
        core = urllib.parse.unquote(segment).split(";", 1)[0].strip(" \t.")
        if segment and not core:
            return "a '.' or '..' segment (or one read as such)"
    return None


def check(path: str) -> str:
    """``path`` if it and its once-decoded form are both safe; else ``UnsafePath``."""
    for form in (path, urllib.parse.unquote(path, errors="replace")):
        reason = why_unsafe(form)
        if reason is not None:
            raise UnsafePath(reason)
    return path


@attrs.frozen
class Target:
    """Where a proxied call goes: the app, the instance, and the path under the API URL."""

    name: str
    instance_id: str
    path: str  # raw, as it arrived: percent-encoding kept


def target_of(scope: Mapping[str, Any], path_params: Mapping[str, Any]) -> Target:
    """The target of a proxy request, read from its raw path; ``UnsafePath`` else.

    Starlette's ``path_params`` are decoded; the raw path must decode to the same
    app name and instance id (an encoded ``/`` in either would shift the segments).
    """
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes) or not raw:
        raw = urllib.parse.quote(str(scope.get("path", ""))).encode("ascii")
    root = str(scope.get("root_path", "")).rstrip("/")
    segments = raw.split(b"/")
    # a mount's own segments come first (a static prefix: one raw segment each)
    segments = [b"", *segments[1 + root.count("/") :]]
    if len(segments) <= len(_PREFIX):
        raise UnsafePath("no path after /wix/")
    for expected, found in zip(_PREFIX, segments, strict=False):
        if expected is not None and found != expected:
            raise UnsafePath("a path that is not /v1/apps/NAME/instances/ID/wix/PATH")
    try:
        name = urllib.parse.unquote(segments[3].decode("ascii"), errors="strict")
        instance_id = urllib.parse.unquote(segments[5].decode("ascii"), errors="strict")
        rest = b"/".join(segments[len(_PREFIX) :]).decode("ascii")
    except UnicodeDecodeError:
        raise UnsafePath("characters beyond ASCII") from None
    if name != path_params.get("name") or instance_id != path_params.get("instance_id"):
        raise UnsafePath("an encoded '/' in the app name or instance id")
    return Target(name, instance_id, check(rest))


def build_url(api_url: str, path: str, query: bytes) -> httpx2.URL:
    """``api_url`` + ``/`` + ``path`` (checked) with ``query`` as it arrived.

    The result is compared with ``api_url``: anything but the same origin and a path
    under its own is an ``UnsafePath`` (the last line of defence: ``check`` refused
    everything that could get here already)."""
    base = httpx2.URL(api_url)
    url = httpx2.URL(f"{api_url.rstrip('/')}/{check(path)}")
    if query:
        url = url.copy_with(query=query)
    base_path = base.raw_path.split(b"?", 1)[0].rstrip(b"/")
    url_path = url.raw_path.split(b"?", 1)[0]
    if (
        (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port)
        or url.userinfo
        or not url_path.startswith(base_path + b"/")
    ):
        raise UnsafePath("a path that leaves the API URL")
    return url
