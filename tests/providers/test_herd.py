"""Fleet-wide single flight with the oauth2 provider: a herd of processes and threads
asking for one cold key makes exactly one request to the token endpoint.

The same test as ``tests/backends/test_herd.py`` runs for Wix; the lease and the
single flight are the engine's, so what this proves is that the oauth2 provider
takes part in them like any other (its worst case sizes the lease, its token is
shared through the store).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenbroker.testing.oauth2_server import OAuth2Server
from tokenbroker.testing.servers import delete_redis_keys

from ..backends.conftest import find_redis
from ..workers import run
from .conftest import APP_ID, server_options

HERD_WORKER = f"""
import json, sys, threading
from tokenbroker import TokenBroker
store, options, instance, threads = sys.argv[1:5]
broker = TokenBroker(app_id={APP_ID!r}, store=store, provider="oauth2",
                     provider_options=json.loads(options))
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

PROCESSES = 3
THREADS = 20


@contextlib.contextmanager
def shared_store(kind: str, tmp_path: Path) -> Iterator[str]:
    """A cold store every worker shares: a SQLite file, or Redis under a fresh prefix."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'herd.db'}"
        return
    base = find_redis()
    prefix = f"tb_oauth2_herd_{secrets.token_hex(4)}_"
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}key_prefix={prefix}"
    finally:
        delete_redis_keys(base, prefix)


# Two cases, not four: the store and the provider's mode are independent of each other,
# and each case costs three interpreter start-ups.
@pytest.mark.parametrize(
    ("kind", "tenant"), [("sqlite", False), ("redis", True)], ids=["sqlite-app", "redis-tenant"]
)
def test_a_herd_of_processes_and_threads_makes_one_token_request(
    kind: str, tenant: bool, tmp_path: Path
) -> None:
    server = OAuth2Server(
        "client-1", "herd-secret-value", tenant_param="tenant" if tenant else None
    )
    server.latency = 0.2  # the leader's request stays in flight while the herd asks
    with server, shared_store(kind, tmp_path) as store:
        options = server_options(server, client_secret="herd-secret-value")
        if tenant:
            options["tenant_param"] = "tenant"
        argv = [store, json.dumps(options), "tenant-1", str(THREADS)]
        results = run(HERD_WORKER, [argv] * PROCESSES, timeout=120)
    assert [r["errors"] for r in results] == [[]] * PROCESSES
    tokens = {token for r in results for token in r["tokens"]}
    assert len(tokens) == 1
    assert server.token_requests == 1
    assert tokens <= set(server.issued_tokens_for("tenant-1"))
