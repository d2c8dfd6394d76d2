"""``tokenbroker serve`` closes connections that send nothing or send their request too slowly.

uvicorn's own ``timeout_keep_alive`` runs only between requests and is reset by
every byte, so these tests would fail on plain uvicorn: the receipt deadline is
tokenbroker's protocol wrapper around uvicorn's h11 protocol.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator

import pytest

from .conftest import KEEP_ALIVE, RECEIPT_TIMEOUT
from .serving import (
    LOOPBACK,
    ServeProcess,
    closed_by_peer,
    get_request,
    read_response,
    status_of,
)

MARGIN = 3.0  # scheduling slack on a loaded two-core machine; the deadline is 1 s
TRICKLE_EVERY = 0.2


def trickle(
    socks: list[socket.socket], payload: bytes, *, every: float, timeout: float
) -> tuple[dict[int, float], dict[int, bytes]]:
    """Send ``payload`` one byte per ``every`` seconds on every socket until the server
    closes it or ``timeout`` passes. Returns when each socket was closed (seconds after
    the first byte) and what the server sent on each before closing."""
    start = time.monotonic()
    pending = {sock.fileno(): sock for sock in socks}
    closed: dict[int, float] = {}
    answers: dict[int, bytes] = dict.fromkeys(pending, b"")
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)

        def close(fd: int) -> None:
            closed[fd] = time.monotonic() - start
            selector.unregister(pending.pop(fd))

        sent, next_send = 0, start
        while pending and time.monotonic() - start < timeout:
            if time.monotonic() >= next_send and sent < len(payload):
                for fd, sock in list(pending.items()):
                    try:
                        sock.send(payload[sent : sent + 1])
                    except (BrokenPipeError, ConnectionResetError):
                        close(fd)
                sent, next_send = sent + 1, next_send + every
            wait = max(0.0, min(next_send - time.monotonic(), 0.05))
            for key, _ in selector.select(timeout=wait):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except ConnectionResetError:
                    data = b""
                if data:
                    answers[sock.fileno()] += data
                else:
                    close(sock.fileno())
    assert sent < len(payload), "the payload ran out: the request completed"
    return closed, answers


@pytest.fixture
def sockets(served: ServeProcess) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


class TestReceiptDeadline:
    def test_a_connection_that_sends_nothing_is_closed_after_the_deadline(
        self, served: ServeProcess, sockets: list[socket.socket]
    ) -> None:
        sockets.append(sock := served.connect())
        start = time.monotonic()
        assert closed_by_peer(sock, RECEIPT_TIMEOUT + MARGIN)
        assert time.monotonic() - start >= RECEIPT_TIMEOUT * 0.9

    def test_fifty_slowloris_connections_are_all_closed_within_the_deadline(
        self, served: ServeProcess, sockets: list[socket.socket]
    ) -> None:
        sockets.extend(served.connect() for _ in range(50))
        request = (
            f"POST /webhooks/wix HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
            "Content-Type: text/plain\r\nContent-Length: 10\r\n\r\n0123456789"
        ).encode()
        closed, answers = trickle(
            sockets, request, every=TRICKLE_EVERY, timeout=RECEIPT_TIMEOUT + MARGIN
        )
        assert len(closed) == 50, f"{50 - len(closed)} slow connections were left open"
        assert min(closed.values()) >= RECEIPT_TIMEOUT * 0.9
        for answer in answers.values():  # a 408 or nothing at all, never a 200
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")

    def test_a_body_trickled_after_whole_headers_is_cut_off_too(
        self, served: ServeProcess, sockets: list[socket.socket]
    ) -> None:
        sockets.extend(served.connect() for _ in range(10))
        for sock in sockets:
            sock.sendall(
                f"POST /webhooks/wix HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
                "Content-Type: text/plain\r\nContent-Length: 200\r\n\r\n".encode()
            )
        closed, answers = trickle(
            sockets, b"x" * 200, every=TRICKLE_EVERY, timeout=RECEIPT_TIMEOUT + MARGIN
        )
        assert len(closed) == 10
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers.values()), answers
        # the webhook route saw its client vanish mid-body: no 500, no traceback
        assert "Traceback" not in served.log
        assert "Exception in ASGI application" not in served.log

    def test_a_request_sent_in_pieces_within_the_deadline_is_answered(
        self, served: ServeProcess, sockets: list[socket.socket]
    ) -> None:
        sockets.append(sock := served.connect())
        request = get_request()
        third = len(request) // 3
        for piece in (request[:third], request[third : 2 * third], request[2 * third :]):
            sock.sendall(piece)
            time.sleep(0.2)  # a slow but honest client's pace, well inside the deadline
        assert status_of(read_response(sock)) == 200


class TestKeepAlive:
    def test_each_request_on_a_kept_alive_connection_gets_its_own_deadline(
        self, served: ServeProcess, sockets: list[socket.socket]
    ) -> None:
        sockets.append(sock := served.connect())
        start = time.monotonic()
        for _ in range(3):
            sock.sendall(get_request())
            assert status_of(read_response(sock)) == 200
            time.sleep(0.6)  # idle between requests, below the keep-alive timeout
        assert time.monotonic() - start > RECEIPT_TIMEOUT  # one deadline would have cut it

    def test_the_next_request_trickled_on_a_kept_alive_connection_is_cut_off(
        self, served: ServeProcess, sockets: list[socket.socket]
    ) -> None:
        sockets.append(sock := served.connect())
        sock.sendall(get_request())
        assert status_of(read_response(sock)) == 200
        closed, _ = trickle(
            [sock], get_request(), every=TRICKLE_EVERY, timeout=RECEIPT_TIMEOUT + MARGIN
        )
        assert len(closed) == 1

    def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(
        self, served: ServeProcess, sockets: list[socket.socket]
    ) -> None:
        sockets.append(sock := served.connect())
        sock.sendall(get_request())
        assert status_of(read_response(sock)) == 200
        answered = time.monotonic()
        assert closed_by_peer(sock, KEEP_ALIVE + MARGIN)
        # the keep-alive timeout, not the (shorter) receipt deadline, governs idling
        assert time.monotonic() - answered >= KEEP_ALIVE * 0.9
