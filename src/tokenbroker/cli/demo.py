"""``tokenbroker demo``: Wix's OAuth guide, step by step, against the emulator."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2

from ..broker.broker import TokenBroker
from ..core.clock import OffsetClock, SystemClock
from ..testing.emulator import WixEmulator

APP_ID = "demo-app-id"
APP_SECRET = "demo-app-secret"  # noqa: S105 - the emulator's public demo secret
INSTANCE = "11111111-2222-3333-4444-555555555555"


def _ago(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def run_demo(store: str | None, *, echo: Callable[..., Any], style: Callable[..., str]) -> None:
    def step(number: int, title: str) -> None:
        echo(style(f"\n{number}. {title}", bold=True))

    def ok(text: str) -> None:
        echo(f"   {style('✓', fg='green')} {text}")

    with (
        tempfile.TemporaryDirectory(prefix="tokenbroker-demo-") as tmp,
        WixEmulator(APP_ID, APP_SECRET) as emulator,
    ):
        store_url = store or f"sqlite:///{Path(tmp) / 'tokenbroker.db'}"
        echo(f"Wix emulator on {emulator.url}, standing in for https://www.wixapis.com")
        echo(f"Store: {store_url}")

        step(1, "Keep the app secret safe")
        broker = TokenBroker(
            app_id=APP_ID, app_secret=APP_SECRET, store=store_url, api_url=emulator.url
        )
        ok(f"{broker!r} (the secret is in no repr, log or error)")

        step(2, "App Instance Installed: record the instanceId")
        emulator.install(INSTANCE, site_display_name="Demo Bakery")
        broker.add_installation(INSTANCE)
        ok(f"installation {INSTANCE} recorded in the store")

        step(3, "Create Access Token (app id + app secret + instance id)")
        token = broker.token(INSTANCE)
        left = token.expires_in(SystemClock().time())
        ok(f"token {token.fingerprint} (a fingerprint, not the token) valid for {_ago(left + 1)}")
        ok(f"upstream token requests so far: {emulator.token_requests}")

        step(4, "Ask again, as another process would: served from the store")
        with TokenBroker(
            app_id=APP_ID, app_secret=APP_SECRET, store=store_url, api_url=emulator.url
        ) as other:
            again = other.token(INSTANCE)
        same = "the same token" if again.access_token == token.access_token else "a new token"
        ok(f"{same}; upstream token requests still {emulator.token_requests}")

        step(5, "3h50m later: the token is about to expire, so a new one is requested")
        later = OffsetClock(SystemClock(), offset=3 * 3600 + 50 * 60)
        with TokenBroker(
            app_id=APP_ID,
            app_secret=APP_SECRET,
            store=store_url,
            api_url=emulator.url,
            clock=later,
        ) as future:
            fresh = future.token(INSTANCE)
        changed = "a new token" if fresh.access_token != token.access_token else "the same token"
        ok(f"{changed}; upstream token requests now {emulator.token_requests}")

        step(6, "Call a Wix API with the token in the Authorization header")
        with httpx2.Client(base_url=emulator.url, auth=broker.auth(INSTANCE)) as http:
            answer = http.get("/apps/v1/instance").raise_for_status().json()
        ok(
            f"GET /apps/v1/instance → site {answer['site']['siteDisplayName']!r}, "
            f"app {answer['instance']['appName']!r}"
        )

        step(7, "Send BI Event APP_FINISHED_CONFIGURATION")
        installation = broker.finish_setup(INSTANCE)
        ok(
            f"Wix recorded {emulator.bi_events[-1][1]}; setup finished at "
            f"{installation.setup_finished_at:%Y-%m-%d %H:%M:%S} UTC"
        )
        broker.close()
        echo(style("\nAll steps of Wix's OAuth guide done.", fg="green", bold=True))
