"""A lease holder stopped (SIGSTOP) past its TTL cannot write once another took over.

The child is a real broker fetching from the emulator, paused mid-fetch by the
emulator so that it is stopped while it holds the key's lease. Its watchdog
cannot renew a lease while the process is stopped: the lease lapses, the test
takes it over and writes a token under the later fence, and only then lets the
child's answer go and resumes the child. Whatever the child does first (its
watchdog finds the lease lost, or it writes under its old fence and the store
refuses), the store keeps the test's token, and the child hands out that one.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tokenbroker import Token, TokenKey, store_from_url
from tokenbroker.core.protocols import Lease
from tokenbroker.testing.emulator import WixEmulator

from ..conftest import APP_ID, APP_SECRET, INSTANCE
from ..polling import wait_until
from ..workers import collect, go, kill, start

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP is POSIX")

LEASE_TTL = 2.0
KEY = TokenKey("wix", APP_ID, INSTANCE)

CHILD = f"""
import json, logging, sys
from tokenbroker import TokenBroker

url, store, instance = sys.argv[1:4]
said = []

class Keep(logging.Handler):
    def emit(self, record):
        said.append(record.getMessage())

logging.getLogger("tokenbroker").addHandler(Keep())
with TokenBroker(
    app_id={APP_ID!r}, app_secret={APP_SECRET!r}, store=store, api_url=url,
    lease_ttl={LEASE_TTL!r}, timeout={LEASE_TTL!r}, max_attempts=1, near_cache=False,
) as broker:
    print("ready", flush=True)
    sys.stdin.readline()
    token = broker.token(instance)
print(json.dumps({{"served": token.access_token, "said": said}}))
"""


def with_query(url: str, **options: str) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{name}={value}" for name, value in options.items())


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, unique_prefix: str) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'stall.db'}"
    if request.param == "postgres":
        return with_query(request.getfixturevalue("postgres_url"), table_prefix=unique_prefix)
    redis_url: str = request.getfixturevalue("redis_url")
    return with_query(redis_url, key_prefix=f"{unique_prefix}:")


def test_a_holder_stopped_past_its_ttl_has_its_stale_write_refused(
    wix_emulator: WixEmulator, store_url: str
) -> None:
    store = store_from_url(store_url)
    wix_emulator.pause()
    child = start(CHILD, [wix_emulator.url, store_url, INSTANCE])
    stopped = False
    try:
        go(child)
        assert wix_emulator.wait_for_in_flight(1, timeout=30), "the child never fetched"
        os.kill(child.pid, signal.SIGSTOP)
        stopped = True
        assert store.acquire_lease(KEY, 30) is None  # the child holds it
        taken: list[Lease | None] = []
        wait_until(
            lambda: taken.append(store.acquire_lease(KEY, 30)) or taken[-1] is not None,
            "the stopped child's lease to lapse",
            timeout=LEASE_TTL + 15,
        )
        lease = taken[-1]
        assert lease is not None
        now = datetime.now(UTC)
        ours = Token(
            key=KEY,
            access_token="the-new-holders-token",
            token_type="Bearer",
            obtained_at=now,
            expires_at=now + timedelta(hours=4),
        )
        assert store.put_token(ours, fence=lease.fence) is True
        wix_emulator.resume()  # the child's answer is sent while it is still stopped
        wait_until(lambda: wix_emulator.in_flight == 0, "the emulator to answer the child")
        os.kill(child.pid, signal.SIGCONT)
        stopped = False
        [result] = collect([child], timeout=60)
    finally:
        wix_emulator.resume()
        if stopped:
            os.kill(child.pid, signal.SIGCONT)
        kill([child])
    issued = wix_emulator.issued_tokens_for(INSTANCE)
    assert len(issued) == 1  # the child did fetch, later than our token was obtained
    stored = store.get_token(KEY)
    store.close()
    assert stored is not None
    assert stored.access_token == "the-new-holders-token"
    assert result["served"] == "the-new-holders-token"
    assert issued[0] not in " ".join(result["said"])
