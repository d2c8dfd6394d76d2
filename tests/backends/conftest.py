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


# --- Redis -------------------------------------------------------------------------
# Keys, not tables: every Redis test writes under a key prefix that starts with
# the session prefix, and the session deletes exactly the keys under it
# (SCAN + DEL; never FLUSHDB: the server is shared).

REDIS_URLS = ("redis://127.0.0.1:6379/0",)


def _probe_redis(url: str) -> str | None:
    """PING once; return why that failed, or None."""
    try:
        import redis
    except ImportError as error:
        return f"redis-py missing: {error}"
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        first = str(error).strip().splitlines()
        return first[0] if first else type(error).__name__
    finally:
        client.close()
    return None


def find_redis() -> str:
    """The Redis URL that answers (``TOKENBROKER_TEST_REDIS_URL`` overrides the default)."""
    override = os.environ.get("TOKENBROKER_TEST_REDIS_URL")
    urls = [override] if override else list(REDIS_URLS)
    reasons = []
    for url in urls:
        why = _probe_redis(url)
        if why is None:
            return url
        reasons.append(f"{url}: {why}")
    server_unavailable(f"Redis is not reachable ({'; '.join(reasons)})")


def delete_redis_keys(url: str, prefix: str) -> int:
    """Delete every key that starts with ``prefix``, and nothing else."""
    import re

    import redis

    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) == 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


@pytest.fixture(scope="session")
def redis_url(session_prefix: str) -> Iterator[str]:
    """A reachable Redis; keys under the session prefix are deleted afterwards."""
    url = find_redis()
    yield url
    delete_redis_keys(url, session_prefix)
