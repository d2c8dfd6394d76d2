"""What a cache hit costs: ``broker.token(instance_id)`` when a fresh token is stored.

This is the hot path every Wix API call goes through, so it is measured against the
least any cache could do: a dict lookup plus a clock read (a freshness check needs the
time). The async twin is measured against an ``async def`` that returns a dict lookup.

Counting the hit (``tokenbroker_token_requests_total{source="near"}``) is measured in
the same run: a broker built with ``metrics=False`` (the same hit, without its increment).

The first-call stall: the largest gap a 5 ms ticker sees on a new event loop while
the first ``await broker.atoken()`` runs there (a new broker each time: no client, no
TLS context yet), against the ticker's largest gap on an idle loop.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import Case, Config, Row, Table, async_loop, measure, sync_loop
from tokenbroker import TokenBroker
from tokenbroker.testing.emulator import WixEmulator

NAME = "cache_hit"

APP_ID = "bench-app"
APP_SECRET = "bench-secret"
INSTANCE = "inst-1"

BASELINE = "dict lookup + time.time()"
ASYNC_BASELINE = "async def returning a dict lookup"


def run(config: Config) -> list[Table]:
    with WixEmulator(APP_ID, APP_SECRET) as emu, tempfile.TemporaryDirectory() as tmp:
        emu.install(INSTANCE)
        return [
            _sync_table(emu, Path(tmp), config),
            _async_table(emu, config),
            _stall_table(emu, config),
        ]


ON = "memory://"
OFF = "memory://, metrics=False"
AON = "memory:// atoken"
AOFF = "memory:// atoken, metrics=False"


def _broker(
    emu: WixEmulator, store: str, near_cache: bool = True, metrics: bool = True
) -> TokenBroker:
    return TokenBroker(
        app_id=APP_ID,
        app_secret=APP_SECRET,
        store=store,
        api_url=emu.url,
        near_cache=near_cache,
        metrics=metrics,
    )


def _sync_table(emu: WixEmulator, tmp: Path, config: Config) -> Table:
    table: dict[str, str] = {INSTANCE: "a-token"}

    def dict_and_clock(key: str) -> str:
        value = table[key]
        time.time()
        return value

    def empty(key: str) -> None:
        return None

    brokers = {
        ON: _broker(emu, "memory://"),
        "sqlite, near cache (default)": _broker(emu, f"sqlite:///{tmp / 'near.db'}"),
        "sqlite, near_cache=False": _broker(emu, f"sqlite:///{tmp / 'far.db'}", near_cache=False),
        OFF: _broker(emu, "memory://", metrics=False),
    }
    try:
        for broker in brokers.values():
            broker.token(INSTANCE)  # the one miss: fetch and store the token
        requests_before = emu.token_requests
        cases = [
            Case(BASELINE, sync_loop(dict_and_clock, INSTANCE)),
            Case("empty function call", sync_loop(empty, INSTANCE)),
            *(Case(name, sync_loop(b.token, INSTANCE)) for name, b in brokers.items()),
        ]
        rows = measure(cases, BASELINE, config)
        misses = emu.token_requests - requests_before
    finally:
        for broker in brokers.values():
            broker.close()
    return Table(
        title="cache hit: broker.token(instance_id)",
        baseline=BASELINE,
        rows=rows,
        notes=(*_notes(misses), _metrics_cost(rows, ON, OFF)),
    )


def _async_table(emu: WixEmulator, config: Config) -> Table:
    table: dict[str, str] = {INSTANCE: "a-token"}

    async def lookup(key: str) -> str:
        return table[key]

    with asyncio.Runner() as runner:
        brokers = {AON: _broker(emu, "memory://"), AOFF: _broker(emu, "memory://", metrics=False)}
        try:
            for broker in brokers.values():
                runner.run(broker.atoken(INSTANCE))
            requests_before = emu.token_requests
            cases = [
                Case(ASYNC_BASELINE, async_loop(runner, lookup, INSTANCE)),
                *(
                    Case(name, async_loop(runner, b.atoken, INSTANCE))
                    for name, b in brokers.items()
                ),
            ]
            rows = measure(cases, ASYNC_BASELINE, config)
            misses = emu.token_requests - requests_before
        finally:
            for broker in brokers.values():
                runner.run(broker.aclose())
    return Table(
        title="cache hit: await broker.atoken(instance_id)",
        baseline=ASYNC_BASELINE,
        rows=rows,
        notes=(*_notes(misses), _metrics_cost(rows, AON, AOFF)),
    )


def _metrics_cost(rows: tuple[Row, ...], on: str, off: str) -> str:
    """What counting the hit costs: metrics on over off, measured in the same run."""
    best = {row.name: row.best_ns for row in rows}
    return (
        f"metrics on vs off: {best[on]:.1f} vs {best[off]:.1f} ns/call, "
        f"{best[on] / best[off]:.2f}x ({best[on] - best[off]:+.1f} ns)"
    )


def _notes(misses: int) -> tuple[str, ...]:
    if misses:
        return (f"WARNING: {misses} token request(s) reached the emulator while timing hits",)
    return ()


TICK = 0.005
IDLE = "idle loop"


async def _largest_gap(work: Any) -> float:
    """The largest gap between 5 ms ticks while ``work`` (a coroutine or None) runs."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(2 * TICK)
    gaps.clear()
    if work is not None:
        await work
    else:
        await asyncio.sleep(10 * TICK)
    await asyncio.sleep(2 * TICK)
    done.set()
    await task
    return max(gaps)


def _stall_table(emu: WixEmulator, config: Config) -> Table:
    runs = 3 if config.quick else 10
    idle = [asyncio.run(_largest_gap(None)) * 1e9 for _ in range(runs)]
    first: list[float] = []
    for _ in range(runs):
        broker = _broker(emu, "memory://")
        try:
            first.append(asyncio.run(_largest_gap(broker.atoken(INSTANCE))) * 1e9)
        finally:
            broker.close()

    def row(name: str, samples: list[float]) -> Row:
        return Row(
            name=name,
            number=1,
            samples_ns=tuple(samples),
            best_ratio=min(samples) / min(idle),
            median_ratio=statistics.median(samples) / statistics.median(idle),
        )

    return Table(
        title="first await broker.atoken() on a new loop: largest gap of a 5 ms ticker",
        baseline=IDLE,
        rows=(row(IDLE, idle), row("first atoken, new broker", first)),
        notes=("one call per row sample: 'ns/call' is the largest tick gap in ns; goal < 20 ms",),
    )
