"""Webhook throughput: verified ``AppInstalled`` deliveries per second through
``tokenbroker serve`` on loopback, and how long each waits for its answer under that
load (Wix retries a delivery that is not answered 200 within 1250 ms).

The real service runs as a subprocess (``python -m tokenbroker.cli serve``) with a
SQLite temp file as its store and a key pair made here; every body is a distinct
installation, signed RS256 before the clock starts, so each is news and is written to
the store before it is answered. The same client load (``httpx2.AsyncClient``, a fixed
number of requests in flight) is sent, in alternating rounds, to a baseline: a trivial
Starlette app under uvicorn, also a subprocess, that reads the body and answers
``{"ok": true}`` without verifying anything. Throughput and p99 are reported as ratios
to it, and the p99 in milliseconds against Wix's deadline.

A second table gives the in-process cost of ``broker.handle_webhook(body)`` against
``jwt.decode`` alone with RS256 and a loaded key: the floor, since verifying the
signature is the one thing a webhook cannot skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx2
import jwt
from cryptography.hazmat.primitives import serialization

import tokenbroker
from harness import Config, Row, Table, render_table
from tokenbroker import TokenBroker
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.webhooks import make_key_pair, sign_webhook

NAME = "webhooks"

APP_ID = "bench-app"
APP_SECRET = "bench-secret"
CONCURRENCY = 16
ROUNDS = 4
WARM_UP = 2 * CONCURRENCY
DEADLINE_MS = 1250.0
START_TIMEOUT = 30.0
SRC = str(Path(tokenbroker.__file__).parents[1])

SERVICE = "tokenbroker serve: POST /webhooks/wix"
BASELINE = "Starlette + uvicorn: POST / -> {'ok': true}"

# argv: port. The baseline: reads the body as the service does, verifies nothing.
BASELINE_APP = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def hook(request):
    await request.body()
    return JSONResponse({"ok": True})

async def healthz(request):
    return JSONResponse({"status": "ok"})

app = Starlette(routes=[Route("/", hook, methods=["POST"]),
                        Route("/healthz", healthz, methods=["GET"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""

DECODE = "jwt.decode, RS256, loaded key"
VERIFY = "broker.verifier.verify(body)"
NEWS_MEMORY = "broker.handle_webhook(body), news, memory://"
NEWS_SQLITE = "broker.handle_webhook(body), news, SQLite file"
REPEAT = "broker.handle_webhook(body), a repeat, memory://"


# --- the served path ---------------------------------------------------------------


@attrs.frozen
class Load:
    """What one server answered to the whole client load."""

    name: str
    seconds: float  # summed over the rounds
    latencies: tuple[float, ...]  # seconds, one per request
    statuses: dict[int, int]
    news: int

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
    def not_ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    def to_json(self, base: Load) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": self.requests,
            "seconds": round(self.seconds, 4),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "news": self.news,
            "per_second": round(self.per_second, 1),
            "p50_ms": round(self.quantile_ms(0.5), 2),
            "p99_ms": round(self.quantile_ms(0.99), 2),
            "max_ms": round(max(self.latencies) * 1000, 2),
            "over_deadline": sum(t * 1000 > DEADLINE_MS for t in self.latencies),
            "per_second_x_baseline": round(self.per_second / base.per_second, 3),
            "p99_x_baseline": round(self.quantile_ms(0.99) / base.quantile_ms(0.99), 3),
        }


@attrs.frozen
class LoadTable:
    """Rates and answer times rather than ns per call: ``render``/``to_json`` as
    ``harness.Table`` has them, for run.py."""

    title: str
    baseline: str
    rows: tuple[Load, ...]
    notes: tuple[str, ...] = ()

    def _base(self) -> Load:
        return next(r for r in self.rows if r.name == self.baseline)

    def to_json(self) -> dict[str, Any]:
        base = self._base()
        return {
            "title": self.title,
            "baseline": self.baseline,
            "concurrency": CONCURRENCY,
            "deadline_ms": DEADLINE_MS,
            "rows": [r.to_json(base) for r in self.rows],
            "notes": list(self.notes),
        }

    def render(self) -> str:
        base = self._base()
        headers = ("case", "requests", "not 200", "per second", "p50 ms", "p99 ms", "max ms")
        headers += ("x baseline (rate)", "x baseline (p99)")
        body = [
            (
                r.name + (" (baseline)" if r.name == self.baseline else ""),
                f"{r.requests:,}",
                str(r.not_ok),
                f"{r.per_second:,.0f}",
                f"{r.quantile_ms(0.5):.1f}",
                f"{r.quantile_ms(0.99):.1f}",
                f"{max(r.latencies) * 1000:.1f}",
                f"{r.per_second / base.per_second:.2f}",
                f"{r.quantile_ms(0.99) / base.quantile_ms(0.99):.2f}",
            )
            for r in self.rows
        ]
        return render_table(self.title, headers, body, self.notes)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _server(argv: list[str], env: dict[str, str], health_url: str) -> Iterator[None]:
    """Run a server subprocess until the block ends; yields once it answers ``health_url``."""
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                if process.poll() is not None:
                    stderr.seek(0)
                    raise RuntimeError(
                        f"server exited ({process.returncode}): {stderr.read()[-2000:]}"
                    )
                try:
                    if httpx2.get(health_url, timeout=1.0).status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{health_url} did not answer in {START_TIMEOUT:.0f}s")
                time.sleep(0.05)  # a subprocess starting: nothing to observe but the socket
            yield
        finally:
            if process.poll() is None:
                process.terminate()  # uvicorn shuts down cleanly on SIGTERM
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(15)


def _env(extra: dict[str, str]) -> dict[str, str]:
    # Only our settings: a TOKENBROKER_* variable in the caller's shell must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENBROKER_")}
    env["PYTHONPATH"] = os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])
    return {**env, **extra}


async def _send(
    client: httpx2.AsyncClient, url: str, bodies: Sequence[str], record: bool
) -> tuple[float, list[float], Counter[int], int]:
    """Post every body, ``CONCURRENCY`` in flight; (wall, latencies, statuses, news)."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    news = 0
    pending = iter(bodies)

    async def worker() -> None:
        nonlocal news
        for body in pending:  # one iterator shared by every worker
            start = time.perf_counter()
            answer = await client.post(url, content=body)
            elapsed = time.perf_counter() - start
            if record:
                latencies.append(elapsed)
                statuses[answer.status_code] += 1
                news += b'"news":true' in answer.content

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - start, latencies, statuses, news


async def _drive(
    targets: dict[str, str], warm_up: Sequence[str], rounds: Sequence[Sequence[str]]
) -> list[Load]:
    """Warm each target's connections, then send each round to every target, the order
    alternating round by round; bounded by a timeout over the whole load."""
    limits = httpx2.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    totals: dict[str, dict[str, Any]] = {
        name: {"seconds": 0.0, "latencies": [], "statuses": Counter(), "news": 0}
        for name in targets
    }
    budget = 60.0 + 0.25 * sum(len(r) for r in rounds) * len(targets)
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(httpx2.AsyncClient(timeout=10.0, limits=limits))
            for name in targets
        }
        async with asyncio.timeout(budget):
            for name, url in targets.items():
                await _send(clients[name], url, warm_up, record=False)
            names = list(targets)
            for index, bodies in enumerate(rounds):
                for name in names if index % 2 == 0 else reversed(names):
                    wall, latencies, statuses, news = await _send(
                        clients[name], targets[name], bodies, record=True
                    )
                    total = totals[name]
                    total["seconds"] += wall
                    total["latencies"] += latencies
                    total["statuses"] += statuses
                    total["news"] += news
    return [
        Load(
            name=name,
            seconds=t["seconds"],
            latencies=tuple(t["latencies"]),
            statuses=dict(t["statuses"]),
            news=t["news"],
        )
        for name, t in totals.items()
    ]


def _sign(private_pem: str, run_id: str, count: int) -> list[str]:
    # exp an hour ahead: the run must not outlive its bodies (the default is 5 minutes).
    now = int(time.time())
    return [
        sign_webhook(
            private_pem,
            event_type="AppInstalled",
            instance_id=f"wh-{run_id}-{i:06d}",
            data={"appId": APP_ID, "originInstanceId": ""},
            iat=now,
            exp=now + 3600,
        )
        for i in range(count)
    ]


def _served(
    emu: WixEmulator, tmp: Path, public_pem: str, warm_up: list[str], bodies: list[str]
) -> LoadTable:
    store = f"sqlite:///{tmp / 'served.db'}"
    service_port, baseline_port = _free_port(), _free_port()
    service_env = _env(
        {
            "TOKENBROKER_APP_ID": APP_ID,
            "TOKENBROKER_APP_SECRET": APP_SECRET,
            "TOKENBROKER_STORE": store,
            "TOKENBROKER_API_URL": emu.url,
            "TOKENBROKER_APP_PUBLIC_KEY": public_pem,
        }
    )
    service = [sys.executable, "-m", "tokenbroker.cli", "serve", "--host", "127.0.0.1"]
    service += ["--port", str(service_port), "--log-level", "warning"]
    baseline = [sys.executable, "-c", BASELINE_APP, str(baseline_port)]
    service_url = f"http://127.0.0.1:{service_port}"
    baseline_url = f"http://127.0.0.1:{baseline_port}"
    size = len(bodies) // ROUNDS
    rounds = [bodies[i * size : (i + 1) * size] for i in range(ROUNDS)]
    with (
        _server(service, service_env, f"{service_url}/healthz"),
        _server(baseline, _env({}), f"{baseline_url}/healthz"),
    ):
        targets = {BASELINE: f"{baseline_url}/", SERVICE: f"{service_url}/webhooks/wix"}
        loads = asyncio.run(_drive(targets, warm_up, rounds))
    with TokenBroker(app_id=APP_ID, app_secret=APP_SECRET, store=store, api_url=emu.url) as b:
        recorded = len(b.installations())
    return _load_table(loads, recorded, len(warm_up) + size * ROUNDS)


def _load_table(loads: list[Load], recorded: int, sent: int) -> LoadTable:
    by_name = {load.name: load for load in loads}
    base, served = by_name[BASELINE], by_name[SERVICE]
    p99 = served.quantile_ms(0.99)
    late = sum(t * 1000 > DEADLINE_MS for t in served.latencies)
    notes = [
        f"{served.requests:,} distinct signed AppInstalled bodies to each server, "
        f"{CONCURRENCY} in flight, in {ROUNDS} rounds alternating which server goes first; "
        f"{WARM_UP} more per server first to open connections (not counted)",
        f"the service's p99 is {p99:.1f} ms, {p99 / DEADLINE_MS:.1%} of Wix's "
        f"{DEADLINE_MS:.0f} ms deadline; {late} answer(s) took longer",
        f"from the rates: each verified delivery takes "
        f"{(1 / served.per_second - 1 / base.per_second) * 1e6:,.0f} us more of the "
        "machine than the baseline's answer",
        f"the store (SQLite temp file) holds {recorded:,} installations after the load, "
        f"of {sent:,} sent; {served.news:,} of {served.requests:,} timed answers said news",
        f"the client (this process) and both servers share {os.cpu_count()} CPUs; uvicorn "
        f"runs with {_uvicorn_stack()} in both servers",
    ]
    if served.not_ok or base.not_ok:
        notes.append(
            f"WARNING: answers other than 200: service {served.statuses}, baseline {base.statuses}"
        )
    if served.news != served.requests:
        notes.append(
            f"WARNING: only {served.news:,} of {served.requests:,} deliveries were recorded as news"
        )
    return LoadTable(
        title=f"webhooks through tokenbroker serve, {CONCURRENCY} in flight",
        baseline=BASELINE,
        rows=(base, served),
        notes=tuple(notes),
    )


def _uvicorn_stack() -> str:
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{http} and the {loop} loop"


# --- in process ----------------------------------------------------------------------


def _in_process(
    emu: WixEmulator, tmp: Path, public_pem: str, bodies: list[str], config: Config
) -> Table:
    """Every case walks the same bodies once per round (rounds rotate the order); the
    cases that must see news get a broker with an empty store each round."""
    key = serialization.load_pem_public_key(public_pem.encode())
    encoded = [body.encode() for body in bodies]
    made: list[TokenBroker] = []

    def broker(store: str) -> TokenBroker:
        made.append(
            TokenBroker(
                app_id=APP_ID,
                app_secret=APP_SECRET,
                store=store,
                api_url=emu.url,
                public_key=public_pem,
            )
        )
        made[-1].verifier  # noqa: B018 - load the key before the clock runs
        return made[-1]

    repeat = broker("memory://")
    for body in encoded:
        repeat.handle_webhook(body)

    def decode(body: bytes) -> object:
        return jwt.decode(body, key, algorithms=["RS256"])

    def sqlite_news() -> Callable[[bytes], object]:
        return broker(f"sqlite:///{tmp / f'news-{len(made)}.db'}").handle_webhook

    setups: dict[str, Callable[[], Callable[[bytes], object]]] = {
        DECODE: lambda: decode,
        VERIFY: lambda: repeat.verifier.verify,
        NEWS_MEMORY: lambda: broker("memory://").handle_webhook,
        NEWS_SQLITE: sqlite_news,
        REPEAT: lambda: repeat.handle_webhook,
    }
    names = list(setups)
    samples: dict[str, list[float]] = {name: [] for name in names}
    try:
        for round_ in range(config.repeat):
            shift = round_ % len(names)
            for name in (*names[shift:], *names[:shift]):
                fn = setups[name]()
                samples[name].append(_timed(fn, encoded) / len(encoded))
    finally:
        for b in made:
            b.close()
    base_best, base_median = min(samples[DECODE]), statistics.median(samples[DECODE])
    rows = tuple(
        Row(
            name=name,
            number=len(encoded),
            samples_ns=tuple(samples[name]),
            best_ratio=min(samples[name]) / base_best,
            median_ratio=statistics.median(samples[name]) / base_median,
        )
        for name in names
    )
    best = {row.name: row.best_ns / 1000 for row in rows}
    notes = (
        f"us per call (best): jwt.decode {best[DECODE]:.1f}, verify {best[VERIFY]:.1f}, "
        f"handle_webhook news on memory:// {best[NEWS_MEMORY]:.1f}, on SQLite "
        f"{best[NEWS_SQLITE]:.1f}, a repeat {best[REPEAT]:.1f}",
        f"{len(encoded):,} distinct bodies per timed loop; news cases get an empty store "
        "each round, so every call records an installation (and runs the plugin hooks)",
    )
    return Table(
        title="in process: broker.handle_webhook(body) vs the RS256 check alone",
        baseline=DECODE,
        rows=rows,
        notes=notes,
    )


def _timed(fn: Callable[[bytes], object], bodies: Sequence[bytes]) -> int:
    # As harness does: a collection landing inside one sample is noise, not signal.
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for body in bodies:
            fn(body)
        return time.perf_counter_ns() - start
    finally:
        gc.enable()


def run(config: Config) -> list[Any]:
    count = 400 if config.quick else 2000
    private_pem, public_pem = make_key_pair("bench-webhooks")
    run_id = os.urandom(3).hex()
    signed = _sign(private_pem, run_id, WARM_UP + count)
    warm_up, bodies = signed[:WARM_UP], signed[WARM_UP:]
    with WixEmulator(APP_ID, APP_SECRET) as emu, tempfile.TemporaryDirectory() as tmp:
        served = _served(emu, Path(tmp), public_pem, warm_up, bodies)
        local = _in_process(emu, Path(tmp), public_pem, bodies, config)
    return [served, local]
