"""One ``tokenbroker serve`` shared by the service tests that need no special limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenbroker.testing.webhooks import make_key_pair

from .serving import ServeProcess, serving

PRIVATE, PUBLIC = make_key_pair()

RECEIPT_TIMEOUT = 1.0
KEEP_ALIVE = 2


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """``serve`` with a 1 s receipt deadline and a 2 s keep-alive, at the default log level."""
    store = Path(tmp_path_factory.mktemp("serve")) / "tokens.db"
    with serving(
        f"sqlite:///{store}",
        PUBLIC,
        "--receipt-timeout",
        str(RECEIPT_TIMEOUT),
        "--timeout-keep-alive",
        str(KEEP_ALIVE),
    ) as server:
        yield server
