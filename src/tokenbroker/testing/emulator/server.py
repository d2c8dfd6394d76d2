"""The emulator's HTTP plumbing: sockets, keep-alive, request bodies, clean shutdown.

It knows HTTP and nothing of Wix: every parsed request goes to an :class:`_Application`
(the emulator's state), which also words the answer to requests too malformed to parse.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import logging
import selectors
import socket
import threading
import urllib.parse
from typing import Any, Final, Protocol, cast

import attrs

logger = logging.getLogger("tokenbroker.emulator")

# Bodies larger than this are refused rather than read: the emulator is for tests, and
# a runaway client should fail loudly instead of filling memory.
_MAX_BODY: Final = 1 << 20


@attrs.frozen
class _Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class _Request:
    method: str
    path: str
    content_type: str | None
    authorization: str | None = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)


class _Application(Protocol):
    """The small interface the server calls into.

    The names are private because the server is their only caller: they are no part
    of the API of the emulator that implements them.
    """

    def _serve(self, request: _Request) -> _Response | None:
        """Answer one request; None means drop the connection unanswered."""
        ...

    def _refuse_body(self, reason: str) -> _Response:
        """The answer to a request whose body could not be read."""
        ...

    def _refuse_request(self, status: int, message: str | None) -> _Response:
        """The answer to a request http.server could not parse."""
        ...


class _EmulatorServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that can close its keep-alive connections on stop."""

    daemon_threads = True
    # stop() closes connections itself; joining handler threads that sit on an idle
    # keep-alive socket could otherwise block forever.
    block_on_close = False
    # 100+ clients connecting at once must queue, not be refused.
    request_queue_size = 256

    def __init__(self, app: _Application, address: tuple[str, int]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Condition()
        self._closing = False
        self._stop_requested = threading.Event()
        super().__init__(address, _Handler)
        # Created only once binding succeeded, so a failed bind leaks nothing.
        self._wake_reader, self._wake_writer = socket.socketpair()

    def serve_until_stopped(self) -> None:
        """``serve_forever`` without its polling: request_stop() wakes the loop at once.

        ``shutdown()`` only notices its flag when the poll interval runs out, which
        would add that interval to every test that stops an emulator.
        """
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self._stop_requested.is_set():
                ready = selector.select()
                if self._stop_requested.is_set():
                    break
                if any(key.fileobj is self for key, _ in ready):
                    self._accept_one()

    def _accept_one(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError:
            return
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def request_stop(self) -> None:
        self._stop_requested.set()
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock = cast(socket.socket, request)
        with self._connections_lock:
            if self._closing:
                return
            self._connections.add(sock)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(sock)
                self._connections_lock.notify_all()

    def close_connections(self) -> None:
        """Shut down every open connection so idle handler threads wake and exit."""
        with self._connections_lock:
            self._closing = True
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def wait_until_drained(self, timeout: float) -> bool:
        with self._connections_lock:
            return self._connections_lock.wait_for(lambda: not self._connections, timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, stop()) are expected; keep them off stderr.
        logger.debug("error while serving %s", client_address, exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Translates HTTP to and from the server's :class:`_Application`."""

    server_version = "tokenbroker-wix-emulator"
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; with Nagle on, a keep-alive client
    # waits out the peer's delayed ACK (~40 ms) for every response.
    disable_nagle_algorithm = True

    def _handle(self) -> None:
        app = cast(_EmulatorServer, self.server).app
        try:
            body = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            self._send(app._refuse_body(str(exc)))
            return
        request = _Request(
            method=self.command,
            path=urllib.parse.urlsplit(self.path).path,
            content_type=self.headers.get("Content-Type"),
            authorization=self.headers.get("Authorization"),
            body=body,
        )
        response = app._serve(request)
        if response is None:
            self.close_connection = True
            return
        self._send(response)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def _read_body(self) -> bytes:
        """Read the whole body, so the connection stays usable for the next request."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return _read_chunked(self.rfile)
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            raise ValueError("Content-Length is not a number") from None
        if not 0 <= length <= _MAX_BODY:
            raise ValueError("Content-Length is out of range")
        return self.rfile.read(length)

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests get the application's error shape, not http.server's HTML."""
        self.close_connection = True
        self._send(cast(_EmulatorServer, self.server).app._refuse_request(code, message))

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # Only the request line and status reach the log: never headers or bodies.
        logger.debug("%s " + format, self.address_string(), *args)


def _read_chunked(stream: io.BufferedIOBase) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = stream.readline(1024)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ValueError("malformed chunked body") from None
        if size == 0:
            # Skip trailers up to the blank line that ends the body.
            while stream.readline(1024).strip():
                pass
            return b"".join(chunks)
        total += size
        if total > _MAX_BODY:
            raise ValueError("body too large")
        chunks.append(stream.read(size))
        stream.readline(1024)
