"""Proxy overhead: Get App Instance (``GET /apps/v1/instance``) through the token
service's authenticating proxy, against calling the emulator directly.

The proxy (``ANY /v1/apps/default/instances/{id}/wix/{path}``) checks the caller's
service key, sets ``Authorization`` to the instance's token (a near-cache hit: the key is
warm), forwards the request to the app's API URL and streams the answer back. What it
adds to a call is this benchmark's figure: p50 and p99 answer times through
``tokenbroker serve --token-api`` as ratios to the same call sent straight to the
emulator with a token fetched beforehand, by the same client, in alternating rounds of
the same run, with 1 and with 8 requests in flight.

The emulator runs as its own process (``tokenbroker emulator``), so that its threads do
not share this process's interpreter lock with the client; the service and the emulator
are then two processes on loopback, as a sidecar and Wix would be (less the network).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx2

from harness import Config
from served import (
    APP_ID,
    APP_SECRET,
    SERVE_SETTINGS,
    TOKENBROKER,
    BenchFailed,
    Connection,
    Load,
    LoadTable,
    Running,
    Target,
    add_service_key,
    drive,
    env,
    free_port,
    proxy_path,
    server,
    service_env,
    token_service,
    uvicorn_stack,
)

NAME = "proxy"

INSTANCE = "bench-proxy-1"
# Get App Instance: documented by Wix (App Management API), answered by the emulator
WIX_PATH = "/apps/v1/instance"
LEVELS = (1, 8)  # requests in flight
ROUNDS = 4
DIRECT = "the emulator directly: GET /apps/v1/instance"
PROXIED = "through the proxy: GET .../wix/apps/v1/instance"


def _any_answer(url: str) -> bool:
    try:
        httpx2.get(url, timeout=1.0)
    except httpx2.TransportError:
        return False
    return True


@contextlib.contextmanager
def _emulator() -> Iterator[Running]:
    """``tokenbroker emulator`` with INSTANCE installed, as a process of its own."""
    port = free_port()
    argv = [*TOKENBROKER, "emulator", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--app-id", APP_ID, "--app-secret", APP_SECRET, "--install", INSTANCE]
    url = f"http://127.0.0.1:{port}"
    ready = lambda: _any_answer(url + WIX_PATH)  # noqa: E731
    with server("tokenbroker emulator", argv, env(), ready) as process:
        yield Running(url, process.pid)


def _direct_token(emulator_url: str) -> str:
    """A token for INSTANCE, as tokenbroker's provider asks Wix for one: Create Access
    Token, a JSON body with the client credentials and the instance id (documented by
    Wix; seen in Wix's SDK, ``auth/AppStrategy.js``). It goes in ``Authorization`` raw,
    with no ``Bearer`` prefix (documented by Wix's OAuth guide), as the proxy sends it."""
    answer = httpx2.post(
        emulator_url + "/oauth2/token",
        json={
            "grant_type": "client_credentials",
            "client_id": APP_ID,
            "client_secret": APP_SECRET,
            "instance_id": INSTANCE,
        },
        timeout=10.0,
    )
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


async def _same_answer(direct: Target, proxied: Target) -> None:
    """The proxy must hand back what Wix said: the same JSON as the direct call."""
    bodies = []
    for target in (direct, proxied):
        connection = await Connection.open(target.base_url)
        try:
            answer = await connection.request(target.method, target.target, target.headers)
        finally:
            await connection.close()
        if answer.status != 200:
            raise BenchFailed(f"{target.target} answered {answer.status}: {answer.body[:200]!r}")
        bodies.append(json.loads(answer.body))
    if bodies[0] != bodies[1]:
        raise BenchFailed("the proxied Get App Instance answer differs from the direct one")


def run(config: Config) -> list[LoadTable]:
    per_round = {1: 100, 8: 200} if config.quick else {1: 600, 8: 1500}
    tables = []
    with _emulator() as emulator, tempfile.TemporaryDirectory() as tmp:
        environ = service_env(emulator.url, f"sqlite:///{Path(tmp) / 'proxy.db'}")
        key = add_service_key(environ, "bench-proxy", "proxy")
        token = _direct_token(emulator.url)
        direct = Target(emulator.url, WIX_PATH, {"authorization": token}, pids=(emulator.pid,))
        with token_service(environ) as service:
            proxied = Target(
                service.url,
                proxy_path(INSTANCE, WIX_PATH),
                {"authorization": f"Bearer {key}"},
                pids=(service.pid, emulator.pid),
            )
            asyncio.run(_same_answer(direct, proxied))  # and warms the service's token
            for level in LEVELS:
                loads = asyncio.run(
                    drive(
                        {DIRECT: direct, PROXIED: proxied},
                        concurrency=level,
                        rounds=ROUNDS,
                        per_round=per_round[level],
                    )
                )
                tables.append(_table(loads, level))
    for table in tables:
        table.check()
    return tables


def _table(loads: list[Load], level: int) -> LoadTable:
    by_name = {load.name: load for load in loads}
    base, proxied = by_name[DIRECT], by_name[PROXIED]
    added = (proxied.quantile_ms(0.5) - base.quantile_ms(0.5)) * 1000
    notes = (
        f"{proxied.requests:,} timed requests each way, {level} in flight on kept-alive "
        f"connections, in {ROUNDS} rounds alternating which goes first",
        f"the proxy adds {added:,.0f} us at p50"
        + (
            f" and {proxied.cpu_us - base.cpu_us:,.0f} us of CPU per call (server CPU "
            "counts the service and the emulator through the proxy, the emulator directly)"
            if proxied.cpu_us is not None and base.cpu_us is not None
            else ""
        ),
        f"the service: {uvicorn_stack()}; "
        + ", ".join(f"{k} {v}" for k, v in SERVE_SETTINGS.items())
        + "; the emulator: a thread per connection (tokenbroker emulator)",
        f"the client (this process), the service and the emulator share {os.cpu_count()} CPUs",
    )
    return LoadTable(
        title=f"proxy overhead: Get App Instance, {level} in flight",
        baseline=DIRECT,
        rows=(base, proxied),
        concurrency=level,
        notes=notes,
    )
