"""A bulk refresh: ``broker.refresh_due(concurrency=50)`` over 10,000 installations
(1,000 with --quick) that have no token yet, against the emulator answering after 50 ms,
on SQLite, PostgreSQL and Redis.

The baseline, run first against the same emulator: the same N token requests fired
straight at it by 50 threads, each on one keep-alive ``http.client`` connection, which
is as fast as this machine and this emulator can go. Also timed: ``httpx2.AsyncClient``
at the same concurrency (what an httpx2-based refresher could reach), and the ideal,
N x latency / concurrency. For each store the table gives the wall time as a multiple
of the baseline (goal: at most 1.25x), the most token requests the emulator saw in
flight at once (goal: at most 50), how many it received (must be N), the memory the
refresh left behind per installation (goal: at most 1 KiB), and the store calls and
round trips it made per installation.

Memory is the RSS delta (``/proc/self/statm``): resident set after the refresh, its
report dropped and ``gc.collect()`` run, minus the resident set just before it (after a
warm-up ``broker.token()`` that built the HTTP client and imported what a fetch needs).
It includes what the allocator keeps but does not hand back, so it is an upper bound.
Store calls are counted on proxies in front of the engine's store (the per-key flow
ops) and of the refresher's batch operations (``bulk_for``; one call a batch);
round trips are SQL statements executed (SQLAlchemy ``before_cursor_execute``, plus
commits, plus on a server the driver's own ``BEGIN`` of each transaction) or Redis
packets sent (``send_packed_command``: a pipeline is one).

Each run is in a subprocess of its own, so the emulator (in this process) does not share
a GIL with it, as Wix would not; it waits, once warmed up, for the counters to be reset.
PostgreSQL and Redis are the shared servers (``tokenbroker.testing.servers``) under a
prefix of this run's own, removed afterwards; SQLite is a temp file.

100,000 installations on PostgreSQL and Redis take a while (seeding them most of it),
so they run only when asked: ``TOKENBROKER_BENCH_BULK_LARGE=1`` adds them, ``=only``
runs them alone. ``TOKENBROKER_BENCH_BULK_STORES=postgresql,redis`` keeps only the
stores named (SQLite, PostgreSQL, Redis).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

import tokenbroker
from backends import Backend
from harness import Config, render_table
from tokenbroker import TokenBroker
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.servers import POSTGRES_URLS, REDIS_URLS, first_reachable

NAME = "bulk_refresh"

APP_ID = "bench-app"
APP_SECRET = "bench-secret"
LATENCY = 0.05
CONCURRENCY = 50
LARGE = 100_000
SRC = str(Path(tokenbroker.__file__).parents[1])
WARM_UP = "bulk-warm-up"

IDEAL = "ideal: N x latency / concurrency"
THREADS = "http.client, 50 threads, keep-alive"
HTTPX = "httpx2.AsyncClient, 50 keep-alive"
GOAL_RATIO, GOAL_BYTES = 1.25, 1024

# argv: mode, emulator URL, store URL (or "-"), concurrency, id prefix, count.
# Prints "ready" when set up, waits for a line on stdin, runs, then prints one JSON line.
WORKER = f"""
import asyncio, collections, gc, json, os, sys, time
mode, url, store = sys.argv[1], sys.argv[2], sys.argv[3]
concurrency, prefix, count = int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
out = {{}}
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE
def high_water():  # VmHWM: this process's own (ru_maxrss carries the parent's over exec)
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
def go():
    print("ready", flush=True)
    sys.stdin.readline()
if mode == "refresh":
    from tokenbroker import TokenBroker
    calls, trips = collections.Counter(), collections.Counter()
    class Counting:
        # the engine's store, each method call counted by name
        def __init__(self, inner): self._inner = inner
        def __getattr__(self, name):
            value = getattr(self._inner, name)
            if not callable(value) or name.startswith("_"):
                return value
            def counted(*args, **kwargs):
                calls[name] += 1
                return value(*args, **kwargs)
            return counted
    if store.startswith("redis"):
        import redis.connection
        send = redis.connection.AbstractConnection.send_packed_command
        def send_counted(self, *args, **kwargs):
            trips["redis packets"] += 1
            return send(self, *args, **kwargs)
        redis.connection.AbstractConnection.send_packed_command = send_counted
    else:
        import sqlalchemy as sa
        @sa.event.listens_for(sa.engine.Engine, "before_cursor_execute")
        def statement(conn, cursor, text, *rest):
            verb = text.lstrip().split(None, 1)[0].upper() if text.strip() else "?"
            trips["sql " + verb] += 1
        @sa.event.listens_for(sa.engine.Engine, "begin")
        def begin(conn):  # SQLite's BEGIN is a statement of ours, counted above
            dbapi = conn.connection.dbapi_connection
            if conn.dialect.name != "sqlite" and not getattr(dbapi, "autocommit", False):
                trips["sql BEGIN"] += 1  # the driver's own, ahead of the first statement
        @sa.event.listens_for(sa.engine.Engine, "commit")
        def commit(conn):
            trips["sql COMMIT"] += 1
    broker = TokenBroker(app_id={APP_ID!r}, app_secret={APP_SECRET!r}, store=store,
                         api_url=url)
    broker.token({WARM_UP!r})  # client built, modules imported, store connected
    engine = broker.engine
    proxies = {{}}
    for attr in ("store", "registry", "health_store"):
        inner = getattr(engine, attr, None)
        if inner is not None:
            setattr(engine, attr, proxies.setdefault(id(inner), Counting(inner)))
    import tokenbroker.broker.refresh as refresh_module
    bulk_for = refresh_module.bulk_for
    refresh_module.bulk_for = lambda store: Counting(bulk_for(store))  # the batch calls
    gc.collect()
    go()
    calls.clear(); trips.clear()
    before = rss()
    cpu = time.process_time()
    start = time.perf_counter()
    report = broker.refresh_due(within=1800, concurrency=concurrency)
    out["seconds"] = time.perf_counter() - start
    out["cpu_seconds"] = time.process_time() - cpu
    out["refreshed"] = len(report.refreshed)
    out["errors"] = [reason for _, reason in report.failed[:5]]
    out["failed"] = len(report.failed)
    out["other"] = len(report.fresh) + len(report.skipped)
    out["calls"], out["trips"] = dict(calls), dict(trips)
    del report
    gc.collect()
    out["retained_bytes"] = rss() - before
    out["peak_bytes"] = high_water() - before
    broker.close()
elif mode == "threads":
    import http.client, threading
    from urllib.parse import urlsplit
    ids = iter([f"{{prefix}}{{i:06d}}" for i in range(count)])
    lock, failed = threading.Lock(), []
    def worker():
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        while True:
            with lock:
                instance = next(ids, None)
            if instance is None:
                break
            conn.request("POST", "/oauth2/token", json.dumps({{
                "grant_type": "client_credentials", "client_id": {APP_ID!r},
                "client_secret": {APP_SECRET!r}, "instance_id": instance}}),
                {{"Content-Type": "application/json"}})
            answer = conn.getresponse()
            body = answer.read()
            if answer.status != 200 or "access_token" not in json.loads(body):
                failed.append(answer.status)
        conn.close()
    pool = [threading.Thread(target=worker) for _ in range(concurrency)]
    go()
    cpu = time.process_time()
    start = time.perf_counter()
    for t in pool: t.start()
    for t in pool: t.join(1200)
    out.update(seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu,
               refreshed=count - len(failed),
               failed=len(failed), errors=[str(s) for s in failed[:5]], other=0)
else:
    import httpx2
    ids = iter([f"{{prefix}}{{i:06d}}" for i in range(count)])
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async def main():
        failed = []
        async with httpx2.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:
            async def worker():
                for instance in ids:  # one iterator shared by every worker
                    answer = await client.post("/oauth2/token", json={{
                        "grant_type": "client_credentials", "client_id": {APP_ID!r},
                        "client_secret": {APP_SECRET!r}, "instance_id": instance}})
                    if answer.status_code != 200 or "access_token" not in answer.json():
                        failed.append(answer.status_code)
            start = time.perf_counter()
            async with asyncio.timeout(1200):
                await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - start, failed
    go()
    seconds, failed = asyncio.run(main())
    out.update(seconds=seconds, refreshed=count - len(failed), failed=len(failed),
               errors=[str(s) for s in failed[:5]], other=0)
print(json.dumps(out), flush=True)
"""


@attrs.frozen
class Run:
    name: str
    seconds: float
    requests: int  # token requests the emulator received
    peak: int  # the most token requests in flight at once
    ok: int  # answered with a token (refreshed)
    failed: int
    errors: tuple[str, ...] = ()
    retained_bytes: int | None = None  # RSS delta, after the refresh and gc.collect()
    peak_bytes: int | None = None  # VmHWM above the RSS before the refresh
    calls: dict[str, int] = attrs.field(factory=dict)  # store method -> calls
    trips: dict[str, int] = attrs.field(factory=dict)  # statement kind / packets -> count
    setup_seconds: float | None = None
    cpu_seconds: float | None = None  # the worker process's CPU time during the run


@attrs.frozen
class BulkTable:
    """Wall times and counts rather than ns per call: ``render``/``to_json`` as
    ``harness.Table`` has them, for run.py."""

    title: str
    baseline: str
    installations: int
    ideal_seconds: float
    baseline_seconds: float
    runs: tuple[Run, ...]
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        n = self.installations
        return {
            "title": self.title,
            "baseline": self.baseline,
            "installations": n,
            "latency_seconds": LATENCY,
            "concurrency": CONCURRENCY,
            "ideal_seconds": round(self.ideal_seconds, 4),
            "rows": [
                {
                    **{k: v for k, v in attrs.asdict(r).items() if k != "errors"},
                    "errors": list(r.errors),
                    "seconds": round(r.seconds, 4),
                    "x_ideal": round(r.seconds / self.ideal_seconds, 3),
                    "x_baseline": round(r.seconds / self.baseline_seconds, 3),
                    "retained_bytes_per_installation": (
                        None if r.retained_bytes is None else round(r.retained_bytes / n, 1)
                    ),
                    "store_calls_per_installation": round(sum(r.calls.values()) / n, 2),
                    "round_trips_per_installation": round(sum(r.trips.values()) / n, 2),
                }
                for r in self.runs
            ],
            "notes": list(self.notes),
        }

    def render(self) -> str:
        headers = ("case", "requests", "peak", "not done", "wall s", "x ideal")
        headers += ("x baseline", "B/inst kept", "store calls/inst", "round trips/inst")
        ideal, n = self.ideal_seconds, self.installations
        ideal_cells = (f"{ideal / self.baseline_seconds:.2f}", "-", "-", "-")
        body = [(IDEAL, f"{n:,}", str(CONCURRENCY), "-", f"{ideal:.3f}", "1.00", *ideal_cells)]
        for r in self.runs:
            kept = "-" if r.retained_bytes is None else f"{r.retained_bytes / n:,.0f}"
            calls = f"{sum(r.calls.values()) / n:.2f}" if r.calls else "-"
            trips = f"{sum(r.trips.values()) / n:.2f}" if r.trips else "-"
            body.append(
                (
                    r.name + (" (baseline)" if r.name == self.baseline else ""),
                    f"{r.requests:,}",
                    str(r.peak),
                    str(r.failed),
                    f"{r.seconds:.3f}",
                    f"{r.seconds / ideal:.2f}",
                    f"{r.seconds / self.baseline_seconds:.2f}",
                    kept,
                    calls,
                    trips,
                )
            )
        return render_table(self.title, headers, body, self.notes)


def _worker(
    emu: WixEmulator, mode: str, store: str, prefix: str, count: int, timeout: float
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-c", WORKER, mode, emu.url, store, str(CONCURRENCY), prefix]
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [*argv, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            ready = process.stdout.readline()
            if ready.strip() == "ready":
                emu.reset_counters()  # the warm-up's request is not the run's
                process.stdin.write("go\n")
                process.stdin.close()
                process.wait(timeout=timeout)
            stdout = process.stdout.read()
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RuntimeError(f"{mode} worker did not finish within {timeout:.0f}s") from None
        if process.returncode != 0 or not stdout.strip():
            stderr.seek(0)
            raise RuntimeError(
                f"{mode} worker exited ({process.returncode}): {stderr.read()[-2000:]}"
            )
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def _run(
    emu: WixEmulator, name: str, mode: str, store: str, prefix: str, count: int, timeout: float
) -> Run:
    out = _worker(emu, mode, store, prefix, count, timeout)
    return Run(
        name=name,
        seconds=out["seconds"],
        requests=emu.token_requests,
        peak=emu.peak_concurrency,
        ok=out["refreshed"],
        failed=out["failed"] + out["other"],
        errors=tuple(out["errors"]),
        retained_bytes=out.get("retained_bytes"),
        peak_bytes=out.get("peak_bytes"),
        calls=out.get("calls", {}),
        cpu_seconds=out.get("cpu_seconds"),
        trips=out.get("trips", {}),
    )


def _stores(tmp: Path, large: bool) -> tuple[list[Backend], list[str]]:
    """The stores to refresh on, each under a prefix of this run's own."""
    run_id = secrets.token_hex(4)
    sql_prefix, redis_prefix = f"bench_{run_id}_", f"bench-{run_id}:"
    found = [] if large else [Backend("SQLite", "sqlite", f"sqlite:///{tmp / 'bulk.db'}", "b_")]
    notes = []
    servers = (
        ("PostgreSQL", "sql", POSTGRES_URLS, "TOKENBROKER_TEST_POSTGRES_URL", sql_prefix),
        ("Redis", "redis", REDIS_URLS, "TOKENBROKER_TEST_REDIS_URL", redis_prefix),
    )
    for label, kind, candidates, env_var, prefix in servers:
        url, reasons = first_reachable(candidates, env_var, redis=kind == "redis")
        if url is None:
            notes.append(f"{label} skipped: not reachable ({'; '.join(reasons)})")
        else:
            found.append(Backend(label, kind, url, prefix))
    return found, notes


def run(config: Config) -> list[BulkTable]:
    mode = os.environ.get("TOKENBROKER_BENCH_BULK_LARGE", "")
    counts = [] if mode == "only" else [1_000 if config.quick else 10_000]
    if mode:
        counts.append(LARGE)
    return [_size(count, count == LARGE) for count in counts]


def _size(count: int, large: bool) -> BulkTable:
    ideal = count * LATENCY / CONCURRENCY
    timeout = max(120.0, 30 * ideal)  # 30x slower than ideal has failed anyway
    prefix = f"bulk-{os.urandom(3).hex()}-"
    ids = [f"{prefix}{i:06d}" for i in range(count)]
    notes: list[str] = []
    with (
        WixEmulator(APP_ID, APP_SECRET, latency=LATENCY) as emu,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for instance_id in (*ids, WARM_UP):
            emu.install(instance_id)
        runs = [_run(emu, THREADS, "threads", "-", prefix, count, timeout)]
        if not large:
            runs.append(_run(emu, HTTPX, "httpx", "-", prefix, count, timeout))
        stores, skipped = _stores(Path(tmp), large)
        notes += skipped
        wanted = os.environ.get("TOKENBROKER_BENCH_BULK_STORES", "")
        if wanted:  # e.g. "postgresql,redis": the others are left out of this run
            chosen = {name.strip().casefold() for name in wanted.split(",")}
            stores = [b for b in stores if b.label.casefold() in chosen]
        for backend in stores:
            try:
                started = time.perf_counter()
                with TokenBroker(
                    app_id=APP_ID, app_secret=APP_SECRET, store=backend.store_url, api_url=emu.url
                ) as broker:
                    broker.add_installations(ids)
                setup = time.perf_counter() - started
                name = f"refresh_due(concurrency=50), {backend.label}"
                done = _run(emu, name, "refresh", backend.store_url, prefix, count, timeout)
                runs.append(attrs.evolve(done, setup_seconds=setup))
            except Exception as error:  # one store failing leaves the others' rows
                notes.append(f"{backend.label} failed: {type(error).__name__}: {error}")
            finally:
                if backend.kind != "sqlite":
                    backend.cleanup()
    return _table(count, ideal, runs, notes)


def _table(count: int, ideal: float, runs: list[Run], notes: list[str]) -> BulkTable:
    threads = next(r for r in runs if r.name == THREADS)
    base_cpu_ms = (threads.cpu_seconds or 0) / count * 1e3
    head = [
        f"{count:,} installations without a token, emulator latency {LATENCY * 1000:.0f} ms, "
        f"concurrency {CONCURRENCY}; one run each, timed inside its own process; baseline "
        f"{threads.seconds / ideal:.2f}x the ideal",
        f"goals: at most {GOAL_RATIO}x the baseline, at most {CONCURRENCY} in flight, at most "
        f"{GOAL_BYTES} B kept per installation (RSS delta after gc: an upper bound)",
    ]
    for r in runs:
        if r.setup_seconds is None:
            continue
        ratio = r.seconds / threads.seconds
        kept = (r.retained_bytes or 0) / count
        peak_mib = (r.peak_bytes or 0) / 2**20
        cpu_ms = (r.cpu_seconds or 0) / count * 1e3
        trips = ", ".join(f"{k} {v / count:.2f}" for k, v in sorted(r.trips.items()))
        calls = ", ".join(f"{k} {v / count:.2f}" for k, v in sorted(r.calls.items()))
        head.append(
            f"{r.name}: {ratio:.2f}x the baseline ({ratio / GOAL_RATIO:.2f}x the goal), "
            f"{(r.seconds - threads.seconds) / count * CONCURRENCY * 1e3:.1f} ms more per "
            f"installation in each slot; peak {r.peak} in flight; kept {kept:,.0f} B per "
            f"installation (peak RSS +{peak_mib:.0f} MiB); CPU {cpu_ms:.2f} ms per installation "
            f"(the baseline's {base_cpu_ms:.2f}); per installation: store calls "
            f"[{calls}], round trips [{trips}]; seeding (add_installations) took "
            f"{r.setup_seconds:.1f}s, not timed"
        )
    for r in runs:
        if r.requests != count:
            head.append(f"WARNING: {r.name}: {r.requests:,} token requests, expected {count:,}")
        if r.peak > CONCURRENCY:
            head.append(f"WARNING: {r.name}: {r.peak} requests in flight, over {CONCURRENCY}")
        if r.failed:
            head.append(
                f"WARNING: {r.name}: {r.failed} not refreshed; first errors: {list(r.errors)}"
            )
    return BulkTable(
        title=f"bulk refresh: {count:,} installations, {LATENCY * 1000:.0f} ms upstream, "
        f"concurrency {CONCURRENCY}",
        baseline=THREADS,
        installations=count,
        ideal_seconds=ideal,
        baseline_seconds=threads.seconds,
        runs=tuple(runs),
        notes=(*head, *notes),
    )
