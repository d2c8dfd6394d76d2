"""A cold herd over HTTP: 500 concurrent ``GET .../token`` for one cold key, through a
real ``tokenbroker serve --token-api``, must make exactly one request to Wix.

The service answers token reads from the same near cache, single-flight and store as the
library, so the herd's 500 callers share one Create Access Token request. To be sure they
all arrive while it is pending, the emulator is paused: 500 connections are opened, the
500 requests written, and only when the service's one token request is being held by the
emulator is it let go. Every request was therefore sent before Wix answered any.

Each round uses a new instance id (a cold key). The benchmark fails (``BenchFailed``)
unless every round made exactly one upstream request, answered every caller 200, and
handed them all the same token. The times are reported, not judged: how long until the
service asked Wix, and how long from Wix's answer to the last caller's.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs

from harness import Config, render_table
from served import (
    APP_ID,
    APP_SECRET,
    BenchFailed,
    Connection,
    add_service_key,
    service_env,
    token_path,
    token_service,
)
from tokenbroker.testing.emulator import WixEmulator

NAME = "token_herd"

HERD = 500
# uvicorn answers 503 past --limit-concurrency connections: room for the whole herd
SETTINGS = {"--limit-concurrency": str(2 * HERD)}
ASK_TIMEOUT = 30.0  # seconds for the service's token request to reach the emulator


@attrs.frozen
class Round:
    instance: str
    upstream: int  # Create Access Token requests the emulator received
    statuses: dict[int, int]
    tokens: int  # distinct access tokens handed out
    until_asked: float  # seconds from the first request sent to Wix being asked
    after_answer: float  # seconds from Wix's answer to the last caller's

    @property
    def ok(self) -> bool:
        return self.upstream == 1 and self.statuses == {200: HERD} and self.tokens == 1

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "callers": HERD,
            "upstream_requests": self.upstream,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "distinct_tokens": self.tokens,
            "seconds_until_wix_asked": round(self.until_asked, 4),
            "seconds_after_wix_answered": round(self.after_answer, 4),
        }


@attrs.frozen
class HerdTable:
    """One row per round: ``render``/``to_json`` as ``harness.Table`` has them."""

    title: str
    rows: tuple[Round, ...]
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "callers": HERD,
            "rows": [r.to_json() for r in self.rows],
            "notes": list(self.notes),
        }

    def render(self) -> str:
        headers = ("round", "callers", "upstream requests", "not 200", "tokens")
        headers += ("s until Wix asked", "s from Wix's answer to the last")
        body = [
            (
                str(index + 1),
                str(HERD),
                str(r.upstream),
                str(HERD - r.statuses.get(200, 0)),
                str(r.tokens),
                f"{r.until_asked:.3f}",
                f"{r.after_answer:.3f}",
            )
            for index, r in enumerate(self.rows)
        ]
        return render_table(self.title, headers, body, self.notes)


async def _herd(emu: WixEmulator, url: str, instance: str, headers: dict[str, str]) -> Round:
    connections = await asyncio.gather(*(Connection.open(url) for _ in range(HERD)))
    try:
        before = emu.token_requests
        emu.pause()
        try:
            start = time.perf_counter()
            for connection in connections:
                connection.send("GET", token_path(instance), headers)
            await asyncio.gather(*(c.flush() for c in connections))
            asked = await asyncio.to_thread(emu.wait_for_in_flight, 1, ASK_TIMEOUT)
            until_asked = time.perf_counter() - start
        finally:
            emu.resume()
        answered = time.perf_counter()
        if not asked:
            raise BenchFailed(f"the service did not ask Wix for a token in {ASK_TIMEOUT:.0f}s")
        answers = await asyncio.gather(*(c.receive() for c in connections))
        after_answer = time.perf_counter() - answered
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    tokens = {json.loads(a.body).get("access_token") for a in answers if a.status == 200}
    return Round(
        instance=instance,
        upstream=emu.token_requests - before,
        statuses=dict(Counter(a.status for a in answers)),
        tokens=len(tokens),
        until_asked=until_asked,
        after_answer=after_answer,
    )


def run(config: Config) -> list[HerdTable]:
    rounds = 1 if config.quick else 3
    done = []
    with WixEmulator(APP_ID, APP_SECRET) as emu, tempfile.TemporaryDirectory() as tmp:
        environ = service_env(emu.url, f"sqlite:///{Path(tmp) / 'herd.db'}")
        headers = {"authorization": f"Bearer {add_service_key(environ, 'bench-herd', 'token')}"}
        with token_service(environ, SETTINGS) as service:
            for index in range(rounds):
                instance = f"bench-herd-{os.urandom(4).hex()}-{index}"
                emu.install(instance)
                done.append(asyncio.run(_herd(emu, service.url, instance, headers)))
    table = HerdTable(
        title=f"cold herd over HTTP: {HERD} concurrent GET .../token for one cold key",
        rows=tuple(done),
        notes=(
            f"{rounds} round(s), a new instance id each; the emulator held the service's "
            f"token request until all {HERD} requests had been sent, each on its own "
            "connection",
            "tokenbroker serve --token-api with "
            + ", ".join(f"{k} {v}" for k, v in SETTINGS.items())
            + ", SQLite temp file as its store; ideal: 1 upstream request, 1 token",
        ),
    )
    if not all(r.ok for r in done):
        print(table.render())
        raise BenchFailed(
            "cold herd over HTTP: every round must make exactly 1 upstream request and "
            "answer every caller 200 with the same token; got "
            + "; ".join(
                f"{r.upstream} request(s), statuses {r.statuses}, {r.tokens} token(s)" for r in done
            )
        )
    return [table]
