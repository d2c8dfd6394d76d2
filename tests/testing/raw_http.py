"""Talking HTTP to the emulator over a raw socket, to send what no client library would."""

from __future__ import annotations

import json
import socket
import urllib.parse
from typing import Any

import attrs

from tokenbroker.testing.emulator import WixEmulator

APP_ID = "raw-app-id"
APP_SECRET = "raw-app-secret"
INSTANCE = "inst-raw"

TOKEN_BODY = json.dumps(
    {
        "grant_type": "client_credentials",
        "client_id": APP_ID,
        "client_secret": APP_SECRET,
        "instance_id": INSTANCE,
    }
).encode()


@attrs.frozen
class RawResponse:
    status_line: bytes
    headers: dict[str, str]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split(b" ")[1])

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        """The applicationError code of Wix's error shape."""
        code = self.json()["details"]["applicationError"]["code"]
        assert isinstance(code, str)
        return code


def address(emulator: WixEmulator) -> tuple[str, int]:
    url = urllib.parse.urlsplit(emulator.url)
    assert url.hostname is not None
    assert url.port is not None
    return url.hostname, url.port


def connect(emulator: WixEmulator, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(address(emulator), timeout=timeout)


def request(
    line: bytes = b"POST /oauth2/token HTTP/1.1",
    fields: list[bytes] | None = None,
    body: bytes = b"",
) -> bytes:
    """A request as bytes; ``fields`` default to Host and a JSON Content-Type."""
    if fields is None:
        fields = [b"Host: emulator", b"Content-Type: application/json"]
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


def token_request(*extra: bytes, length: bytes | None = None, body: bytes = TOKEN_BODY) -> bytes:
    """A Create Access Token request framed by Content-Length (``length`` as sent)."""
    sent_length = str(len(body)).encode() if length is None else length
    fields = [b"Host: emulator", b"Content-Type: application/json", *extra]
    return request(fields=[*fields, b"Content-Length: " + sent_length], body=body)


def chunked_token_request(chunks: list[bytes], *extra: bytes) -> bytes:
    fields = [b"Host: emulator", b"Content-Type: application/json", *extra]
    return request(fields=[*fields, b"Transfer-Encoding: chunked"], body=b"".join(chunks))


class Responses:
    """Reads answers off one connection in order, keeping what arrived early."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._data = b""

    def _more(self, what: str) -> None:
        more = self._sock.recv(65536)
        assert more, f"the connection closed {what}; got {self._data!r}"
        self._data += more

    def next(self) -> RawResponse:
        while b"\r\n\r\n" not in self._data:
            self._more("with no complete answer")
        head, _, self._data = self._data.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self._data) < length:
            self._more("mid-answer")
        body, self._data = self._data[:length], self._data[length:]
        return RawResponse(status_line, headers, body)


def read_response(sock: socket.socket) -> RawResponse:
    """The one answer on a connection (use ``Responses`` for more than one)."""
    return Responses(sock).next()


def exchange(emulator: WixEmulator, data: bytes, timeout: float = 5.0) -> RawResponse:
    """Send ``data`` on a new connection and read the first answer."""
    with connect(emulator, timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a timeout means it never did."""
    data = b""
    try:
        while more := sock.recv(65536):
            data += more
    except ConnectionResetError:
        pass
    return data
