"""Real servers for the backend tests, and the rule for when one is missing.

A missing server skips its tests with the reason, except where the
environment says servers are expected (``CI=true``): there it fails the run,
so a broken CI service cannot pass as green.

Every session works under its own random table prefix and drops exactly the
tables with that prefix at the end; nothing else in the databases is touched.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from typing import NoReturn

import pytest

from tokenbroker.testing.servers import (
    MYSQL_URLS,
    POSTGRES_URLS,
    REDIS_URLS,
    delete_redis_keys,
    drop_tables,
    first_reachable,
)


def servers_expected() -> bool:
    """Whether a missing server is a failure rather than a skip."""
    return os.environ.get("CI", "").strip().lower() == "true"


def server_unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it when ``CI`` is ``true``."""
    if servers_expected():
        pytest.fail(f"{reason} (CI=true: servers are expected here)", pytrace=False)
    pytest.skip(reason)


def find_server(name: str, env_var: str, candidates: Sequence[str]) -> str:
    """The first URL that answers (``env_var`` overrides the candidates)."""
    url, reasons = first_reachable(candidates, env_var)
    if url is None:
        server_unavailable(f"{name} is not reachable ({'; '.join(reasons)})")
    return url


@pytest.fixture(scope="session")
def session_prefix() -> str:
    """Table prefix unique to this test session (``tb_<hex>_``)."""
    return f"tb_{secrets.token_hex(4)}_"


@pytest.fixture
def unique_prefix(session_prefix: str) -> str:
    """A prefix of its own for a test that needs fresh tables; dropped with the session's."""
    return f"{session_prefix}{secrets.token_hex(3)}_"


@pytest.fixture(scope="session")
def postgres_url(session_prefix: str) -> Iterator[str]:
    url = find_server("PostgreSQL", "TOKENBROKER_TEST_POSTGRES_URL", POSTGRES_URLS)
    yield url
    drop_tables(url, session_prefix)


@pytest.fixture(scope="session")
def mysql_url(session_prefix: str) -> Iterator[str]:
    url = find_server("MariaDB/MySQL", "TOKENBROKER_TEST_MYSQL_URL", MYSQL_URLS)
    yield url
    drop_tables(url, session_prefix)


# --- Redis -------------------------------------------------------------------------
# Keys, not tables: every Redis test writes under a key prefix that starts with
# the session prefix, and the session deletes exactly the keys under it
# (SCAN + DEL; never FLUSHDB: the server is shared).


def find_redis() -> str:
    """The Redis URL that answers (``TOKENBROKER_TEST_REDIS_URL`` overrides the default)."""
    url, reasons = first_reachable(REDIS_URLS, "TOKENBROKER_TEST_REDIS_URL", redis=True)
    if url is None:
        server_unavailable(f"Redis is not reachable ({'; '.join(reasons)})")
    return url


@pytest.fixture(scope="session")
def redis_url(session_prefix: str) -> Iterator[str]:
    """A reachable Redis; keys under the session prefix are deleted afterwards."""
    url = find_redis()
    yield url
    delete_redis_keys(url, session_prefix)
