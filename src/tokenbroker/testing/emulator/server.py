"""The emulator's HTTP server: sockets, keep-alive, deadlines, answers, clean shutdown.

It knows HTTP and nothing of Wix: every parsed request goes to an ``_Application``
(the emulator's state), which also words the answer to requests it must refuse.
Requests are read by ``wire``, which refuses what a real server would refuse.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import socketserver
import threading
import time
from http import HTTPStatus
from typing import Any, Final, Protocol, cast

import attrs

from .wire import CONTINUE, HttpError, RequestHead, Stream, read_body, read_head, response_bytes

logger = logging.getLogger("tokenbroker.emulator")

_SERVER_NAME: Final = "tokenbroker-wix-emulator"
# After refusing a request, how long (at most) to read and discard what the client is
# still sending, so closing does not reset the connection before it reads the answer.
_LINGER: Final = 2.0
_LINGER_BYTES: Final = 1 << 20


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

    def _refuse_request(self, status: int, message: str) -> _Response:
        """The answer to a request that cannot be served (malformed, too big, too slow)."""
        ...


class BindError(OSError):
    """The emulator could not listen on its address (in use, not this host's, refused)."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(cause.errno, f"cannot listen on {where}: {cause.strerror or cause}")
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return str(self.strerror)


class _EmulatorServer(socketserver.ThreadingTCPServer):
    """A thread per connection, each with a deadline, closed all at once on stop."""

    daemon_threads = True
    # stop() closes connections itself; joining handler threads that sit on an idle
    # keep-alive socket could otherwise block until their deadline.
    block_on_close = False
    # 100+ clients connecting at once must queue, not be refused.
    request_queue_size = 256
    # Restarting on the same port must not wait out TIME_WAIT. (Never SO_REUSEPORT:
    # that would let a second emulator share a port instead of failing to bind.)
    allow_reuse_address = True

    def __init__(self, app: _Application, address: tuple[str, int], request_timeout: float) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.request_timeout = request_timeout
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Condition()
        self._closing = False
        self._stop_requested = threading.Event()
        self._wake: tuple[socket.socket, socket.socket] | None = None
        try:
            # TCPServer closes its socket itself when binding fails.
            super().__init__(address, _Handler)
        except OSError as exc:
            raise BindError(address[0], address[1], exc) from exc
        self._wake = socket.socketpair()

    def serve_until_stopped(self) -> None:
        """``serve_forever`` without its polling: request_stop() wakes the loop at once.

        ``shutdown()`` only notices its flag when the poll interval runs out, which
        would add that interval to every test that stops an emulator.
        """
        assert self._wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake[0], selectors.EVENT_READ)
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
            # No thread for this connection (the process is out of threads): refuse it.
            logger.warning("cannot serve a connection from %s", client_address, exc_info=True)
            self.shutdown_request(request)

    def request_stop(self) -> None:
        self._stop_requested.set()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"\0")

    def server_close(self) -> None:
        super().server_close()
        if self._wake is not None:
            for end in self._wake:
                end.close()

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

    @property
    def open_connections(self) -> int:
        with self._connections_lock:
            return len(self._connections)

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
        # The handler answers its own failures; what reaches here is a bug in it.
        logger.warning("error while serving %s", client_address, exc_info=True)


class _Handler(socketserver.BaseRequestHandler):
    """One connection: read a request, hand it to the application, answer, repeat."""

    server: _EmulatorServer
    request: socket.socket

    def setup(self) -> None:
        # Answers leave in one write, but a client's pipelined requests should not
        # wait out a delayed ACK either.
        with contextlib.suppress(OSError):  # a client that already hung up
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        stream = Stream(self.request)
        try:
            while self._serve_one(stream):
                pass
        except OSError as exc:
            # Resets, broken pipes, a client that stopped reading: its doing, not ours.
            logger.debug("%s: connection dropped: %r", self._peer, exc)

    def _serve_one(self, stream: Stream) -> bool:
        """Serve one request; False when the connection is to close."""
        timeout = self.server.request_timeout
        stream.begin_request(timeout)
        head: RequestHead | None = None
        try:
            head = read_head(stream)
            if head is None:
                return False
            body = read_body(stream, head, lambda: self._write(CONTINUE))
        except TimeoutError:
            if stream.started:
                logger.debug("%s: request not received within %gs", self._peer, timeout)
                self._refuse(HTTPStatus.REQUEST_TIMEOUT, "The request took too long to arrive")
            return False
        except HttpError as exc:
            logger.debug("%s: refused a request: %s", self._peer, exc.message)
            self._refuse(
                exc.status, exc.message, head_only=head is not None and head.method == "HEAD"
            )
            return False
        response = self._answer(head, body)
        if response is None:
            return False
        close = not head.keep_alive
        self._write(
            response_bytes(
                response.status,
                response.headers,
                response.body,
                server=_SERVER_NAME,
                close=close,
                head_only=head.method == "HEAD",
            )
        )
        logger.debug(
            '%s "%s %s HTTP/%d.%d" %d',
            self._peer,
            head.method,
            head.path,
            *head.version,
            response.status,
        )
        return not close

    def _answer(self, head: RequestHead, body: bytes) -> _Response | None:
        request = _Request(
            method=head.method,
            path=head.path,
            content_type=head.get("content-type"),
            authorization=head.get("authorization"),
            body=body,
        )
        try:
            return self.server.app._serve(request)
        except Exception:
            logger.warning(
                "the emulator failed answering %s %s; it answers 500",
                head.method,
                head.path,
                exc_info=True,
            )
            return self.server.app._refuse_request(
                HTTPStatus.INTERNAL_SERVER_ERROR, "The emulator failed answering this request"
            )

    def _refuse(self, status: int, message: str, *, head_only: bool = False) -> None:
        """Answer, then close without resetting what the client may still be sending."""
        response = self.server.app._refuse_request(status, message)
        data = response_bytes(
            response.status,
            response.headers,
            response.body,
            server=_SERVER_NAME,
            close=True,
            head_only=head_only,
        )
        try:
            self._write(data)
            self.request.shutdown(socket.SHUT_WR)
            self._linger()
        except OSError:
            pass

    def _linger(self) -> None:
        deadline = time.monotonic() + min(_LINGER, self.server.request_timeout)
        discarded = 0
        while discarded < _LINGER_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.request.settimeout(remaining)
            data = self.request.recv(65536)
            if not data:
                return
            discarded += len(data)

    def _write(self, data: bytes) -> None:
        # A client that never reads must not hold the thread either.
        self.request.settimeout(self.server.request_timeout)
        self.request.sendall(data)

    @property
    def _peer(self) -> str:
        address = self.client_address
        return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
