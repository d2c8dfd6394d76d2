"""``tokenbroker serve`` as a real child process, and raw sockets to abuse it with.

A test starts the server with the options it needs (and, on POSIX, a file-descriptor
limit for the child), waits until ``/healthz`` answers, and reads what the child logs
while it runs: a reader thread per pipe keeps the pipes drained, so a chatty server
never blocks on a full pipe.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

import httpx2

from ..conftest import APP_ID, APP_SECRET
from ..polling import wait_until
from ..webhook_helpers import free_port
from ..workers import worker_env

LOOPBACK = "127.0.0.1"


class ServeProcess:
    """A running ``tokenbroker serve`` child: its address and what it has logged."""

    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port
        self.base = f"http://{LOOPBACK}:{port}"
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._drain, args=(pipe,), daemon=True)
            for pipe in (proc.stdout, proc.stderr)
            if pipe is not None
        ]
        for reader in self._readers:
            reader.start()

    def _drain(self, pipe: IO[str]) -> None:
        for line in pipe:
            with self._lock:
                self._lines.append(line)

    @property
    def log(self) -> str:
        """Everything the child wrote to stdout and stderr so far."""
        with self._lock:
            return "".join(self._lines)

    def wait_for_log(self, needle: str, timeout: float = 10.0) -> None:
        wait_until(lambda: needle in self.log, f"{needle!r} in the server's log", timeout)

    def connect(self) -> socket.socket:
        return socket.create_connection((LOOPBACK, self.port), timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for reader in self._readers:
            reader.join(5)


# The child lowers its own fd limit before it runs the CLI: a ``preexec_fn`` would
# run between fork and exec in this process, which has threads, and may deadlock.
_WITH_FD_LIMIT = """\
import resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))
from tokenbroker.cli import main
main(sys.argv[2:], prog_name="tokenbroker")
"""


@contextlib.contextmanager
def serving(
    store: str,
    public_key: str,
    *options: str,
    fd_limit: int | None = None,
) -> Iterator[ServeProcess]:
    """Run ``tokenbroker serve OPTIONS`` on a free loopback port until it answers."""
    port = free_port()
    env = worker_env(
        {
            "TOKENBROKER_APP_ID": APP_ID,
            "TOKENBROKER_APP_SECRET": APP_SECRET,
            "TOKENBROKER_STORE": store,
            # never asked: these tests fetch no token; a closed loopback port, to be sure
            "TOKENBROKER_API_URL": f"http://{LOOPBACK}:{free_port()}",
            "TOKENBROKER_APP_PUBLIC_KEY": public_key,
        }
    )
    if fd_limit is None:
        argv = [sys.executable, "-m", "tokenbroker.cli"]
    else:
        argv = [sys.executable, "-c", _WITH_FD_LIMIT, str(fd_limit)]
    proc = subprocess.Popen(
        [*argv, "serve", "--port", str(port), *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = ServeProcess(proc, port)
    try:
        deadline = time.monotonic() + 30
        while True:  # poll until it answers (or died)
            assert proc.poll() is None, server.log
            with contextlib.suppress(httpx2.TransportError):
                if httpx2.get(server.base + "/healthz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"tokenbroker serve did not come up:\n{server.log}"
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` (whatever it sends first)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def read_response(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """One HTTP/1.1 response with a Content-Length body, read off a raw socket."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
        left = deadline - time.monotonic()
        assert left > 0, f"no complete response within {timeout}s: {data!r}"
        sock.settimeout(left)
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection mid-response: {data!r}"
        data += chunk
    return data


def _expected_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value.strip())
    return len(head) + 4


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def get_request(path: str = "/healthz") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode()
