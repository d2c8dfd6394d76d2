"""``tokenbroker serve`` under many connections: idle sockets are shed, excess load gets 503."""

from __future__ import annotations

import selectors
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from .conftest import PUBLIC
from .serving import ServeProcess, get_request, read_response, serving, status_of

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX fd limits")

FD_LIMIT = 256
IDLE_SOCKETS = 300  # more than the server may have open


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def all_closed_by_peer(socks: list[socket.socket], timeout: float) -> int:
    """How many of ``socks`` the server closes within ``timeout`` (what it sends is dropped)."""
    deadline = time.monotonic() + timeout
    pending = set(socks)
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        while pending and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(timeout=min(left, 0.5)):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except ConnectionResetError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    pending.discard(sock)
    return len(socks) - len(pending)


def healthz_within(base: str, timeout: float) -> float:
    """Seconds until ``/healthz`` answers 200, failing after ``timeout``."""
    start = time.monotonic()
    statuses: list[str] = []
    while (left := start + timeout - time.monotonic()) > 0:
        try:
            status = httpx2.get(base + "/healthz", timeout=min(left, 2.0)).status_code
        except httpx2.TransportError as exc:
            statuses.append(type(exc).__name__)
        else:
            if status == 200:
                return time.monotonic() - start
            statuses.append(str(status))
            time.sleep(0.1)  # a 503 comes back at once: do not hammer the server
    raise AssertionError(f"/healthz did not answer 200 within {timeout}s: {statuses}")


class TestFileDescriptorLimit:
    @pytest.fixture
    def fd_limited(self, tmp_path: Path) -> Iterator[ServeProcess]:
        with serving(
            f"sqlite:///{tmp_path / 'tokens.db'}",
            PUBLIC,
            "--receipt-timeout",
            "1",
            fd_limit=FD_LIMIT,
        ) as server:
            yield server

    def test_idle_sockets_beyond_the_fd_limit_are_shed_and_healthz_answers(
        self, fd_limited: ServeProcess, sockets: list[socket.socket]
    ) -> None:
        # the kernel completes these connections in the backlog even past the server's limit
        sockets.extend(fd_limited.connect() for _ in range(IDLE_SOCKETS))
        # each idle socket lives about one receipt deadline after the server accepts it;
        # those left in the backlog by the fd limit are accepted as the first ones close
        assert healthz_within(fd_limited.base, timeout=15.0) < 15.0
        assert all_closed_by_peer(sockets, timeout=10.0) == IDLE_SOCKETS


class TestConcurrencyLimit:
    LIMIT = 3

    @pytest.fixture
    def limited(self, tmp_path: Path) -> Iterator[ServeProcess]:
        with serving(
            f"sqlite:///{tmp_path / 'tokens.db'}",
            PUBLIC,
            "--limit-concurrency",
            str(self.LIMIT),
            "--timeout-keep-alive",
            "30",
        ) as server:
            yield server

    def test_the_connection_beyond_the_limit_gets_503_and_a_freed_slot_serves_again(
        self, limited: ServeProcess, sockets: list[socket.socket]
    ) -> None:
        for _ in range(self.LIMIT):  # each answered, then kept alive and counted
            sockets.append(sock := limited.connect())
            sock.sendall(get_request())
            assert status_of(read_response(sock)) == 200
        sockets.append(extra := limited.connect())
        extra.sendall(get_request())
        answer = read_response(extra)
        assert status_of(answer) == 503
        assert b"connection: close" in answer.lower()
        assert all_closed_by_peer([extra], timeout=5.0) == 1
        limited.wait_for_log("Exceeded concurrency limit")
        sockets[0].close()  # one of the served connections goes away
        assert healthz_within(limited.base, timeout=10.0) < 10.0
