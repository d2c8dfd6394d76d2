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

    # MemoryStore keeps Python objects: there is no stored encoding to corrupt.
    test_corrupted_token_reads_as_missing_with_a_warning_and_put_overwrites_it = None  # type: ignore[assignment]
