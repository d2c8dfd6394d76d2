"""Several processes on one SQLite file: one upstream request between them."""

from __future__ import annotations

from tokenbroker.testing.emulator import WixEmulator

from .conftest import APP_ID, APP_SECRET, INSTANCE
from .workers import run

WORKER = f"""
import json, sys, threading
from tokenbroker import TokenBroker
url, store, instance, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.stdin.readline()  # start together
seen = set()
with TokenBroker(app_id={APP_ID!r}, app_secret={APP_SECRET!r}, store=store, api_url=url) as broker:
    def work():
        seen.add(broker.token(instance).access_token)
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool: t.start()
    for t in pool: t.join()
print(json.dumps(sorted(seen)))
"""


def spawn_workers(count: int, threads: int, url: str, store: str) -> list[list[str]]:
    # this worker prints no "ready": it is released as soon as it is started
    return run(WORKER, [[url, store, INSTANCE, str(threads)]] * count, ready=False)


class TestSharedSQLiteFile:
    def test_two_processes_on_a_cold_store_make_one_upstream_request(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        wix_emulator.latency = 0.3  # keep the first request in flight while the other asks
        results = spawn_workers(2, 10, wix_emulator.url, sqlite_url)
        assert wix_emulator.token_requests == 1
        assert len({tok for seen in results for tok in seen}) == 1

    def test_four_processes_of_ten_threads_make_one_upstream_request(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        wix_emulator.latency = 0.3
        results = spawn_workers(4, 10, wix_emulator.url, sqlite_url)
        assert wix_emulator.token_requests == 1
        assert len({tok for seen in results for tok in seen}) == 1
