"""Shared fixtures. The Wix emulator fixture ``wix_emulator`` comes from
tokenbroker's own pytest plugin (``pytest11`` entry point)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tokenbroker import TokenBroker
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.pytest_plugin import TEST_APP_ID, TEST_APP_SECRET

# Under CI the properties run a fixed sequence of examples: a run that lands must not
# depend on what a random search happens to find that day (local runs keep searching).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI", "").lower() == "true":
    settings.load_profile("ci")

APP_ID = TEST_APP_ID
APP_SECRET = TEST_APP_SECRET
INSTANCE = "inst-1"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tokens.db'}"


@pytest.fixture
def broker(wix_emulator: WixEmulator, sqlite_url: str) -> Iterator[TokenBroker]:
    """A broker on a fresh SQLite file, talking to the emulator."""
    with TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store=sqlite_url, api_url=wix_emulator.url
    ) as b:
        yield b


@pytest.fixture
def memory_broker(wix_emulator: WixEmulator) -> Iterator[TokenBroker]:
    with TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store="memory://", api_url=wix_emulator.url
    ) as b:
        yield b


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every log record at DEBUG, httpx's included."""
    caplog.set_level(logging.DEBUG)
    return caplog
