"""MemoryStore passes the backend conformance suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tokenbroker.backends.memory import MemoryStore
from tokenbroker.testing.conformance import StoreConformance


class TestMemoryConformance(StoreConformance):
    @pytest.fixture
    def store(self) -> Iterator[MemoryStore]:
        store = MemoryStore()
        yield store
        store.close()
