"""Fleet-wide single-flight on every shared backend, with real processes.

A cold store and a herd of 4 processes x 25 threads asking for one instance's
token: exactly one request reaches Wix. A lease holder killed with SIGKILL in
the middle of its refresh: the next caller takes over once the lease lapses.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenbroker import TokenBroker
from tokenbroker.testing.emulator import WixEmulator

from ..workers import collect, go, kill, start

APP_ID = "test-app-id"
APP_SECRET = "test-app-secret"

HERD_WORKER = f"""
import json, sys, threading
from tokenbroker import TokenBroker
url, store, instance, threads, lease_ttl = sys.argv[1:6]
lease_ttl = float(lease_ttl) if lease_ttl != "None" else None
# with a short lease, one short attempt: a fetch must fit in the lease (or it is refused)
budget = {{}} if lease_ttl is None else {{"timeout": 1.5, "max_attempts": 1}}
broker = TokenBroker(app_id={APP_ID!r}, app_secret={APP_SECRET!r}, store=store, api_url=url,
                     lease_ttl=lease_ttl, **budget)
broker.installations()  # connect and create tables before the start signal
print("ready", flush=True)
sys.stdin.readline()
seen, errors = set(), []
def work():
    try:
        seen.add(broker.token(instance).access_token)
    except Exception as exc:
        errors.append(repr(exc))
pool = [threading.Thread(target=work) for _ in range(int(threads))]
for t in pool: t.start()
for t in pool: t.join()
broker.close()
print(json.dumps({{"tokens": sorted(seen), "errors": errors}}), flush=True)
"""


def start_worker(
    url: str, store: str, instance: str, threads: int, lease_ttl: float
) -> subprocess.Popen[str]:
    return start(HERD_WORKER, [url, store, instance, str(threads), str(lease_ttl)])


@pytest.fixture(params=["sqlite", "postgres", "mysql", "redis"])
def shared_store(
    request: pytest.FixtureRequest, tmp_path: Path, unique_prefix: str
) -> Iterator[str]:
    """A URL of a cold shared store, with a prefix of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'herd.db'}"
    elif request.param == "redis":
        base: str = request.getfixturevalue("redis_url")
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}key_prefix={unique_prefix}"
    else:
        base = request.getfixturevalue(f"{request.param}_url")
        yield f"{base}?table_prefix={unique_prefix}"


class TestColdHerd:
    def test_four_processes_of_25_threads_make_one_upstream_request(
        self, wix_emulator: WixEmulator, shared_store: str
    ) -> None:
        wix_emulator.latency = 0.2  # the leader's request stays in flight while the herd asks
        instance = "inst-1"
        workers = [start_worker(wix_emulator.url, shared_store, instance, 25, 30) for _ in range(4)]
        go(*workers)
        results = collect(workers, timeout=120)
        assert [r["errors"] for r in results] == [[], [], [], []]
        assert len({tok for r in results for tok in r["tokens"]}) == 1
        assert wix_emulator.token_requests == 1


class TestDeadLeaseHolder:
    def test_a_holder_killed_mid_refresh_is_taken_over_once_its_lease_lapses(
        self, wix_emulator: WixEmulator, shared_store: str
    ) -> None:
        lease_ttl = 2.0
        wix_emulator.pause()  # the holder's request will hang in the emulator
        holder = start_worker(wix_emulator.url, shared_store, "inst-1", 1, lease_ttl)
        go(holder)
        assert wix_emulator.wait_for_in_flight(1, timeout=30)
        kill([holder], timeout=30)  # SIGKILL
        wix_emulator.resume()
        # wait_timeout barely above the lease: taking over must not need longer
        with TokenBroker(
            app_id=APP_ID,
            app_secret=APP_SECRET,
            store=shared_store,
            api_url=wix_emulator.url,
            lease_ttl=lease_ttl,
            wait_timeout=lease_ttl + 3,
            timeout=1.5,
            max_attempts=1,
        ) as broker:
            token = broker.token("inst-1")
        assert token.access_token in wix_emulator.issued_tokens_for("inst-1")
        assert holder.returncode == -signal.SIGKILL
