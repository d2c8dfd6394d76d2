"""Finding and cleaning up the real servers that backend tests and benchmarks use.

Shared servers are never flushed: everything a run writes carries a prefix of
its own (tables ``tb_<hex>_*``, keys ``tb_<hex>_*``), and clean-up removes exactly
what carries it. A third-party backend's test suite can use these too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa

POSTGRES_URLS: Final = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)
MYSQL_URLS: Final = ("mysql+pymysql://root@127.0.0.1:3306/test",)
REDIS_URLS: Final = ("redis://127.0.0.1:6379/0",)
CONNECT_TIMEOUT: Final = 5


def _first_line(error: BaseException) -> str:
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def probe_sql(url: str) -> str | None:
    """Connect once and ``SELECT 1``; return why that failed, or ``None``."""
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT})
    except ImportError as error:
        return f"driver missing: {error}"
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as error:
        return _first_line(error)
    finally:
        engine.dispose()
    return None


def probe_redis(url: str) -> str | None:
    """PING once; return why that failed, or ``None``."""
    try:
        import redis  # noqa: PLC0415 - optional
    except ImportError as error:
        return f"redis-py missing: {error}"
    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        return _first_line(error)
    finally:
        client.close()
    return None


def first_reachable(
    candidates: Sequence[str], env_var: str, *, redis: bool = False
) -> tuple[str | None, list[str]]:
    """The first URL that answers (``env_var``, when set, replaces the candidates),
    and why each one before it did not."""
    override = os.environ.get(env_var)
    reasons: list[str] = []
    for url in [override] if override else list(candidates):
        why = probe_redis(url) if redis else probe_sql(url)
        if why is None:
            return url, reasons
        reasons.append(f"{url}: {why}")
    return None, reasons


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


def delete_redis_keys(url: str, prefix: str) -> int:
    """Delete every key that starts with ``prefix`` (SCAN + DEL), and nothing else."""
    import redis  # noqa: PLC0415

    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT
    )
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
