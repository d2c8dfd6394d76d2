"""A connection that does not deliver its request in time is closed, however it stalls.

The deadline covers the whole request, so trickling a byte at a time does not extend
it; stalled connections therefore cost a thread only until it passes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tokenbroker.testing.emulator import WixEmulator

from ..polling import wait_until
from .raw_http import (
    APP_ID,
    APP_SECRET,
    INSTANCE,
    TOKEN_BODY,
    Responses,
    connect,
    read_until_closed,
    token_request,
)

REQUEST_TIMEOUT = 0.4
# How long past the deadline a closed connection may take to show (a loaded machine).
SLACK = 5.0


@pytest.fixture
def emulator() -> Iterator[WixEmulator]:
    emu = WixEmulator(APP_ID, APP_SECRET, request_timeout=REQUEST_TIMEOUT)
    emu.install(INSTANCE)
    with emu:
        yield emu


def trickle(sock: socket.socket, data: bytes, pace: float = 0.05) -> tuple[bytes, float]:
    """Send ``data`` a byte at a time until the server answers or closes.

    Returns what the server sent and how long that took. Waiting for the server to
    speak between bytes paces the trickle, so nothing sleeps blindly.
    """
    started = time.monotonic()
    sock.settimeout(pace)
    for byte in data:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.send(bytes([byte]))
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            answer = b""
        sock.settimeout(SLACK)
        return answer + read_until_closed(sock), time.monotonic() - started
    raise AssertionError("the server read the whole trickled request without cutting it off")


class TestIdleConnections:
    def test_a_connection_that_sends_nothing_is_closed_after_the_timeout(
        self, emulator: WixEmulator
    ) -> None:
        with connect(emulator, timeout=REQUEST_TIMEOUT + SLACK) as sock:
            started = time.monotonic()
            received = read_until_closed(sock)
            elapsed = time.monotonic() - started

        # Nothing was asked, so nothing is answered: the connection just closes.
        assert received == b""
        assert REQUEST_TIMEOUT * 0.5 <= elapsed < REQUEST_TIMEOUT + SLACK

    def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(
        self, emulator: WixEmulator
    ) -> None:
        with connect(emulator, timeout=REQUEST_TIMEOUT + SLACK) as sock:
            sock.sendall(token_request())
            answers = Responses(sock)
            assert answers.next().status == 200
            assert read_until_closed(sock) == b""

    def test_requests_within_the_timeout_keep_the_connection(self, emulator: WixEmulator) -> None:
        with connect(emulator) as sock:
            answers = Responses(sock)
            statuses = []
            for _ in range(3):
                sock.sendall(token_request())
                statuses.append(answers.next().status)

        assert statuses == [200, 200, 200]

    def test_a_request_begun_late_on_an_idle_connection_gets_the_whole_timeout(self) -> None:
        timeout = 1.0
        emu = WixEmulator(APP_ID, APP_SECRET, request_timeout=timeout)
        emu.install(INSTANCE)
        data = token_request()
        with emu, connect(emu) as sock:
            # The pauses are the stimulus: idle for most of the timeout, then a request
            # whose last byte comes after the timeout counted from the connection.
            time.sleep(timeout * 0.7)
            sock.sendall(data[:20])
            time.sleep(timeout * 0.5)
            sock.sendall(data[20:])
            response = Responses(sock).next()

        assert response.status == 200


class TestTrickledRequests:
    def test_headers_trickled_a_byte_at_a_time_are_cut_off_at_the_deadline(
        self, emulator: WixEmulator
    ) -> None:
        endless_headers = token_request()[:40] + b"X-Slow: " + b"x" * 5000

        with connect(emulator) as sock:
            answer, elapsed = trickle(sock, endless_headers)

        assert answer.startswith(b"HTTP/1.1 408 ")
        assert elapsed < REQUEST_TIMEOUT + SLACK
        assert emulator.token_requests == 0

    def test_a_body_trickled_a_byte_at_a_time_is_cut_off_at_the_deadline(
        self, emulator: WixEmulator
    ) -> None:
        head = token_request(length=b"%d" % (len(TOKEN_BODY) * 100), body=b"")

        with connect(emulator) as sock:
            sock.sendall(head)
            answer, elapsed = trickle(sock, TOKEN_BODY * 100)

        assert answer.startswith(b"HTTP/1.1 408 ")
        assert elapsed < REQUEST_TIMEOUT + SLACK
        assert emulator.token_requests == 0


class TestManyStalledConnections:
    def test_two_hundred_stalled_requests_leave_no_threads_or_connections_behind(self) -> None:
        # Long enough that all 200 are seen open at once even on a loaded machine.
        emulator = WixEmulator(APP_ID, APP_SECRET, request_timeout=2.0)
        emulator.start()
        threads_before = threading.active_count()
        partial = token_request()[:30]  # a request line and part of a header, then nothing
        sockets = [connect(emulator, timeout=2.0 + SLACK) for _ in range(200)]
        try:
            for sock in sockets:
                sock.sendall(partial)
            wait_until(lambda: emulator.open_connections == 200, "200 stalled connections")
            assert threading.active_count() >= threads_before + 200

            answers = []
            for sock in sockets:
                answers.append(read_until_closed(sock))  # returns once the server gives up
                sock.close()
            wait_until(
                lambda: emulator.open_connections == 0, "the stalled connections to be dropped"
            )
            wait_until(
                lambda: threading.active_count() <= threads_before + 2,
                "the handler threads to end",
            )
        finally:
            for sock in sockets:
                sock.close()
            emulator.stop()

        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)
