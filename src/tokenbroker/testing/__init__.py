"""Testing kit: the Wix emulator, pytest fixtures, and the backend conformance suite.

``from tokenbroker.testing import WixEmulator`` works without pytest installed;
the conformance suite lives in ``tokenbroker.testing.conformance`` (needs pytest).
"""

from __future__ import annotations

from ..core.clock import ManualClock
from .emulator import WixEmulator

__all__ = ["ManualClock", "WixEmulator"]
