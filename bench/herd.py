"""A cold herd on each shared backend: how many token requests reach Wix, and how long
the herd takes.

4 processes x 25 threads ask a cold store for one instance's token at once, with the
emulator answering after 0.2 s. Ideally one request reaches it (the fleet-wide lease
lets one process fetch; the others read what it stored), and the herd costs about one
round trip. The wall time is reported as a multiple of the emulator's latency: how many
"round trips" the herd cost, from the start signal to the last process's answer.

The baseline is the same herd with no coordination at all, the way a naive cache
misses: every thread POSTs to ``/oauth2/token`` itself (plain ``httpx2``), so 100
requests reach the emulator.

The Redis rows include a private 3-master Redis Cluster and a Sentinel group (a
master, a replica, three sentinels), started on loopback ports for this benchmark
from ``redis-server`` (the tests' ``redis_topologies`` module); without
``redis-server`` their rows are skipped with a note.

Each round uses a new instance id, so the store is cold for it while the worker
processes (and their connections and tables) stay warm across rounds.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import attrs

import tokenbroker
from backends import APP_ID, APP_SECRET, Backend, find_backends
from harness import Config, render_table
from tokenbroker.testing.emulator import WixEmulator

NAME = "herd"

PROCESSES = 4
THREADS = 25
LATENCY = 0.2
LEASE_TTL = None  # the default: derived from the retry budget
BASELINE = "no coordination: 100 plain httpx POSTs"
SRC = str(Path(tokenbroker.__file__).parents[1])

# argv: mode ("broker" or "naive"), emulator URL, store URL, threads.
# Prints "ready" once connected; then for each instance id read from stdin runs one
# herd and prints a JSON line; an empty line or EOF ends it.
WORKER = f"""
import json, sys, threading
mode, url, store, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if mode == "broker":
    from tokenbroker import TokenBroker
    broker = TokenBroker(app_id={APP_ID!r}, app_secret={APP_SECRET!r}, store=store,
                         api_url=url, lease_ttl={LEASE_TTL!r})
    broker.installations()  # connect and create the tables before the first herd
    def fetch(instance):
        return broker.token(instance).access_token
    close = broker.close
else:
    import httpx2
    client = httpx2.Client(base_url=url, timeout=30.0,
                          limits=httpx2.Limits(max_connections=threads))
    def fetch(instance):
        answer = client.post("/oauth2/token", json={{
            "grant_type": "client_credentials", "client_id": {APP_ID!r},
            "client_secret": {APP_SECRET!r}, "instance_id": instance}})
        answer.raise_for_status()
        return answer.json()["access_token"]
    close = client.close
print("ready", flush=True)
for line in sys.stdin:
    instance = line.strip()
    if not instance:
        break
    seen, errors = set(), []
    def work():
        try:
            seen.add(fetch(instance))
        except Exception as exc:
            errors.append(repr(exc))
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool: t.start()
    for t in pool: t.join()
    print(json.dumps({{"tokens": sorted(seen), "errors": errors}}), flush=True)
close()
"""


@attrs.frozen
class Round:
    requests: int
    tokens: int  # distinct tokens handed out
    errors: tuple[str, ...]
    wall: float  # seconds


@attrs.frozen
class HerdRow:
    name: str
    rounds: tuple[Round, ...]

    @property
    def best_wall(self) -> float:
        return min(r.wall for r in self.rounds)

    @property
    def median_wall(self) -> float:
        return statistics.median(r.wall for r in self.rounds)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "processes": PROCESSES,
            "threads": THREADS,
            "token_requests": [r.requests for r in self.rounds],
            "distinct_tokens": [r.tokens for r in self.rounds],
            "errors": [list(r.errors) for r in self.rounds],
            "wall_seconds": [round(r.wall, 4) for r in self.rounds],
            "round_trips_best": round(self.best_wall / LATENCY, 3),
            "round_trips_median": round(self.median_wall / LATENCY, 3),
        }


@attrs.frozen
class HerdTable:
    """Counts and wall times rather than ns per call: ``render``/``to_json`` as
    ``harness.Table`` has them, for run.py."""

    title: str
    baseline: str
    rows: tuple[HerdRow, ...]
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "baseline": self.baseline,
            "latency_seconds": LATENCY,
            "rows": [r.to_json() for r in self.rows],
            "notes": list(self.notes),
        }

    def render(self) -> str:
        headers = (
            "case",
            "token requests",
            "tokens",
            "errors",
            "best s",
            "median s",
            "round trips (best)",
            "(median)",
        )
        body = [
            (
                r.name + (" (baseline)" if r.name == self.baseline else ""),
                " ".join(str(x.requests) for x in r.rounds),
                " ".join(str(x.tokens) for x in r.rounds),
                str(sum(len(x.errors) for x in r.rounds)),
                f"{r.best_wall:.3f}",
                f"{r.median_wall:.3f}",
                f"{r.best_wall / LATENCY:.2f}",
                f"{r.median_wall / LATENCY:.2f}",
            )
            for r in self.rows
        ]
        return render_table(self.title, headers, body, self.notes)


@attrs.define
class _Worker:
    process: subprocess.Popen[str]
    stderr: IO[str]

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def receive(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(30)
            self.stderr.seek(0)
            raise RuntimeError(
                f"herd worker exited ({self.process.returncode}): {self.stderr.read()[-2000:]}"
            )
        return line.strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("")
                self.process.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(30)
        for stream in (self.process.stdin, self.process.stdout, self.stderr):
            if stream is not None:
                stream.close()


def _start_workers(mode: str, url: str, store: str) -> list[_Worker]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    workers: list[_Worker] = []
    try:
        for _ in range(PROCESSES):
            stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by _Worker.stop
            process = subprocess.Popen(
                [sys.executable, "-c", WORKER, mode, url, store, str(THREADS)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
            )
            workers.append(_Worker(process, stderr))
        # Started together, waited for together: imports and connects overlap.
        for worker in workers:
            if worker.receive() != "ready":
                raise RuntimeError("herd worker did not say ready")
    except BaseException:
        for worker in workers:
            worker.process.kill()
            worker.stop()
        raise
    return workers


def _herd_row(name: str, emu: WixEmulator, mode: str, store: str, rounds: int) -> HerdRow:
    workers = _start_workers(mode, emu.url, store)
    done = []
    try:
        for round_ in range(rounds):
            instance = f"herd-{os.urandom(4).hex()}-{round_}"
            emu.install(instance)
            before = emu.token_requests
            start = time.perf_counter()
            for worker in workers:
                worker.send(instance)
            results = [json.loads(worker.receive()) for worker in workers]
            wall = time.perf_counter() - start
            done.append(
                Round(
                    requests=emu.token_requests - before,
                    tokens=len({tok for r in results for tok in r["tokens"]}),
                    errors=tuple(e for r in results for e in r["errors"]),
                    wall=wall,
                )
            )
    finally:
        for worker in workers:
            worker.stop()
    return HerdRow(name, tuple(done))


def run(config: Config) -> list[HerdTable]:
    rounds = 3 if config.quick else config.repeat
    with WixEmulator(APP_ID, APP_SECRET, latency=LATENCY) as emu:
        with tempfile.TemporaryDirectory() as tmp:
            backends, notes = find_backends(Path(tmp))
            rows = [_herd_row(BASELINE, emu, "naive", "-", rounds)]
            for backend in backends:
                try:
                    rows.append(_backend_row(emu, backend, rounds))
                except Exception as error:  # one backend failing leaves the others' rows
                    notes.append(f"{backend.label} failed: {type(error).__name__}: {error}")
            for label, kind in (
                ("redis cluster (3 masters)", "cluster"),
                ("redis sentinel", "sentinel"),
            ):
                try:
                    with _topology(kind, Path(tmp) / kind) as url:
                        rows.append(_herd_row(label, emu, "broker", url, rounds))
                except Exception as error:  # no redis-server here, or it would not start
                    notes.append(f"{label} skipped: {type(error).__name__}: {error}")
        errors = sum(len(x.errors) for r in rows for x in r.rounds)
    notes = [
        f"{PROCESSES} processes x {THREADS} threads, one cold instance per round, "
        f"{rounds} rounds; emulator latency {LATENCY} s; a round trip = that latency",
        "token requests and tokens (distinct tokens handed out) are per round; ideal: 1",
        *notes,
    ]
    if errors:
        notes.append(f"WARNING: {errors} herd call(s) raised; see the JSON results")
    return [
        HerdTable(
            title="cold herd: broker.token(instance_id) from 100 threads in 4 processes",
            baseline=BASELINE,
            rows=tuple(rows),
            notes=tuple(notes),
        )
    ]


def _topologies() -> ModuleType:
    """The tests' private-topology module, loaded by path (it needs only redis-py)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "backends" / "redis_topologies.py"
    spec = importlib.util.spec_from_file_location("redis_topologies", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("redis_topologies", module)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _topology(kind: str, workdir: Path) -> Iterator[str]:
    """A private Redis Cluster or Sentinel group on loopback ports, as a store URL."""
    topologies = _topologies()
    topology = (topologies.RedisCluster if kind == "cluster" else topologies.SentinelGroup)(workdir)
    with topology.running():
        yield f"{topology.url}?key_prefix=tb_bench_herd_{os.urandom(4).hex()}:"


def _backend_row(emu: WixEmulator, backend: Backend, rounds: int) -> HerdRow:
    try:
        return _herd_row(backend.label, emu, "broker", backend.store_url, rounds)
    finally:
        backend.cleanup()
