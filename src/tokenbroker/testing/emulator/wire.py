"""HTTP/1.1 requests read off a socket as strictly as a real server reads them.

Everything is bounded: the time a request may take to arrive (a deadline, not a
per-read timeout, so a client trickling a byte at a time is cut off too), the length
of each line, the number of header fields, and the size of a body, chunked or not.
What RFC 9112 calls malformed raises ``HttpError`` with the status to answer;
the server then closes the connection, since after a framing error the start of the
next request cannot be found. Nothing here knows Wix.
"""

from __future__ import annotations

import email.utils
import math
import re
import socket
import time
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from typing import Final

import attrs

MAX_LINE: Final = 8192
MAX_FIELDS: Final = 100
MAX_BODY: Final = 1 << 20
# Blank lines a client may send before a request line (RFC 9112 2.2 says to ignore some).
_MAX_BLANK_LINES: Final = 8
# Longer than any size within MAX_BODY, short enough that int() never sees a huge number.
_MAX_SIZE_DIGITS: Final = 16

_TOKEN: Final = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE: Final = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_FIELD_LINE: Final = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(.*?)[ \t]*")
_NOT_IN_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS: Final = re.compile(rb"[0-9]+")
_HEX: Final = re.compile(rb"[0-9A-Fa-f]+")

# The methods the server dispatches; any other is 501, as http.server answered before.
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Fields the server reads: each may appear at most once, so it never has to guess.
_SINGLETONS: Final = ("host", "content-length", "content-type", "authorization")

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


class HttpError(Exception):
    """A request the server must refuse with ``status``; the connection then closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Stream:
    """A socket read through one buffer, against a deadline set per request.

    Its own buffer rather than ``io.BufferedReader`` so the server knows whether a
    request had begun when its deadline passed (answer 408) or not (an idle
    keep-alive connection, closed without a word).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._timeout = math.inf
        self._deadline = math.inf
        self.started = False

    def begin_request(self, timeout: float) -> None:
        """Start the clock for the next request; bytes already buffered mean it began.

        The connection may stay silent for ``timeout``; once the request's first byte
        is in, the whole request must arrive within ``timeout`` of it.
        """
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout
        self.started = bool(self._buffer)

    def _fill(self) -> bool:
        """Receive more bytes; False at end of stream. Raises TimeoutError at the deadline."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(remaining)
        data = self._sock.recv(65536)
        if not data:
            return False
        if not self.started:
            # An idle keep-alive connection that starts a request late still gets
            # the whole timeout for it, as it would from a server with a fresh one.
            self.started = True
            self._deadline = time.monotonic() + self._timeout
        self._buffer += data
        return True

    def readline(self, limit: int) -> bytes:
        """One line with its ending, or what is left at end of stream (without one).

        Raises ``ValueError`` when no line ending comes within ``limit`` bytes.
        """
        while True:
            end = self._buffer.find(b"\n", 0, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self._buffer) >= limit:
                raise ValueError("line too long")
            if not self._fill():
                return self._take(len(self._buffer))

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes; ``EOFError`` if the stream ends first."""
        while len(self._buffer) < size:
            if not self._fill():
                raise EOFError("the connection closed mid-request")
        return self._take(size)

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


@attrs.frozen
class RequestHead:
    """A parsed request line and header section."""

    method: str
    target: str
    version: tuple[int, int]
    # (lower-cased name, value) in arrival order; values can hold credentials.
    fields: tuple[tuple[str, str], ...] = attrs.field(repr=False)

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.fields if key == name), None)

    def get_list(self, name: str) -> list[str]:
        """A list-valued field (``Connection``, ``Transfer-Encoding``), lower-cased."""
        items = (
            item.strip().lower() for key, v in self.fields if key == name for item in v.split(",")
        )
        return [item for item in items if item]

    @property
    def path(self) -> str:
        if self.target.startswith("/"):
            return self.target.partition("?")[0]
        return urllib.parse.urlsplit(self.target).path if "://" in self.target else self.target

    @property
    def keep_alive(self) -> bool:
        connection = self.get_list("connection")
        if "close" in connection:
            return False
        return self.version >= (1, 1) or "keep-alive" in connection

    @property
    def expects_continue(self) -> bool:
        return self.version >= (1, 1) and (self.get("expect") or "").lower() == "100-continue"


def read_head(stream: Stream) -> RequestHead | None:
    """The next request's line and fields; None if the client closed before sending one."""
    for _ in range(_MAX_BLANK_LINES + 1):
        try:
            raw = stream.readline(MAX_LINE)
        except ValueError:
            raise HttpError(
                HTTPStatus.REQUEST_URI_TOO_LONG, "The request line is too long"
            ) from None
        if not raw:
            return None
        line = _strip_line_end(raw)
        if line:
            break
    else:
        raise HttpError(HTTPStatus.BAD_REQUEST, "Too many blank lines before the request line")
    method, target, version = _parse_request_line(line)
    fields = _read_fields(stream, "header")
    head = RequestHead(method, target, version, fields)
    _check_fields(head)
    return head


def _strip_line_end(raw: bytes) -> bytes:
    if not raw.endswith(b"\n"):
        raise HttpError(HTTPStatus.BAD_REQUEST, "The connection closed mid-request")
    return raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]


def _parse_request_line(line: bytes) -> tuple[str, str, tuple[int, int]]:
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        # An HTTP/0.9 line ("GET /") lands here too: there is no 0.9 answer to give.
        raise HttpError(HTTPStatus.BAD_REQUEST, "Malformed request line")
    method, target = match[1].decode("ascii"), match[2].decode("ascii")
    version = (int(match[3]), int(match[4]))
    if version[0] != 1:
        raise HttpError(
            HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
            f"HTTP/{version[0]}.{version[1]} is not supported",
        )
    if method not in METHODS:
        raise HttpError(HTTPStatus.NOT_IMPLEMENTED, f"Method {method} is not implemented")
    absolute = urllib.parse.urlsplit(target)
    origin_form = target.startswith("/")
    absolute_form = absolute.scheme in {"http", "https"} and bool(absolute.netloc)
    asterisk_form = target == "*" and method == "OPTIONS"
    if not (origin_form or absolute_form or asterisk_form):
        raise HttpError(HTTPStatus.BAD_REQUEST, "Malformed request target")
    return method, target, version


def _read_fields(stream: Stream, section: str) -> tuple[tuple[str, str], ...]:
    """Field lines up to the blank line that ends a header or trailer section."""
    fields: list[tuple[str, str]] = []
    while True:
        try:
            raw = stream.readline(MAX_LINE)
        except ValueError:
            raise HttpError(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"A {section} line is too long"
            ) from None
        line = _strip_line_end(raw)
        if not line:
            return tuple(fields)
        if len(fields) >= MAX_FIELDS:
            raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"Too many {section}s")
        match = _FIELD_LINE.fullmatch(line)
        # No match covers obs-fold (a line starting with whitespace), a missing colon,
        # and whitespace between the name and the colon: RFC 9112 5.1 and 5.2 say 400.
        if match is None or _NOT_IN_VALUE.search(match[2]):
            raise HttpError(HTTPStatus.BAD_REQUEST, f"Malformed {section} line")
        fields.append((match[1].decode("ascii").lower(), match[2].decode("latin-1")))


def _check_fields(head: RequestHead) -> None:
    for name in _SINGLETONS:
        if sum(1 for key, _ in head.fields if key == name) > 1:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"More than one {name} header")
    if head.version >= (1, 1) and head.get("host") is None:
        raise HttpError(HTTPStatus.BAD_REQUEST, "An HTTP/1.1 request needs a Host header")
    _body_framing(head)


def _body_framing(head: RequestHead) -> int | None:
    """The body's length, or None for chunked; refuses framing that is ambiguous."""
    codings = head.get_list("transfer-encoding")
    has_coding = any(key == "transfer-encoding" for key, _ in head.fields)
    length = head.get("content-length")
    if has_coding:
        if length is not None:
            # Both framings at once is how requests are smuggled: RFC 9112 6.1 allows 400.
            raise HttpError(HTTPStatus.BAD_REQUEST, "Both Transfer-Encoding and Content-Length")
        if head.version < (1, 1):
            raise HttpError(HTTPStatus.BAD_REQUEST, "Transfer-Encoding in an HTTP/1.0 request")
        if not codings or codings[-1] != "chunked" or codings.count("chunked") > 1:
            raise HttpError(HTTPStatus.BAD_REQUEST, "Transfer-Encoding must end in chunked")
        if codings != ["chunked"]:
            raise HttpError(HTTPStatus.NOT_IMPLEMENTED, "Only the chunked transfer coding")
        return None
    if length is None:
        return 0
    if not _DIGITS.fullmatch(length.encode("latin-1")):
        raise HttpError(HTTPStatus.BAD_REQUEST, "Content-Length is not a number")
    if len(length) > _MAX_SIZE_DIGITS or int(length) > MAX_BODY:
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "The request body is too large")
    return int(length)


def read_body(stream: Stream, head: RequestHead, send_continue: Callable[[], None]) -> bytes:
    """The whole body, so the connection is ready for the next request."""
    length = _body_framing(head)
    if length == 0:
        return b""
    if head.expects_continue:
        send_continue()
    try:
        return stream.read(length) if length is not None else _read_chunked(stream)
    except EOFError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "The connection closed mid-body") from None


def _read_chunked(stream: Stream) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            raw = stream.readline(MAX_LINE)
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "A chunk size line is too long") from None
        digits, semicolon, extension = _strip_line_end(raw).partition(b";")
        if semicolon:
            # Whitespace may come before a chunk extension (BWS), nowhere else.
            digits = digits.rstrip(b" \t")
            if _NOT_IN_VALUE.search(extension):
                raise HttpError(HTTPStatus.BAD_REQUEST, "Malformed chunk extension")
        # Hex digits only, so int() never sees the '-', '+', '0x', '_' or spaces it
        # would otherwise accept (a negative size once meant reading to end of stream).
        if not _HEX.fullmatch(digits):
            raise HttpError(HTTPStatus.BAD_REQUEST, "Malformed chunk size")
        if len(digits) > _MAX_SIZE_DIGITS or total + int(digits, 16) > MAX_BODY:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "The request body is too large")
        size = int(digits, 16)
        if size == 0:
            _read_fields(stream, "trailer")
            return b"".join(chunks)
        chunks.append(stream.read(size))
        total += size
        try:
            end = stream.readline(2)
        except ValueError:
            end = b""
        if end not in {b"\r\n", b"\n"}:
            raise HttpError(HTTPStatus.BAD_REQUEST, "A chunk does not end with CRLF")


def response_bytes(
    status: int,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    *,
    server: str,
    close: bool,
    head_only: bool,
) -> bytes:
    """A complete HTTP/1.1 answer, framed by Content-Length."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""  # a reason phrase may be empty (RFC 9112 4)
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        f"Server: {server}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        *(f"{name}: {value}" for name, value in headers),
        f"Content-Length: {len(body)}",
    ]
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body
