"""A bulk refresh: ``broker.refresh_due(concurrency=50)`` over 10,000 installations
(1,000 with --quick) that have no token yet, against the emulator answering after 50 ms.

The ideal wall time is N x latency / concurrency: every slot always busy, nothing but
the wait upstream. The refresher's time is reported as a multiple of that, and of a
floor measured in the same run: the same N token requests fired straight at the
emulator with plain ``httpx2`` at the same concurrency, which is as fast as this machine
and this emulator (a thread per connection, in Python) can go. Also reported: the most
token requests the emulator saw in flight at once (must not exceed the concurrency),
how many it received (must be N), and the memory the refresh allocated (tracemalloc
peak above the level before it, in a separate run because tracing slows Python down).

The refresher and the floor each run in a subprocess of their own, so the emulator (in
this process) does not share a GIL with them, as Wix would not. The store is a SQLite
temp file, filled once with ``broker.add_installations`` and copied for each run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

import tokenbroker
from harness import Config, render_table
from tokenbroker import TokenBroker
from tokenbroker.testing.emulator import WixEmulator

NAME = "bulk_refresh"

APP_ID = "bench-app"
APP_SECRET = "bench-secret"
LATENCY = 0.05
CONCURRENCY = 50
SRC = str(Path(tokenbroker.__file__).parents[1])

IDEAL = "ideal: N x latency / concurrency"
THREADS = "http.client, 50 threads, straight at the emulator"
FLOOR = "floor: httpx2.AsyncClient straight at the emulator, 50 keep-alive"
HTTPX_DEFAULTS = "httpx2.AsyncClient straight at the emulator, default Limits"
REFRESHER = "broker.refresh_due(concurrency=50)"
TRACED = "broker.refresh_due(concurrency=50), tracemalloc on"

# argv: mode, emulator URL, store URL (or "-"), concurrency, id prefix, count.
# Prints one JSON line: what the run did and how long it took, timed in here so that
# start-up and imports are not counted.
WORKER = f"""
import asyncio, json, sys, time, tracemalloc
mode, url, store = sys.argv[1], sys.argv[2], sys.argv[3]
concurrency, prefix, count = int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
out = {{}}
if mode.startswith("refresh"):
    from tokenbroker import TokenBroker
    broker = TokenBroker(app_id={APP_ID!r}, app_secret={APP_SECRET!r}, store=store,
                         api_url=url)
    broker.store.get_installation({APP_ID!r}, "warm-up")  # connect before the clock runs
    traced = mode == "refresh-traced"
    if traced:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
    start = time.perf_counter()
    report = broker.refresh_due(within=1800, concurrency=concurrency)
    out["seconds"] = time.perf_counter() - start
    if traced:
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["peak_bytes"] = peak - before
        out["retained_bytes"] = current - before
    out["refreshed"] = len(report.refreshed)
    out["errors"] = [reason for _, reason in report.failed[:5]]
    out["failed"] = len(report.failed)
    out["other"] = len(report.fresh) + len(report.skipped)
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
    start = time.perf_counter()
    for t in pool: t.start()
    for t in pool: t.join(600)
    out.update(seconds=time.perf_counter() - start, refreshed=count - len(failed),
               failed=len(failed), errors=[str(s) for s in failed[:5]], other=0)
else:
    import httpx2
    ids = iter([f"{{prefix}}{{i:06d}}" for i in range(count)])
    limits = (httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
              if mode == "floor" else httpx2.Limits())
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
            async with asyncio.timeout(600):
                await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - start, failed
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
    peak_bytes: int | None = None  # tracemalloc, above the level before the refresh
    retained_bytes: int | None = None


@attrs.frozen
class BulkTable:
    """Wall times and counts rather than ns per call: ``render``/``to_json`` as
    ``harness.Table`` has them, for run.py."""

    title: str
    baseline: str
    installations: int
    ideal_seconds: float
    floor_seconds: float
    runs: tuple[Run, ...]
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "baseline": self.baseline,
            "installations": self.installations,
            "latency_seconds": LATENCY,
            "concurrency": CONCURRENCY,
            "ideal_seconds": round(self.ideal_seconds, 4),
            "rows": [
                {
                    **{k: v for k, v in attrs.asdict(r).items() if k != "errors"},
                    "errors": list(r.errors),
                    "seconds": round(r.seconds, 4),
                    "x_ideal": round(r.seconds / self.ideal_seconds, 3),
                    "x_floor": round(r.seconds / self.floor_seconds, 3),
                }
                for r in self.runs
            ],
            "notes": list(self.notes),
        }

    def render(self) -> str:
        headers = ("case", "token requests", "peak in flight", "not refreshed", "wall s")
        headers += ("x ideal", "x floor")
        ideal = self.ideal_seconds
        count = f"{self.installations:,}"
        x_floor = f"{ideal / self.floor_seconds:.2f}"
        body = [(IDEAL, count, str(CONCURRENCY), "-", f"{ideal:.3f}", "1.00", x_floor)]
        body += [
            (
                r.name + (" (baseline)" if r.name == self.baseline else ""),
                f"{r.requests:,}",
                str(r.peak),
                str(r.failed),
                f"{r.seconds:.3f}",
                f"{r.seconds / self.ideal_seconds:.2f}",
                f"{r.seconds / self.floor_seconds:.2f}",
            )
            for r in self.runs
        ]
        return render_table(self.title, headers, body, self.notes)


def _worker(
    emu: WixEmulator, mode: str, store: str, prefix: str, count: int, timeout: float
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-c", WORKER, mode, emu.url, store, str(CONCURRENCY), prefix]
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [*argv, str(count)], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
        try:
            stdout, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
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
    emu.reset_counters()
    out = _worker(emu, mode, store, prefix, count, timeout)
    return Run(
        name=name,
        seconds=out["seconds"],
        requests=emu.token_requests,
        peak=emu.peak_concurrency,
        ok=out["refreshed"],
        failed=out["failed"] + out["other"],
        errors=tuple(out["errors"]),
        peak_bytes=out.get("peak_bytes"),
        retained_bytes=out.get("retained_bytes"),
    )


def run(config: Config) -> list[BulkTable]:
    count = 1_000 if config.quick else 10_000
    ideal = count * LATENCY / CONCURRENCY
    # Generous (tracing is slow), but bounded: 60x slower than ideal has failed anyway.
    timeout = max(120.0, 60 * ideal)
    prefix = f"bulk-{os.urandom(3).hex()}-"
    ids = [f"{prefix}{i:06d}" for i in range(count)]
    with (
        WixEmulator(APP_ID, APP_SECRET, latency=LATENCY) as emu,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for instance_id in ids:
            emu.install(instance_id)
        seed = Path(tmp) / "seed.db"
        started = time.perf_counter()
        with TokenBroker(
            app_id=APP_ID, app_secret=APP_SECRET, store=f"sqlite:///{seed}", api_url=emu.url
        ) as broker:
            broker.add_installations(ids)
        setup = time.perf_counter() - started

        def store(name: str) -> str:
            path = Path(tmp) / f"{name}.db"
            shutil.copyfile(seed, path)  # closed above: WAL checkpointed into the file
            return f"sqlite:///{path}"

        runs = [
            _run(emu, THREADS, "threads", "-", prefix, count, timeout),
            _run(emu, FLOOR, "floor", "-", prefix, count, timeout),
            _run(emu, HTTPX_DEFAULTS, "httpx-defaults", "-", prefix, count, timeout),
            _run(emu, REFRESHER, "refresh", store("plain"), prefix, count, timeout),
            _run(emu, TRACED, "refresh-traced", store("traced"), prefix, count, timeout),
        ]
    return [_table(count, ideal, runs, setup)]


def _table(count: int, ideal: float, runs: list[Run], setup: float) -> BulkTable:
    by_name = {r.name: r for r in runs}
    threads, floor = by_name[THREADS], by_name[FLOOR]
    refresher, traced = by_name[REFRESHER], by_name[TRACED]
    notes = [
        f"{count:,} installations without a token, emulator latency {LATENCY * 1000:.0f} ms, "
        f"concurrency {CONCURRENCY}; one run each, timed inside its own process",
        f"store: SQLite temp file; setup (broker.add_installations of {count:,}) took "
        f"{setup:.1f}s, {setup / count * 1e3:.2f} ms per installation (not timed)",
    ]
    if traced.peak_bytes is not None and traced.retained_bytes is not None:
        notes.append(
            f"memory (tracemalloc, above the level before the refresh): peak "
            f"{traced.peak_bytes / 2**20:.1f} MiB = {traced.peak_bytes / count:,.0f} B per "
            f"installation; still held after it {traced.retained_bytes / 2**20:.1f} MiB = "
            f"{traced.retained_bytes / count:,.0f} B per installation (near cache, keys); "
            "both include the refresh's fixed start-up (its httpx client and TLS context, "
            "modules imported on first use): compare --quick with a full run for the "
            "marginal cost"
        )
    notes.append(
        f"the emulator is not the limit: {CONCURRENCY} threads on http.client take "
        f"{threads.seconds / ideal:.2f}x the ideal; httpx2.AsyncClient takes "
        f"{floor.seconds / threads.seconds:.2f}x the threads (the async client's own cost "
        "per request), so this floor, not the ideal, is what an httpx2-based refresher "
        "can reach here"
    )
    extra = (refresher.seconds - floor.seconds) / count
    notes.append(
        f"the refresher takes {refresher.seconds / floor.seconds:.2f}x the httpx floor "
        f"(one run each: a few tenths either way are noise): {abs(extra) * 1e3:.2f} ms "
        f"{'more' if extra >= 0 else 'less'} wall time per installation, "
        f"{abs(extra) * CONCURRENCY * 1e3:.1f} ms per installation in each of the "
        f"{CONCURRENCY} slots"
    )
    for r in runs:
        if r.requests != count:
            notes.append(f"WARNING: {r.name}: {r.requests:,} token requests, expected {count:,}")
        if r.peak > CONCURRENCY:
            notes.append(f"WARNING: {r.name}: {r.peak} requests in flight, over {CONCURRENCY}")
        if r.failed:
            notes.append(
                f"WARNING: {r.name}: {r.failed} not refreshed; first errors: {list(r.errors)}"
            )
    return BulkTable(
        title=f"bulk refresh: {count:,} installations, {LATENCY * 1000:.0f} ms upstream, "
        f"concurrency {CONCURRENCY}",
        baseline=FLOOR,
        installations=count,
        ideal_seconds=ideal,
        floor_seconds=floor.seconds,
        runs=tuple(runs),
        notes=tuple(notes),
    )
