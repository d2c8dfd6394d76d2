"""What the benchmarks over loopback HTTP share: server subprocesses, a lean client, and
load tables.

The servers run as subprocesses (``python -m tokenbroker.cli ...`` or ``python -c``),
each polled until it answers. The client is this process: a minimal HTTP/1.1 keep-alive
client on asyncio streams (``Connection``), the same for every server in a table, so
that the client's own cost stays small on a machine whose few CPUs it shares with the
servers and is the same for the case and its baseline. ``drive`` sends a fixed number
of requests in flight to each target in alternating rounds; ``LoadTable`` reports rates
and answer times as ratios to the baseline measured in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx2

import tokenbroker
from harness import render_table

SRC = str(Path(tokenbroker.__file__).parents[1])
TOKENBROKER = (sys.executable, "-m", "tokenbroker.cli")
START_TIMEOUT = 60.0  # seconds for a server subprocess to answer
ANSWER_TIMEOUT = 30.0  # seconds for any one answer

# ``tokenbroker serve``'s defaults but for the log level (warning: neither uvicorn's access
# log nor the service's INFO line per call is written), given explicitly to the service
# and to its baseline so that both are served the same way (see ``serve_baseline``).
SERVE_SETTINGS: Mapping[str, str] = {
    "--log-level": "warning",
    "--receipt-timeout": "10",
    "--timeout-keep-alive": "5",
    "--limit-concurrency": "100",
}

# argv: port, then SERVE_SETTINGS' values in order. A bare Starlette endpoint returning a
# constant, run by the same function ``tokenbroker serve`` runs its app with.
BASELINE_APP = """
import sys
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from tokenbroker.service.server import run

CONSTANT = {"access_token": "OAUTH2.constant", "token_type": "Bearer",
            "expires_at": "2026-12-02T12:00:00Z", "refresh_at": "2026-12-02T11:55:00Z"}

async def constant(request):
    return JSONResponse(CONSTANT, headers={"cache-control": "no-store"})

async def healthz(request):
    return JSONResponse({"status": "ok"})

app = Starlette(routes=[Route("/constant", constant, methods=["GET"]),
                        Route("/healthz", healthz, methods=["GET"])])
port, level, receipt, keep_alive, limit = sys.argv[1:6]
run(app, host="127.0.0.1", port=int(port), log_level=level, receipt_timeout=float(receipt),
    timeout_keep_alive=int(keep_alive), limit_concurrency=int(limit))
"""


class BenchFailed(RuntimeError):
    """A benchmark's correctness check did not hold (e.g. a herd reached Wix twice)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any ``TOKENBROKER_*`` (the caller's shell must not leak
    in), ``src`` first on ``PYTHONPATH``, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOKENBROKER_")}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
    return {**base, **(extra or {})}


def answers(url: str) -> bool:
    """True once ``url`` answers 200."""
    try:
        return httpx2.get(url, timeout=1.0).status_code == 200
    except httpx2.TransportError:
        return False


@contextlib.contextmanager
def server(
    what: str, argv: Sequence[str], environ: Mapping[str, str], ready: Callable[[], bool]
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server subprocess (``what``, for errors) until the block ends; yields once
    ``ready()`` holds."""
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            list(argv), env=dict(environ), stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not ready():
                if process.poll() is not None:
                    stderr.seek(0)
                    raise RuntimeError(
                        f"{what} exited ({process.returncode}): {stderr.read()[-2000:]}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what} did not come up in {START_TIMEOUT:.0f}s")
                time.sleep(0.05)  # a subprocess starting: nothing to observe but the socket
            yield process
        finally:
            if process.poll() is None:
                process.terminate()  # uvicorn and the emulator stop cleanly on SIGTERM
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(15)


def serve_baseline(port: int) -> list[str]:
    """argv for ``BASELINE_APP`` on ``port``, with ``SERVE_SETTINGS``."""
    return [sys.executable, "-c", BASELINE_APP, str(port), *SERVE_SETTINGS.values()]


def serve_settings(overrides: Mapping[str, str] | None = None) -> list[str]:
    """``SERVE_SETTINGS`` with ``overrides``, as ``tokenbroker serve`` options."""
    settings = {**SERVE_SETTINGS, **(overrides or {})}
    return [part for option in settings.items() for part in option]


def uvicorn_stack() -> str:
    """What uvicorn runs on here (``tokenbroker serve`` uses h11 whatever is installed)."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"uvicorn's h11 protocol with tokenbroker's receipt deadline, the {loop} loop"


# --- the client ------------------------------------------------------------------------


@attrs.frozen
class Answer:
    status: int
    headers: Mapping[str, str]  # lower-cased names; a repeated header keeps the last
    body: bytes


class Connection:
    """One kept-alive HTTP/1.1 connection: write a request, read its answer.

    Just enough HTTP for these benchmarks: a ``Content-Length`` or chunked body, or one
    ended by the server closing the connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self._reader = reader
        self._writer = writer
        self._host = host

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        parts = urllib.parse.urlsplit(base_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"not a URL with a host and a port: {base_url}")
        # asyncio sets TCP_NODELAY on TCP connections itself
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer, parts.netloc)

    def send(
        self, method: str, target: str, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> None:
        lines = [f"{method} {target} HTTP/1.1", f"host: {self._host}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-length: {len(body)}")
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    async def flush(self) -> None:
        """Wait until what ``send`` wrote has gone to the kernel."""
        await self._writer.drain()

    async def receive(self) -> Answer:
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self._reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await self._reader.read()
        return Answer(status, headers, body)

    async def _chunked(self) -> bytes:
        chunks = []
        while True:
            size = int((await self._reader.readline()).split(b";")[0], 16)
            if size == 0:
                while await self._reader.readline() not in (b"\r\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append((await self._reader.readexactly(size + 2))[:-2])

    async def request(
        self, method: str, target: str, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> Answer:
        self.send(method, target, headers, body)
        await self._writer.drain()
        return await self.receive()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


# --- load ------------------------------------------------------------------------------


def cpu_seconds(pids: Sequence[int]) -> float | None:
    """User plus system CPU seconds the processes ``pids`` have used so far, from
    ``/proc`` (Linux); ``None`` where it cannot be read."""
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # the command name (field 2) may hold spaces: count from its closing parenthesis
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@attrs.frozen
class Target:
    """One endpoint to load: ``method`` ``target`` on the server at ``base_url``, whose
    work is done by the processes ``pids`` (for their CPU time; none: not counted)."""

    base_url: str
    target: str
    headers: Mapping[str, str] = attrs.field(factory=dict)
    method: str = "GET"
    pids: tuple[int, ...] = ()


@attrs.frozen
class Load:
    """What one target answered to the whole client load."""

    name: str
    seconds: float  # summed over the rounds
    latencies: tuple[float, ...]  # seconds, one per request
    statuses: Mapping[int, int]
    cpu: float | None  # CPU seconds of the target's processes over the rounds

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000

    @property
    def cpu_us(self) -> float | None:
        """The serving processes' CPU microseconds per request."""
        return None if self.cpu is None else self.cpu / self.requests * 1e6

    @property
    def not_ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    def to_json(self, base: Load) -> dict[str, Any]:
        cpu_ratio = (
            round(self.cpu_us / base.cpu_us, 3)
            if self.cpu_us is not None and base.cpu_us  # None, or 0 from a coarse clock
            else None
        )
        return {
            "name": self.name,
            "requests": self.requests,
            "seconds": round(self.seconds, 4),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "per_second": round(self.per_second, 1),
            "p50_ms": round(self.quantile_ms(0.5), 3),
            "p99_ms": round(self.quantile_ms(0.99), 3),
            "max_ms": round(max(self.latencies) * 1000, 3),
            "server_cpu_us_per_request": None if self.cpu_us is None else round(self.cpu_us, 1),
            "per_second_x_baseline": round(self.per_second / base.per_second, 3),
            "p50_x_baseline": round(self.quantile_ms(0.5) / base.quantile_ms(0.5), 3),
            "p99_x_baseline": round(self.quantile_ms(0.99) / base.quantile_ms(0.99), 3),
            "server_cpu_x_baseline": cpu_ratio,
        }


@attrs.frozen
class LoadTable:
    """Rates and answer times rather than ns per call: ``render``/``to_json`` as
    ``harness.Table`` has them, for run.py."""

    title: str
    baseline: str
    rows: tuple[Load, ...]
    concurrency: int
    notes: tuple[str, ...] = ()

    def _base(self) -> Load:
        return next(r for r in self.rows if r.name == self.baseline)

    def to_json(self) -> dict[str, Any]:
        base = self._base()
        return {
            "title": self.title,
            "baseline": self.baseline,
            "concurrency": self.concurrency,
            "rows": [r.to_json(base) for r in self.rows],
            "notes": list(self.notes),
        }

    def render(self) -> str:
        base = self._base()
        headers = ("case", "requests", "not 200", "per second", "p50 ms", "p99 ms", "max ms")
        headers += ("server CPU us/req", "x baseline: rate", "p50", "p99", "CPU")
        body = [
            (
                r.name + (" (baseline)" if r.name == self.baseline else ""),
                f"{r.requests:,}",
                str(r.not_ok),
                f"{r.per_second:,.0f}",
                f"{r.quantile_ms(0.5):.2f}",
                f"{r.quantile_ms(0.99):.2f}",
                f"{max(r.latencies) * 1000:.1f}",
                "-" if r.cpu_us is None else f"{r.cpu_us:,.0f}",
                f"{r.per_second / base.per_second:.2f}",
                f"{r.quantile_ms(0.5) / base.quantile_ms(0.5):.2f}",
                f"{r.quantile_ms(0.99) / base.quantile_ms(0.99):.2f}",
                f"{r.cpu_us / base.cpu_us:.2f}" if r.cpu_us is not None and base.cpu_us else "-",
            )
            for r in self.rows
        ]
        return render_table(self.title, headers, body, self.notes)

    def check(self) -> None:
        """Raise ``BenchFailed`` when any answer was not 200: the figures would be
        those of an error path."""
        bad = {r.name: dict(r.statuses) for r in self.rows if r.not_ok}
        if bad:
            print(self.render())
            raise BenchFailed(f"{self.title}: answers other than 200: {bad}")


@attrs.frozen
class _Round:
    wall: float
    latencies: list[float]
    statuses: Counter[int]
    cpu: float | None


async def _round(target: Target, concurrency: int, count: int, record: bool) -> _Round:
    """``count`` requests, ``concurrency`` connections each sending back to back. The
    connections are fresh each round (so none idles into a keep-alive timeout), opened
    and each sent 2 requests before the clock starts."""
    connections = [await Connection.open(target.base_url) for _ in range(concurrency)]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    try:
        for connection in connections:
            for _ in range(2):
                await connection.request(target.method, target.target, target.headers)
        left = count

        async def worker(connection: Connection) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                start = time.perf_counter()
                answer = await connection.request(target.method, target.target, target.headers)
                if record:
                    latencies.append(time.perf_counter() - start)
                    statuses[answer.status] += 1

        cpu_before = cpu_seconds(target.pids) if target.pids else None
        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in connections))
        wall = time.perf_counter() - start
        cpu_after = cpu_seconds(target.pids) if target.pids else None
    finally:
        for connection in connections:
            await connection.close()
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return _Round(wall, latencies, statuses, cpu)


async def drive(
    targets: Mapping[str, Target], *, concurrency: int, rounds: int, per_round: int
) -> list[Load]:
    """Send ``per_round`` requests to every target per round, ``concurrency`` in flight,
    the targets' order alternating round by round; bounded by a timeout over the whole
    load. Half a round per target first warms the servers up and is not counted."""
    done: dict[str, list[_Round]] = {name: [] for name in targets}
    names = list(targets)
    async with asyncio.timeout(ANSWER_TIMEOUT + 0.1 * rounds * per_round * len(targets)):
        for name in names:
            await _round(targets[name], concurrency, per_round // 2, record=False)
        for index in range(rounds):
            for name in names if index % 2 == 0 else reversed(names):
                done[name].append(await _round(targets[name], concurrency, per_round, True))
    loads = []
    for name, runs in done.items():
        cpus = [r.cpu for r in runs]
        loads.append(
            Load(
                name=name,
                seconds=sum(r.wall for r in runs),
                latencies=tuple(t for r in runs for t in r.latencies),
                statuses=dict(sum((r.statuses for r in runs), Counter())),
                cpu=None if None in cpus else sum(c for c in cpus if c is not None),
            )
        )
    return loads


# --- tokenbroker serve --token-api -----------------------------------------------------

APP_ID = "bench-app"
APP_SECRET = "bench-secret"
APP = "default"  # the one app the TOKENBROKER_* variables configure


def service_env(api_url: str, store: str) -> dict[str, str]:
    """The environment for ``tokenbroker serve`` and ``tokenbroker service-key``: one app
    (``default``) on ``store``, talking to the emulator at ``api_url``."""
    from tokenbroker.testing.webhooks import make_key_pair  # noqa: PLC0415

    return env(
        {
            "TOKENBROKER_APP_ID": APP_ID,
            "TOKENBROKER_APP_SECRET": APP_SECRET,
            "TOKENBROKER_STORE": store,
            "TOKENBROKER_API_URL": api_url,
            # serve verifies webhooks too, and will not start without a key for them
            "TOKENBROKER_APP_PUBLIC_KEY": make_key_pair("bench-token-api")[1],
        }
    )


def add_service_key(environ: Mapping[str, str], name: str, scope: str) -> str:
    """``tokenbroker service-key add NAME --app default --scope SCOPE``: the key it
    prints, once."""
    done = subprocess.run(
        [*TOKENBROKER, "service-key", "add", name, "--app", APP, "--scope", scope, "--json"],
        env=dict(environ),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"service-key add exited {done.returncode}: {done.stderr[-2000:]}")
    key: str = json.loads(done.stdout)["key"]
    return key


def token_path(instance_id: str) -> str:
    return f"/v1/apps/{APP}/instances/{urllib.parse.quote(instance_id, safe='')}/token"


def proxy_path(instance_id: str, wix_path: str) -> str:
    instance = urllib.parse.quote(instance_id, safe="")
    return f"/v1/apps/{APP}/instances/{instance}/wix/{wix_path.lstrip('/')}"


@attrs.frozen
class Running:
    """A server subprocess up and answering: where, and which process."""

    url: str
    pid: int


@contextlib.contextmanager
def token_service(
    environ: Mapping[str, str], settings: Mapping[str, str] | None = None
) -> Iterator[Running]:
    """``tokenbroker serve --token-api`` with ``SERVE_SETTINGS`` (``settings`` override
    them) on a free port until the block ends; yields it once ``/healthz`` answers."""
    port = free_port()
    argv = [*TOKENBROKER, "serve", "--token-api"]
    argv += ["--host", "127.0.0.1", "--port", str(port), *serve_settings(settings)]
    url = f"http://127.0.0.1:{port}"
    ready = lambda: answers(url + "/healthz")  # noqa: E731
    with server("tokenbroker serve --token-api", argv, environ, ready) as process:
        yield Running(url, process.pid)


@contextlib.contextmanager
def baseline_service() -> Iterator[Running]:
    """``BASELINE_APP`` on a free port until the block ends; yields it once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ready = lambda: answers(url + "/healthz")  # noqa: E731
    with server("the Starlette baseline", serve_baseline(port), env(), ready) as process:
        yield Running(url, process.pid)
