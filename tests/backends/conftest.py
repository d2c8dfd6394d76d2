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
import sqlalchemy as sa

POSTGRES_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)
MYSQL_URLS = ("mysql+pymysql://root@127.0.0.1:3306/test",)


def servers_expected() -> bool:
    """Whether a missing server is a failure rather than a skip."""
    return os.environ.get("CI", "").strip().lower() == "true"


def server_unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it when ``CI`` is ``true``."""
    if servers_expected():
        pytest.fail(f"{reason} (CI=true: servers are expected here)", pytrace=False)
    pytest.skip(reason)


def _probe(url: str) -> str | None:
    """Connect once; return why that failed, or None."""
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
    except ImportError as error:
        return f"driver missing: {error}"
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as error:
        first = str(getattr(error, "orig", error)).strip().splitlines()
        return first[0] if first else type(error).__name__
    finally:
        engine.dispose()
    return None


def find_server(name: str, env_var: str, candidates: Sequence[str]) -> str:
    """The first URL that answers (``env_var`` overrides the candidates)."""
    override = os.environ.get(env_var)
    urls = [override] if override else list(candidates)
    reasons = []
    for url in urls:
        why = _probe(url)
        if why is None:
            return url
        reasons.append(f"{url}: {why}")
    server_unavailable(f"{name} is not reachable ({'; '.join(reasons)})")


def drop_tables(url: str, prefix: str) -> None:
    """Drop every table whose name starts with ``prefix``, and nothing else."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            names = [n for n in sa.inspect(conn).get_table_names() if n.startswith(prefix)]
            for name in names:
                sa.Table(name, sa.MetaData()).drop(conn)
    finally:
        engine.dispose()


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
