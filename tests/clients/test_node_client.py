"""A service in another language: the Node example (``docs/examples/token-client.mjs``)
against a real ``tokenbroker serve --token-api`` on loopback.

One ``serve`` process and one Wix emulator for the module; service keys are made and
revoked with the CLI (``tokenbroker service-key``); the example runs in ``node`` with
nothing but its environment, the way a user would run it, and prints one JSON line
per call. The tests assert on those lines and on what reached the emulator: the token
it reads is the one the emulator issued (by fingerprint: the example never prints a
token), Get App Instance through the proxy answers the installation's own data, and
a revoked key is refused (401) with nothing sent to Wix.

Without Node.js 20+ the tests skip with the reason, except under ``CI=true``, where
they fail (the rule of ``tests/interop``: CI has Node, so a missing one is a broken CI).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx2
import pytest
from click.testing import CliRunner

from tokenbroker import TokenBroker
from tokenbroker.cli import main
from tokenbroker.service.tokens import rfc3339
from tokenbroker.testing.emulator import INSTANCE_ENDPOINT, WixEmulator

from ..conftest import APP_ID, APP_SECRET
from ..interop.peer import peer_unavailable
from ..polling import wait_until
from ..webhook_helpers import free_port
from ..workers import worker_env

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "token-client.mjs"
SERVE = (sys.executable, "-m", "tokenbroker.cli", "serve", "--token-api")
NODE_TIMEOUT = 30.0  # seconds for one run of the example; it takes well under one
APP = "default"  # the one app the TOKENBROKER_* variables configure
INSTANCE = "4f0c2a9e-node-client-1"
SITE = {"app_name": "Node Client App", "site_id": "site-node-1", "site_display_name": "Node Site"}


def find_node() -> str:
    """Node.js 20+ (the example's ``fetch``), or ``peer_unavailable``."""
    node = shutil.which("node")
    if node is None:
        peer_unavailable(
            "Node.js is not installed; the client tests run the Node example in it", "Node.js"
        )
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=NODE_TIMEOUT, check=False
    ).stdout.strip()
    major = re.fullmatch(r"v(\d+)\..*", version)
    if major is None or int(major[1]) < 20:
        peer_unavailable(
            f"Node.js {version or '(unknown)'} is too old; the example needs 20+", "Node.js"
        )
    return node


@attrs.frozen
class Run:
    """One run of the example: its exit status and its JSON lines, by call."""

    returncode: int
    calls: dict[str, dict[str, Any]]
    stdout: str
    stderr: str


@attrs.frozen
class Service:
    """``tokenbroker serve --token-api`` up, and what the tests drive it with."""

    url: str
    node: str
    emulator: WixEmulator
    cli_env: dict[str, str | None]
    store: str
    log: Path

    def cli(self, *args: str) -> str:
        """``tokenbroker ARGS...`` (in this process); its stdout."""
        result = CliRunner().invoke(
            main, list(args), env=self.cli_env, catch_exceptions=False, prog_name="tokenbroker"
        )
        assert result.exit_code == 0, result.output
        return result.stdout

    def add_key(self, name: str, scope: str) -> str:
        return self.cli("service-key", "add", name, "--app", APP, "--scope", scope).strip()

    def run_example(self, key: str) -> Run:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENBROKER_")}
        env.update(TOKENBROKER_URL=self.url, TOKENBROKER_KEY=key, APP=APP, INSTANCE=INSTANCE)
        done = subprocess.run(
            [self.node, str(EXAMPLE)],
            env=env,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
            check=False,
        )
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        calls = {line["call"]: line for line in lines}
        assert len(calls) == len(lines) == 2, done.stdout + done.stderr
        return Run(done.returncode, calls, done.stdout, done.stderr)

    def token_status(self, key: str) -> int:
        path = f"{self.url}/v1/apps/{APP}/instances/{INSTANCE}/token"
        return httpx2.get(path, headers={"Authorization": f"Bearer {key}"}).status_code


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx2.TransportError):
        return httpx2.get(url + "/healthz").status_code == 200
    return False


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    node = find_node()  # skip before anything starts
    assert EXAMPLE.is_file(), f"{EXAMPLE} is missing"
    tmp = tmp_path_factory.mktemp("node-client")
    store = f"sqlite:///{tmp / 'tokens.db'}"
    settings = {
        "TOKENBROKER_APP_ID": APP_ID,
        "TOKENBROKER_APP_SECRET": APP_SECRET,
        "TOKENBROKER_STORE": store,
    }
    with WixEmulator(APP_ID, APP_SECRET) as emulator:
        emulator.install(INSTANCE, **SITE)
        settings["TOKENBROKER_API_URL"] = emulator.url
        env = {k: v for k, v in worker_env().items() if not k.startswith("TOKENBROKER_")}
        port = free_port()
        log = tmp / "serve.log"
        with log.open("w") as stderr:
            server = subprocess.Popen(
                [*SERVE, "--port", str(port), "--log-level", "info"],
                env={**env, **settings},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: server.poll() is not None or _answers(url), "serve --token-api", 30)
            assert server.poll() is None, log.read_text()
            cli_env: dict[str, str | None] = {
                **{k: None for k in os.environ if k.startswith("TOKENBROKER_")},
                **settings,
            }
            yield Service(url, node, emulator, cli_env, store, log)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)


def _stored_token(service: Service) -> Any:
    """The token the store holds for INSTANCE (a store read: nothing reaches Wix)."""
    with TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store=service.store, api_url=service.emulator.url
    ) as broker:
        return broker.store.get_token(broker.key(INSTANCE))


def test_it_reads_a_token_and_calls_get_app_instance_through_the_proxy(
    service: Service,
) -> None:
    emulator = service.emulator
    key = service.add_key("node-token", "token")
    calls_before = emulator.calls[INSTANCE_ENDPOINT]

    run = service.run_example(key)

    assert run.returncode == 0, run.stdout + run.stderr
    token, proxied = run.calls["token"], run.calls["proxy"]
    # The token is the one the emulator issued, and the only one: the proxied call
    # was served from the same cache as the token read.
    (issued,) = emulator.issued_tokens_for(INSTANCE)
    assert emulator.token_requests == 1
    assert token["status"] == 200
    assert token["token_type"] == "Bearer"
    assert token["fingerprint"] == hashlib.sha256(issued.encode()).hexdigest()[:12]
    stored = _stored_token(service)
    assert stored.access_token == issued
    assert token["expires_at"] == rfc3339(stored.expires_at)
    assert token["refresh_at"] < token["expires_at"]  # RFC 3339 UTC strings sort as times
    # Get App Instance reached the emulator once, with the raw token (no Bearer
    # prefix: documented by Wix's OAuth guide; seen in Wix's SDK, auth/AppStrategy.js),
    # and its answer came back as Wix gave it.
    assert proxied["status"] == 200
    assert emulator.calls[INSTANCE_ENDPOINT] == calls_before + 1
    assert emulator.bearer_prefixed == 0
    instance, site = proxied["body"]["instance"], proxied["body"]["site"]
    assert (instance["instanceId"], instance["appName"]) == (INSTANCE, SITE["app_name"])
    assert (site["siteId"], site["siteDisplayName"]) == (SITE["site_id"], SITE["site_display_name"])
    # The token never left tokenbroker in the example's output; the read was logged
    # with the key's name and the token's fingerprint, never the token.
    assert issued not in run.stdout + run.stderr
    log = service.log.read_text()
    assert f"token read: key node-token, app {APP}, instance {INSTANCE!r}" in log
    assert issued not in log
    assert key not in log
    assert APP_SECRET not in log


def test_a_proxy_key_calls_wix_but_is_refused_the_token(service: Service) -> None:
    emulator = service.emulator
    key = service.add_key("node-proxy", "proxy")
    calls_before = emulator.calls[INSTANCE_ENDPOINT]

    run = service.run_example(key)

    assert run.returncode == 1
    token, proxied = run.calls["token"], run.calls["proxy"]
    assert (token["status"], token["error"]) == (403, "forbidden")
    assert "fingerprint" not in token
    assert token["request_id"]
    assert proxied["status"] == 200
    assert proxied["body"]["instance"]["instanceId"] == INSTANCE
    assert emulator.calls[INSTANCE_ENDPOINT] == calls_before + 1


def test_a_revoked_key_is_refused_with_401_and_nothing_reaches_wix(service: Service) -> None:
    emulator = service.emulator
    key = service.add_key("node-revoked", "token")
    assert service.run_example(key).returncode == 0  # it worked, and serve has it cached

    service.cli("service-key", "revoke", "node-revoked")
    # Each serve caches a key for at most 2 s: wait (bounded) until this one has let go.
    wait_until(lambda: service.token_status(key) == 401, "serve to refuse the revoked key")
    calls_before = emulator.calls
    run = service.run_example(key)

    assert run.returncode == 1
    for call in ("token", "proxy"):
        refused = run.calls[call]
        assert (refused["status"], refused["error"]) == (401, "unauthorized"), refused
        assert refused["request_id"]
    # The same answer for both: nothing tells the caller which check failed.
    assert run.calls["token"]["message"] == run.calls["proxy"]["message"]
    assert emulator.calls == calls_before
