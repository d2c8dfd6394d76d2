"""What a cache hit costs: ``broker.token(instance_id)`` when a fresh token is stored.

This is the hot path every Wix API call goes through, so it is measured against the
least any cache could do: a dict lookup plus a clock read (a freshness check needs the
time). The async twin is measured against an ``async def`` that returns a dict lookup.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from harness import Case, Config, Table, async_loop, measure, sync_loop
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
        return [_sync_table(emu, Path(tmp), config), _async_table(emu, config)]


def _broker(emu: WixEmulator, store: str, near_cache: bool = True) -> TokenBroker:
    return TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store=store, api_url=emu.url, near_cache=near_cache
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
        "memory://": _broker(emu, "memory://"),
        "sqlite, near cache (default)": _broker(emu, f"sqlite:///{tmp / 'near.db'}"),
        "sqlite, near_cache=False": _broker(emu, f"sqlite:///{tmp / 'far.db'}", near_cache=False),
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
        notes=_notes(misses),
    )


def _async_table(emu: WixEmulator, config: Config) -> Table:
    table: dict[str, str] = {INSTANCE: "a-token"}

    async def lookup(key: str) -> str:
        return table[key]

    with asyncio.Runner() as runner:
        broker = _broker(emu, "memory://")
        try:
            runner.run(broker.atoken(INSTANCE))
            requests_before = emu.token_requests
            cases = [
                Case(ASYNC_BASELINE, async_loop(runner, lookup, INSTANCE)),
                Case("memory:// atoken", async_loop(runner, broker.atoken, INSTANCE)),
            ]
            rows = measure(cases, ASYNC_BASELINE, config)
            misses = emu.token_requests - requests_before
        finally:
            runner.run(broker.aclose())
    return Table(
        title="cache hit: await broker.atoken(instance_id)",
        baseline=ASYNC_BASELINE,
        rows=rows,
        notes=_notes(misses),
    )


def _notes(misses: int) -> tuple[str, ...]:
    if misses:
        return (f"WARNING: {misses} token request(s) reached the emulator while timing hits",)
    return ()
