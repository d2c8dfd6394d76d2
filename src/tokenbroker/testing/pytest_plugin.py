"""pytest fixtures for testing code that talks to Wix, registered via ``pytest11``.

Installing tokenbroker makes these fixtures available in any project's tests, so an
app built on tokenbroker can test its Wix calls against the emulator without writing
its own setup.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tokenbroker.testing.emulator import WixEmulator

__all__ = ["wix_emulator"]

TEST_APP_ID = "test-app-id"
TEST_APP_SECRET = "test-app-secret"  # noqa: S105 (a fixture value, not a real secret)
TEST_INSTANCE_ID = "inst-1"


@pytest.fixture
def wix_emulator() -> Iterator[WixEmulator]:
    """A running Wix emulator (app ``test-app-id``/``test-app-secret``, ``inst-1`` installed).

    Function-scoped so that faults, counters and tokens never leak between tests.
    """
    emulator = WixEmulator(TEST_APP_ID, TEST_APP_SECRET)
    emulator.install(TEST_INSTANCE_ID)
    with emulator:
        yield emulator
