"""Two ``tokenbroker serve`` processes on one store: Wix's duplicate deliveries, sent to
both at once, fire the plugin hooks once between them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2

from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.webhooks import (
    domain_event,
    make_key_pair,
    sign_domain_event,
    sign_webhook,
)

from .conftest import APP_ID, APP_SECRET
from .polling import wait_until
from .webhook_helpers import free_port
from .workers import worker_env

PRIVATE, PUBLIC = make_key_pair()

# `tokenbroker serve`, with a plugin that notes each webhook_event hook in a file.
SERVE = """
import sys
from pathlib import Path
from tokenbroker import hookimpl
from tokenbroker.cli import main
from tokenbroker.plugins import plugin_manager

port, notes = sys.argv[1], Path(sys.argv[2])

class Note:
    @hookimpl
    def tokenbroker_webhook_event(self, event):
        with notes.open("a") as fh:
            fh.write(f"{event.event_type} {event.instance_id}\\n")

plugin_manager().register(Note(), name="note")
main(["serve", "--port", port, "--log-level", "warning"])
"""


def healthy(base: str, server: subprocess.Popen[str]) -> bool:
    assert server.poll() is None, server.communicate()[1]
    try:
        return httpx2.get(base + "/healthz").status_code == 200
    except httpx2.TransportError:
        return False


def deliver(base: str, body: str) -> bool:
    """POST like Wix, resending what is answered 409 (the other process has it in
    hand; Wix would wait a minute); return the 200's ``news``."""
    news: list[bool] = []

    def answered() -> bool:
        answer = httpx2.post(base + "/webhooks/wix", content=body)
        if answer.status_code == 409:
            return False
        assert answer.status_code == 200, answer.text
        news.append(answer.json()["news"])
        return True

    wait_until(answered, "an answer other than 409")
    return news[0]


def test_two_serve_processes_on_one_store_fire_the_hooks_once_per_event(
    wix_emulator: WixEmulator, sqlite_url: str, tmp_path: Path
) -> None:
    env = worker_env(
        {
            "TOKENBROKER_APP_ID": APP_ID,
            "TOKENBROKER_APP_SECRET": APP_SECRET,
            "TOKENBROKER_STORE": sqlite_url,
            "TOKENBROKER_API_URL": wix_emulator.url,
            "TOKENBROKER_APP_PUBLIC_KEY": PUBLIC,
        }
    )
    ports = [free_port(), free_port()]
    notes = [tmp_path / "notes-0.txt", tmp_path / "notes-1.txt"]
    servers = [
        subprocess.Popen(
            [sys.executable, "-c", SERVE, str(port), str(note)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for port, note in zip(ports, notes, strict=True)
    ]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    contact = domain_event("wix.contacts.v4.contact", "created", entity={"id": "c-1"})
    bodies = [
        sign_domain_event(PRIVATE, contact, instance_id="inst-p"),
        # the same event id, signed again: still the same event
        sign_domain_event(PRIVATE, contact, instance_id="inst-p", iat=time.time() + 1),
        sign_webhook(
            PRIVATE,
            event_type="PaidPlanPurchased",
            instance_id="inst-p",
            data={"appId": APP_ID, "vendorProductId": "premium"},
        ),
    ]
    try:
        wait_until(
            lambda: all(healthy(b, s) for b, s in zip(bases, servers, strict=True)),
            "both tokenbroker serve processes to come up",
            60,
        )
        with ThreadPoolExecutor(6) as pool:  # each body to both processes at once
            news = list(pool.map(deliver, bases * 3, [b for b in bodies for _ in bases]))
        assert news.count(True) == 2  # the contact event once, the plan purchase once
    finally:
        for server in servers:
            server.send_signal(signal.SIGINT)  # uvicorn finishes the deferred hooks first
        errors = [server.communicate(timeout=30)[1] for server in servers]
    assert all(server.returncode in (0, -signal.SIGINT) for server in servers), errors
    heard = Counter(
        line for note in notes if note.exists() for line in note.read_text().splitlines()
    )
    assert heard == {
        "wix.contacts.v4.contact_created inst-p": 1,
        "PaidPlanPurchased inst-p": 1,
    }
