"""A token API hit: ``GET /v1/apps/default/instances/{id}/token`` on a warm key, through a
real ``tokenbroker serve --token-api`` on loopback.

This is what a Node, Go or PHP service pays for each token it reads instead of holding
the app secret itself. The key is warm: one read before the clock starts fetches the
token from the emulator, and every timed read is a near-cache hit that still checks the
service key (its digest, against the record the service caches for 2 s) and renders
the JSON. At ``--log-level warning`` the INFO line each read is logged with is not
written, nor uvicorn's access log line, in either server.

The baseline is the least any HTTP endpoint costs: a bare Starlette route returning a
constant JSON body of the same shape, run by the same function (``service.server.run``)
with the same uvicorn settings, loaded by the same client with the same ``Authorization``
header, in alternating rounds in the same run. Requests per second, p50, p99 and each
server process's CPU time per request (from ``/proc``: the steadiest figure on a shared
machine) are ratios to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

from harness import Config
from served import (
    APP_ID,
    APP_SECRET,
    SERVE_SETTINGS,
    Connection,
    Load,
    LoadTable,
    Target,
    add_service_key,
    baseline_service,
    drive,
    service_env,
    token_path,
    token_service,
    uvicorn_stack,
)
from tokenbroker.testing.emulator import WixEmulator

NAME = "token_api"

CONCURRENCY = 8
ROUNDS = 4
INSTANCE = "bench-token-api-1"
SERVICE = "tokenbroker serve --token-api: GET .../token, warm"
BASELINE = "Starlette, same uvicorn settings: GET /constant"


def run(config: Config) -> list[LoadTable]:
    per_round = 500 if config.quick else 3000
    with WixEmulator(APP_ID, APP_SECRET) as emu, tempfile.TemporaryDirectory() as tmp:
        emu.install(INSTANCE)
        environ = service_env(emu.url, f"sqlite:///{Path(tmp) / 'token-api.db'}")
        key = add_service_key(environ, "bench-token", "token")
        headers = {"authorization": f"Bearer {key}"}
        with token_service(environ) as service, baseline_service() as baseline:
            warm = asyncio.run(_read_once(service.url, headers))
            if warm.get("access_token") is None:
                raise RuntimeError(f"the warm-up token read answered {sorted(warm)}")
            before = emu.token_requests
            loads = asyncio.run(
                drive(
                    {
                        BASELINE: Target(baseline.url, "/constant", headers, pids=(baseline.pid,)),
                        SERVICE: Target(
                            service.url, token_path(INSTANCE), headers, pids=(service.pid,)
                        ),
                    },
                    concurrency=CONCURRENCY,
                    rounds=ROUNDS,
                    per_round=per_round,
                )
            )
            misses = emu.token_requests - before
    by_name = {load.name: load for load in loads}
    base, served = by_name[BASELINE], by_name[SERVICE]
    notes = [
        f"{served.requests:,} timed requests to each server, {CONCURRENCY} in flight on "
        f"kept-alive connections, in {ROUNDS} rounds alternating which server goes first",
        _cost(served, base),
        f"both servers: {uvicorn_stack()}; "
        + ", ".join(f"{k} {v}" for k, v in SERVE_SETTINGS.items()),
        f"the client (this process) and both servers share {os.cpu_count()} CPUs",
    ]
    if misses:
        notes.append(f"WARNING: {misses} token request(s) reached the emulator while timing hits")
    table = LoadTable(
        title=f"token API hit: GET .../token on a warm key, {CONCURRENCY} in flight",
        baseline=BASELINE,
        rows=(base, served),
        concurrency=CONCURRENCY,
        notes=tuple(notes),
    )
    table.check()
    return [table]


def _cost(served: Load, base: Load) -> str:
    wall = (1 / served.per_second - 1 / base.per_second) * 1e6
    text = f"from the rates, each token read takes {wall:,.0f} us more than the constant"
    if served.cpu_us is not None and base.cpu_us is not None:
        text += f"; from the servers' CPU time, {served.cpu_us - base.cpu_us:,.0f} us more"
    return text


async def _read_once(url: str, headers: dict[str, str]) -> dict[str, object]:
    connection = await Connection.open(url)
    try:
        answer = await connection.request("GET", token_path(INSTANCE), headers)
    finally:
        await connection.close()
    if answer.status != 200:
        raise RuntimeError(f"the token API answered {answer.status}: {answer.body[:200]!r}")
    body: dict[str, object] = json.loads(answer.body)
    return body
