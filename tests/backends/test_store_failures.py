"""Each store says which kind of failure it met: an outage or everything else.

An outage (nothing listening, a connection cut, a lock held past every
timeout) is ``StoreUnavailable``, which the engine rides out in degraded
mode. A store that answered but cannot be used as configured, or that refused
a value, is a plain ``StorageError``: raised at once, never waited out. (The
broker's side of this is in ``tests/faults/test_misconfiguration.py``.)
"""

from __future__ import annotations

import socket
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tokenbroker.backends.redis import RedisStore
from tokenbroker.backends.sql import SQLStore
from tokenbroker.core.errors import StorageError, StoreUnavailable
from tokenbroker.core.token import Token, TokenKey

PASSWORD = "Sup3r-s3cret-pw"
NOW = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)


def free_port_url_for(scheme: str, password: str) -> str:
    """A URL of ``scheme`` on a loopback port where nothing listens: refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    path = "/0" if scheme == "redis" else "/test"
    return f"{scheme}://app:{password}@127.0.0.1:{port}{path}"


def new_key() -> TokenKey:
    return TokenKey("wix", "app", f"inst-{uuid.uuid4()}")


def make_token(key: TokenKey, **changes: str) -> Token:
    values = {"access_token": f"tok-{uuid.uuid4().hex}", "token_type": "Bearer", **changes}
    return Token(key=key, obtained_at=NOW, expires_at=NOW + timedelta(hours=4), **values)


def assert_outage(error: StorageError) -> None:
    assert isinstance(error, StoreUnavailable), f"an outage not reported as one: {error!r}"
    assert "store unreachable" in str(error)
    assert PASSWORD not in str(error)


def assert_not_an_outage(error: StorageError) -> None:
    assert not isinstance(error, StoreUnavailable), f"taken for an outage: {error!r}"
    assert PASSWORD not in str(error)


class TestNothingListening:
    @pytest.mark.parametrize(
        "scheme", ["postgresql+psycopg", "mysql+pymysql"], ids=["postgres", "mysql"]
    )
    def test_a_sql_server_that_refuses_connections_is_unavailable(self, scheme: str) -> None:
        store = SQLStore(free_port_url_for(scheme, PASSWORD))
        with pytest.raises(StorageError) as caught:
            store.get_token(new_key())
        assert_outage(caught.value)
        store.close()

    def test_a_redis_server_that_refuses_connections_is_unavailable(self) -> None:
        store = RedisStore(free_port_url_for("redis", PASSWORD))
        with pytest.raises(StorageError) as caught:
            store.acquire_lease(new_key(), 30)
        assert_outage(caught.value)
        store.close()

    async def test_the_async_twins_say_so_too(self) -> None:
        store = RedisStore(free_port_url_for("redis", PASSWORD))
        with pytest.raises(StorageError) as caught:
            await store.aget_token(new_key())
        assert_outage(caught.value)
        await store.aclose()


class TestSQLiteLocks:
    def test_a_write_lock_held_past_the_busy_timeout_is_unavailable(self, tmp_path: Path) -> None:
        path = tmp_path / "tokens.db"
        store = SQLStore(f"sqlite:///{path}", engine_options={"connect_args": {"timeout": 0.2}})
        store.upgrade()
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process writing, and writing
            with pytest.raises(StorageError) as caught:
                store.put_token(make_token(new_key()))
            assert_outage(caught.value)
        finally:
            holder.close()
        assert store.put_token(make_token(new_key())) is True  # released: usable again
        store.close()


@pytest.fixture
def postgres_store(postgres_url: str, unique_prefix: str) -> Iterator[SQLStore]:
    store = SQLStore(postgres_url, table_prefix=unique_prefix)
    yield store
    store.close()


@pytest.fixture
def mysql_store(mysql_url: str, unique_prefix: str) -> Iterator[SQLStore]:
    store = SQLStore(mysql_url, table_prefix=unique_prefix)
    yield store
    store.close()


class TestValuesTheStoreRefuses:
    # Values are validated before they reach a store; if one slipped through,
    # the store's refusal must surface, not pass for an outage.
    @pytest.mark.backend("postgres")
    def test_a_token_type_too_long_for_postgres_is_not_an_outage(
        self, postgres_store: SQLStore
    ) -> None:
        with pytest.raises(StorageError) as caught:
            postgres_store.put_token(make_token(new_key(), token_type="B" * 40))
        assert_not_an_outage(caught.value)

    @pytest.mark.backend("mysql")
    def test_an_access_token_too_long_for_mariadb_is_not_an_outage(
        self, mysql_store: SQLStore
    ) -> None:
        with pytest.raises(StorageError) as caught:
            mysql_store.put_token(make_token(new_key(), access_token="t" * 70_000))
        assert_not_an_outage(caught.value)


class TestMisconfiguredStoresSayWhatIsWrong:
    @pytest.mark.backend("postgres")
    def test_an_unknown_postgres_database(self, postgres_url: str) -> None:
        url = sa.make_url(postgres_url).set(database=f"tb_nodb_{uuid.uuid4().hex[:8]}")
        store = SQLStore(url.render_as_string(hide_password=False))
        with pytest.raises(StorageError, match="unknown database") as caught:
            store.get_token(new_key())
        assert_not_an_outage(caught.value)
        store.close()

    @pytest.mark.backend("mysql")
    def test_a_wrong_mariadb_password(self, mysql_url: str) -> None:
        url = sa.make_url(mysql_url).set(password=PASSWORD)
        store = SQLStore(url.render_as_string(hide_password=False))
        with pytest.raises(StorageError, match="authentication failed") as caught:
            store.get_token(new_key())
        assert_not_an_outage(caught.value)
        store.close()

    @pytest.mark.backend("redis")
    def test_a_redis_db_index_out_of_range(self, redis_url: str) -> None:
        url = sa.make_url(redis_url)
        store = RedisStore(f"redis://{url.host}:{url.port or 6379}/99999")
        with pytest.raises(StorageError, match="db index out of range") as caught:
            store.get_token(new_key())
        assert_not_an_outage(caught.value)
        store.close()

    def test_a_sqlite_file_that_is_not_a_database(self, tmp_path: Path) -> None:
        path = tmp_path / "garbage.db"
        path.write_bytes(b"\x00garbage" * 1000)
        store = SQLStore(f"sqlite:///{path}")
        with pytest.raises(StorageError, match="not a SQLite database") as caught:
            store.get_token(new_key())
        assert_not_an_outage(caught.value)
        store.close()

    def test_a_directory_as_the_sqlite_path(self, tmp_path: Path) -> None:
        store = SQLStore(f"sqlite:///{tmp_path}")
        with pytest.raises(StorageError, match="is a directory") as caught:
            store.get_token(new_key())
        assert_not_an_outage(caught.value)
        store.close()
