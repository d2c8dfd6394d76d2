"""Running the service under uvicorn with the limits a public endpoint needs.

uvicorn closes a connection only when it idles *between* requests
(``timeout_keep_alive``: armed when a response completes, cancelled by the next
byte). Nothing bounds how long a client may take to *send* a request: a connection
that sends nothing, or trickles its request a byte at a time (slowloris), is held
open for ever, and enough of them use up the process's file descriptors. uvicorn
has no setting for this (its issue #157 proposes one); its extension point is the
``http=`` protocol class, so :class:`ReceiptDeadlineProtocol` subclasses its h11
protocol and adds a deadline for receiving each whole request.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import socket
import stat
from collections.abc import Iterator
from typing import Any, ClassVar, Final

from . import require

require("uvicorn", "tokenbroker serve")

import h11  # noqa: E402 - uvicorn's dependency, known to be there from here on
import uvicorn  # noqa: E402
from uvicorn.config import LOG_LEVELS, LOGGING_CONFIG, Config  # noqa: E402
from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from ..core.errors import ConfigError  # noqa: E402

log = logging.getLogger("tokenbroker.service")

UDS_MODE: Final = 0o660
"""A Unix socket's permissions: its owner and group may connect, nobody else."""

# The client states in which it still owes us (the rest of) a request.
_OWED: Final = (h11.IDLE, h11.SEND_BODY)
_REQUEST_TIMEOUT: Final = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 15\r\n"
    b"connection: close\r\n\r\n"
    b"Request Timeout"
)


class ReceiptDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for receiving each request.

    The deadline runs from the moment the connection is accepted (for its first
    request) or from the first byte of a later request on a kept-alive connection,
    until the request's headers and body have all arrived; the app's own time does
    not count. It is one absolute deadline, not reset by each byte, so trickling
    does not extend it. When it passes, a client that had started a request gets a
    ``408`` and the connection is closed. Idling between requests stays uvicorn's
    ``timeout_keep_alive``.
    """

    receipt_timeout: ClassVar[float] = 10.0

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._receipt_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is cut off too

    def data_received(self, data: bytes) -> None:
        if self._owes_request():
            self._arm()  # the first byte of a request after a keep-alive pause
        super().data_received(data)
        self._disarm_if_received()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn has just parsed whatever was pipelined behind the request; a
        # partial next request is owed from now, an idle connection is keep-alive's
        if self._owes_request() and (
            self.conn.their_state is h11.SEND_BODY or self.conn.trailing_data[0]
        ):
            self._arm()
        else:
            self._disarm_if_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _owes_request(self) -> bool:
        return self.conn.their_state in _OWED and not self.transport.is_closing()

    def _arm(self) -> None:
        if self._receipt_deadline is None and not self.transport.is_closing():
            self._receipt_deadline = self.loop.call_later(self.receipt_timeout, self._overdue)

    def _disarm(self) -> None:
        if self._receipt_deadline is not None:
            self._receipt_deadline.cancel()
            self._receipt_deadline = None

    def _disarm_if_received(self) -> None:
        if not self._owes_request():
            self._disarm()

    def _overdue(self) -> None:
        self._receipt_deadline = None
        # still owed: a request not (wholly) received, or an idle connection that
        # uvicorn left without a keep-alive timer (after draining an early 413's body)
        if not self._owes_request():
            return
        started = self.conn.their_state is h11.SEND_BODY or bool(self.conn.trailing_data[0])
        # a 408 only where a response may still begin: not after an early 413
        if started and self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.transport.write(_REQUEST_TIMEOUT)
        # DEBUG, not INFO: whoever opens slow connections must not also fill the log
        log.debug(
            "closing a connection from %s: no whole request within %gs",
            f"{self.client[0]}:{self.client[1]}" if self.client else "?",
            self.receipt_timeout,
        )
        self.transport.close()


def receipt_deadline_protocol(seconds: float) -> type[ReceiptDeadlineProtocol]:
    """:class:`ReceiptDeadlineProtocol` with its deadline set to ``seconds``.

    uvicorn builds one protocol per connection from a class and its own ``Config``,
    so the setting travels on the class."""

    class Configured(ReceiptDeadlineProtocol):
        receipt_timeout = seconds

    return Configured


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging setup plus tokenbroker's own loggers, named in each line.

    uvicorn configures only its ``uvicorn*`` loggers; without this, tokenbroker's
    INFO lines (a rejected webhook, say) would reach no handler at all."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["tokenbroker"] = {
        "()": "uvicorn.logging.DefaultFormatter",
        "fmt": "%(levelprefix)s %(name)s: %(message)s",
        "use_colors": None,
    }
    config["handlers"]["tokenbroker"] = {
        "formatter": "tokenbroker",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["tokenbroker"] = {
        "handlers": ["tokenbroker"],
        "level": LOG_LEVELS[level],
        "propagate": False,
    }
    return config


@contextlib.contextmanager
def unix_socket(path: str) -> Iterator[socket.socket]:
    """A listening Unix socket at ``path``, mode 0660 from the moment it exists.

    uvicorn's own ``uds=`` makes the socket 0666 (anyone on the host may connect), so
    the socket is bound here, under a umask that leaves it 0660, and handed to uvicorn
    as a file descriptor. A stale socket file (nothing listens on it) is replaced; a
    live one, or a path that is not a socket, is a ``ConfigError``. The file is
    removed when the block ends.
    """
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        previous = os.umask(0o777 & ~UDS_MODE)
        try:
            sock.bind(path)
        finally:
            os.umask(previous)
        os.chmod(path, UDS_MODE)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on the Unix socket {path}: {exc.strerror}") from None
    try:
        yield sock
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _clear_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"--uds {path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:  # nothing listens: a socket left behind by a process that died
        os.unlink(path)
    else:
        raise ConfigError(f"--uds {path}: another process is listening on it")
    finally:
        probe.close()


def run(
    app: Any,
    *,
    host: str,
    port: int,
    log_level: str,
    receipt_timeout: float,
    timeout_keep_alive: int,
    limit_concurrency: int,
    uds: str | None = None,
    metrics_port: int | None = None,
) -> None:
    """Serve ``app`` until interrupted: at most ``limit_concurrency`` connections are
    served (a request on one more gets 503), each request must arrive within
    ``receipt_timeout`` seconds, and an idle connection lasts ``timeout_keep_alive``.
    With ``uds``, on that Unix socket (mode 0660) instead of ``host`` and ``port``.
    With ``metrics_port``, ``GET /metrics`` is also served on its own listener on
    127.0.0.1 at that port (see ``serve_with_metrics``)."""
    options: dict[str, Any] = {
        "http": receipt_deadline_protocol(receipt_timeout),
        "ws": "none",  # the service has no WebSocket routes
        "log_level": log_level,
        "log_config": log_config(log_level),
        "timeout_keep_alive": timeout_keep_alive,
        # uvicorn answers 503 once the open connections, counting the one asking,
        # reach its limit: one more makes ours mean "N connections are served"
        "limit_concurrency": limit_concurrency + 1,
    }
    if metrics_port is not None:
        with contextlib.ExitStack() as stack:
            where: dict[str, Any] = {"host": host, "port": port}
            if uds is not None:
                where = {"fd": stack.enter_context(unix_socket(uds)).fileno()}
            metrics = stack.enter_context(metrics_socket(metrics_port))
            serve_with_metrics(Config(app, **where, **options), metrics, log_level)
        return
    if uds is None:
        uvicorn.run(app, host=host, port=port, **options)
        return
    with unix_socket(uds) as sock:
        uvicorn.run(app, fd=sock.fileno(), **options)


METRICS_HOST: Final = "127.0.0.1"


@contextlib.contextmanager
def metrics_socket(port: int) -> Iterator[socket.socket]:
    """A listening socket on loopback for the metrics-only listener (bound now, so a
    port in use is a ``ConfigError`` before anything starts)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((METRICS_HOST, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen for metrics on {METRICS_HOST}:{port}: {exc.strerror}"
        ) from None
    try:
        yield sock
    finally:
        sock.close()


class _Sidecar(uvicorn.Server):
    """A uvicorn server that leaves the signals to the main one (which stops it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve_with_metrics(config: Config, metrics: socket.socket, log_level: str) -> None:
    """Run the main server and, beside it on the same loop, a metrics-only one on
    ``metrics`` (a bound socket): stopping the main server stops both."""
    from .metrics import metrics_app  # noqa: PLC0415 - prometheus-client, asked for

    sidecar = _Sidecar(
        Config(
            metrics_app(),
            fd=metrics.fileno(),
            lifespan="off",
            ws="none",
            log_level=log_level,
            log_config=None,  # the main server's logging setup holds for both
            access_log=False,
            limit_concurrency=16,
        )
    )
    main = uvicorn.Server(config)

    async def both() -> None:
        side = asyncio.create_task(sidecar.serve())
        try:
            await main.serve()
        finally:
            sidecar.should_exit = True
            await side

    asyncio.run(both())
