"""SQLStore on SQLite files, in-memory SQLite, PostgreSQL and MariaDB/MySQL.

The conformance suite runs on each; the rest proves what only SQL has to
prove: processes sharing one file, tables created by racing processes, paths
that cannot be used, passwords that never reach a message, missing drivers,
damaged rows and the recorded schema version.
"""

from __future__ import annotations

import importlib.util
import logging
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from tokenbroker.backends.sql import SCHEMA_VERSION, SQLStore
from tokenbroker.core.errors import ConfigError, StorageError, StoreUnavailable
from tokenbroker.core.installation import Installation
from tokenbroker.core.token import Token, TokenKey
from tokenbroker.testing.conformance import StoreConformance

from ..polling import wait_until
from ..workers import run

PASSWORD = "Sup3r-s3cret-pw"
NOW = datetime(2031, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def make_token(key: TokenKey, obtained: datetime = NOW) -> Token:
    return Token(
        key=key,
        access_token=f"tok-{uuid.uuid4().hex}",
        token_type="Bearer",
        obtained_at=obtained,
        expires_at=obtained + timedelta(hours=4),
    )


def new_key() -> TokenKey:
    return TokenKey("wix", "app", f"inst-{uuid.uuid4()}")


def damage(store: SQLStore, table: str, where: dict[str, Any], **values: Any) -> None:
    """Write raw values into a row, bypassing the store's checks."""
    columns = {*where, *values}
    target = sa.table(f"{store.table_prefix}{table}", *(sa.column(c) for c in columns))
    condition = sa.and_(*(target.c[c] == v for c, v in where.items()))
    with store.engine.begin() as conn:
        assert conn.execute(target.update().where(condition).values(**values)).rowcount == 1


def token_where(key: TokenKey) -> dict[str, str]:
    return {"provider": key.provider, "app_id": key.app_id, "instance_id": key.instance_id}


class SQLConformance(StoreConformance):
    """The suite, plus the hook that damages a token row in SQL."""

    def corrupt_token(self, store: Any, key: TokenKey) -> object:
        damage(store, "tokens", token_where(key), access_token="")
        return None


class TestSQLiteFileConformance(SQLConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SQLStore]:
        store = SQLStore(sqlite_url(tmp_path / "tokens.db"))
        yield store
        store.close()


class TestSQLiteMemoryConformance(SQLConformance):
    @pytest.fixture
    def store(self) -> Iterator[SQLStore]:
        store = SQLStore("sqlite:///:memory:")
        yield store
        store.close()


@pytest.mark.backend("postgres")
class TestPostgresConformance(SQLConformance):
    @pytest.fixture
    def store(self, postgres_url: str, session_prefix: str) -> Iterator[SQLStore]:
        store = SQLStore(postgres_url, table_prefix=session_prefix)
        yield store
        store.close()


@pytest.mark.backend("mysql")
class TestMySQLConformance(SQLConformance):
    @pytest.fixture
    def store(self, mysql_url: str, session_prefix: str) -> Iterator[SQLStore]:
        store = SQLStore(mysql_url, table_prefix=session_prefix)
        yield store
        store.close()


# --- several processes ---------------------------------------------------------

WORKER = """
import json, sys
from tokenbroker.backends.sql import SQLStore
from tokenbroker.core.token import TokenKey
from tokenbroker.testing.conformance import _token

url, prefix, action, key_id = sys.argv[1:5]
store = SQLStore(url, table_prefix=prefix)
key = TokenKey("wix", "app", key_id)
print("ready", flush=True)
sys.stdin.readline()  # the go signal: every worker starts together
try:
    if action == "lease":
        result = store.acquire_lease(key, 60) is not None
    else:
        store.put_token(_token(TokenKey("wix", "app", key_id + sys.argv[5])))
        result = store.schema_version()
    print(json.dumps({"ok": True, "result": result}), flush=True)
except Exception as error:
    print(json.dumps({"ok": False, "error": repr(error)}), flush=True)
finally:
    store.close()
"""


def run_workers(count: int, url: str, prefix: str, action: str) -> list[dict[str, Any]]:
    """Start ``count`` processes, let them all get ready, then release them at once."""
    key_id = f"inst-{uuid.uuid4()}"
    return run(WORKER, [[url, prefix, action, key_id, str(n)] for n in range(count)])


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def any_sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "shared" / "tokens.db")
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


class TestSeveralProcesses:
    def test_processes_racing_for_one_lease_on_one_sqlite_file_have_exactly_one_winner(
        self, tmp_path: Path
    ) -> None:
        url = sqlite_url(tmp_path / "tokens.db")
        setup = SQLStore(url)
        setup.get_token(new_key())  # tables exist before the race: only the lease is contested
        setup.close()
        results = run_workers(4, url, "tokenbroker_", "lease")
        assert all(r["ok"] for r in results), results
        assert sorted(r["result"] for r in results) == [False, False, False, True]

    def test_tables_are_created_by_racing_processes_without_error(
        self, any_sql_url: str, unique_prefix: str
    ) -> None:
        results = run_workers(6, any_sql_url, unique_prefix, "create")
        assert all(r["ok"] for r in results), results
        assert [r["result"] for r in results] == [SCHEMA_VERSION] * 6
        store = SQLStore(any_sql_url, table_prefix=unique_prefix)
        try:
            with store.engine.connect() as conn:
                versions = conn.execute(sa.text(f"SELECT version FROM {unique_prefix}schema")).all()
        finally:
            store.close()
        assert versions == [(SCHEMA_VERSION,)]


# --- SQLite files --------------------------------------------------------------


class TestSQLiteFiles:
    def test_missing_parent_directories_are_created(self, tmp_path: Path) -> None:
        path = tmp_path / "a" / "b" / "tokens.db"
        store = SQLStore(sqlite_url(path))
        token = make_token(new_key())
        assert store.put_token(token) is True
        assert store.get_token(token.key) == token
        store.close()
        assert path.is_file()

    def test_an_uncreatable_path_is_a_storage_error_naming_the_path(self, tmp_path: Path) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        path = blocker / "sub" / "tokens.db"
        store = SQLStore(sqlite_url(path))  # nothing touches the disk yet
        with pytest.raises(StorageError) as caught:
            store.get_token(new_key())
        message = str(caught.value)
        assert str(path) in message
        assert "directory" in message

    def test_the_database_runs_in_wal_mode(self, tmp_path: Path) -> None:
        store = SQLStore(sqlite_url(tmp_path / "tokens.db"))
        store.get_token(new_key())
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        store.close()

    def test_schema_version_is_none_before_first_use_and_recorded_after(
        self, tmp_path: Path
    ) -> None:
        store = SQLStore(sqlite_url(tmp_path / "tokens.db"))
        assert store.schema_version() is None
        store.get_token(new_key())
        assert store.schema_version() == SCHEMA_VERSION == 2
        store.close()

    def test_tables_of_a_newer_schema_version_are_refused(self, tmp_path: Path) -> None:
        url = sqlite_url(tmp_path / "tokens.db")
        first = SQLStore(url)
        first.get_token(new_key())
        with first.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE tokenbroker_schema SET version = 99")
        first.close()
        with pytest.raises(StorageError, match="schema version 99"):
            SQLStore(url).get_token(new_key())

    def test_two_stores_on_one_file_see_each_others_writes(self, tmp_path: Path) -> None:
        url = sqlite_url(tmp_path / "tokens.db")
        one, two = SQLStore(url), SQLStore(url)
        token = make_token(new_key())
        one.put_token(token)
        assert two.get_token(token.key) == token
        lease = two.acquire_lease(token.key, 60)
        assert lease is not None
        assert one.acquire_lease(token.key, 60) is None
        one.close()
        two.close()


# --- table prefixes --------------------------------------------------------------


class TestTablePrefix:
    def test_the_prefix_can_come_from_the_url_query(self, tmp_path: Path) -> None:
        store = SQLStore(f"{sqlite_url(tmp_path / 'tokens.db')}?table_prefix=acme_")
        store.get_token(new_key())
        with store.engine.connect() as conn:
            names = set(sa.inspect(conn).get_table_names())
        store.close()
        assert names == {"acme_tokens", "acme_installations", "acme_leases", "acme_schema"}
        assert set(store.table_names) == names

    def test_the_default_prefix_is_tokenbroker(self, tmp_path: Path) -> None:
        store = SQLStore(sqlite_url(tmp_path / "tokens.db"))
        assert store.table_prefix == "tokenbroker_"
        assert "tokenbroker_tokens" in store.table_names

    @pytest.mark.parametrize("prefix", ["", "1abc", "a-b", "drop table;", "x" * 32, "tb_ü", "a b"])
    def test_an_invalid_prefix_is_a_config_error(self, prefix: str) -> None:
        with pytest.raises(ConfigError, match="table_prefix"):
            SQLStore("sqlite:///:memory:", table_prefix=prefix)

    def test_an_invalid_prefix_in_the_url_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError, match="table_prefix"):
            SQLStore("sqlite:///:memory:?table_prefix=bad-prefix")

    def test_conflicting_prefixes_in_argument_and_url_are_a_config_error(self) -> None:
        with pytest.raises(ConfigError, match="conflicts"):
            SQLStore("sqlite:///:memory:?table_prefix=a_", table_prefix="b_")


# --- errors that must not leak ------------------------------------------------------


def assert_password_hidden(error: BaseException) -> None:
    shown = "".join(traceback.format_exception(error))
    assert PASSWORD not in str(error)
    assert PASSWORD not in shown
    assert "\n" not in str(error), "one clear line"


class TestErrorMessages:
    def test_repr_and_url_show_the_url_without_its_password(self) -> None:
        store = SQLStore(f"postgresql+psycopg://app:{PASSWORD}@db.example/tokens")
        assert store.url == "postgresql+psycopg://app:***@db.example/tokens"
        assert PASSWORD not in repr(store)
        assert "***" in repr(store)
        store.close()

    def test_an_unreachable_server_is_a_storage_error_without_the_password(self) -> None:
        # Port 1 on loopback: nothing listens there, the refusal is immediate.
        store = SQLStore(f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:1/tokens")
        with pytest.raises(StorageError) as caught:
            store.get_token(new_key())
        assert "127.0.0.1" in str(caught.value)
        assert_password_hidden(caught.value)

    @pytest.mark.backend("mysql")
    def test_a_wrong_password_is_a_storage_error_without_the_password(self, mysql_url: str) -> None:
        url = sa.make_url(mysql_url).set(password=PASSWORD).render_as_string(hide_password=False)
        store = SQLStore(url)
        with pytest.raises(StorageError) as caught:
            store.put_token(make_token(new_key()))
        assert "Access denied" in str(caught.value)
        assert_password_hidden(caught.value)
        store.close()

    @pytest.mark.backend("postgres")
    def test_an_unknown_postgres_role_is_a_storage_error_without_the_password(
        self, postgres_url: str
    ) -> None:
        url = (
            sa.make_url(postgres_url)
            .set(username=f"nobody_{uuid.uuid4().hex[:8]}", password=PASSWORD)
            .render_as_string(hide_password=False)
        )
        store = SQLStore(url)
        with pytest.raises(StorageError) as caught:
            store.get_token(new_key())
        assert_password_hidden(caught.value)
        store.close()

    @pytest.mark.parametrize(
        ("url", "module", "extra"),
        [
            ("mysql+mysqldb://root@127.0.0.1/test", "MySQLdb", "tokenbroker[mysql]"),
            ("postgresql+psycopg2://u@127.0.0.1/test", "psycopg2", "tokenbroker[postgres]"),
            ("mysql://root@127.0.0.1/test", "MySQLdb", "tokenbroker[mysql]"),
        ],
    )
    def test_a_missing_driver_is_a_config_error_naming_the_extra(
        self, url: str, module: str, extra: str
    ) -> None:
        if importlib.util.find_spec(module) is not None:
            pytest.skip(f"{module} is installed here, so its driver is not missing")
        with pytest.raises(ConfigError, match=r"pip install '" + extra.replace("[", r"\[")):
            SQLStore(url)

    @pytest.mark.parametrize("url", ["not a url", "nosuchdialect://x/y", "://"])
    def test_a_url_sqlalchemy_cannot_use_is_a_config_error(self, url: str) -> None:
        with pytest.raises(ConfigError):
            SQLStore(url)


# --- damaged rows ---------------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLStore]:
    store = SQLStore(sqlite_url(tmp_path / "tokens.db"))
    yield store
    store.close()


class TestCorruptedRows:
    @pytest.mark.parametrize(
        "damaged",
        [
            {"access_token": ""},
            {"token_type": ""},
            {"obtained_at": -1},
            {"expires_at": -5},
            {"refresh_at": -1},
            {"must_refresh_at": 2**62},
            {"expires_at": "soon"},
        ],
        ids=lambda d: next(iter(d)),
    )
    def test_a_damaged_token_row_reads_as_missing_with_a_warning(
        self,
        sqlite_store: SQLStore,
        caplog: pytest.LogCaptureFixture,
        damaged: dict[str, Any],
    ) -> None:
        token = make_token(new_key())
        sqlite_store.put_token(token)
        damage(sqlite_store, "tokens", token_where(token.key), **damaged)
        with caplog.at_level(logging.WARNING, logger="tokenbroker.store"):
            assert sqlite_store.get_token(token.key) is None
        warnings = [r for r in caplog.records if r.name == "tokenbroker.store"]
        assert len(warnings) == 1
        assert warnings[0].levelno == logging.WARNING
        assert token.access_token not in warnings[0].getMessage()
        # A later put, even of an older token, repairs it.
        older = make_token(token.key, obtained=NOW - timedelta(days=1))
        assert sqlite_store.put_token(older) is True
        assert sqlite_store.get_token(token.key) == older

    @pytest.mark.parametrize(
        "damaged",
        [
            {"status": "bogus"},
            {"extra": "{not json"},
            {"extra": "[1, 2]"},
            {"installed_at": -1},
            {"updated_at": "yesterday"},
        ],
        ids=lambda d: f"{next(iter(d))}={next(iter(d.values()))}",
    )
    def test_a_damaged_installation_row_reads_as_missing_and_is_skipped_by_iter(
        self,
        sqlite_store: SQLStore,
        caplog: pytest.LogCaptureFixture,
        damaged: dict[str, Any],
    ) -> None:
        app = f"app-{uuid.uuid4()}"
        good = Installation(app_id=app, instance_id="inst-a", updated_at=NOW)
        bad = Installation(app_id=app, instance_id="inst-b", updated_at=NOW)
        sqlite_store.put_installation(good)
        sqlite_store.put_installation(bad)
        damage(sqlite_store, "installations", {"app_id": app, "instance_id": "inst-b"}, **damaged)
        with caplog.at_level(logging.WARNING, logger="tokenbroker.store"):
            assert sqlite_store.get_installation(app, "inst-b") is None
            assert list(sqlite_store.iter_installations(app, include_removed=True)) == [good]
        assert any(r.name == "tokenbroker.store" for r in caplog.records)
        # Any later record replaces the damaged one, whatever its updated_at.
        repaired = Installation(
            app_id=app, instance_id="inst-b", updated_at=NOW - timedelta(days=1)
        )
        assert sqlite_store.put_installation(repaired) is True
        assert sqlite_store.get_installation(app, "inst-b") == repaired


# --- storage format ---------------------------------------------------------------


class TestStorageFormat:
    def test_times_are_stored_as_integer_microseconds_since_the_epoch(
        self, sqlite_store: SQLStore
    ) -> None:
        token = make_token(new_key())
        sqlite_store.put_token(token)
        with sqlite_store.engine.connect() as conn:
            stored = conn.exec_driver_sql(
                "SELECT obtained_at, refresh_at FROM tokenbroker_tokens WHERE instance_id = ?",
                (token.key.instance_id,),
            ).one()
        assert stored == (int(NOW.timestamp()) * 1_000_000 + 678_901, None)

    def test_iter_installations_reads_in_batches_without_losing_any(
        self, sqlite_store: SQLStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import tokenbroker.backends.sql.store as sql_store

        monkeypatch.setattr(sql_store, "_ITER_BATCH", 3)
        app = f"app-{uuid.uuid4()}"
        ids = [f"inst-{n:02d}" for n in range(10)]
        for instance_id in ids:
            sqlite_store.put_installation(Installation(app_id=app, instance_id=instance_id))
        assert [i.instance_id for i in sqlite_store.iter_installations(app)] == ids

    def test_a_naive_datetime_is_refused(self, sqlite_store: SQLStore) -> None:
        token = make_token(new_key())
        naive = Token(
            key=token.key,
            access_token="x",
            token_type="Bearer",
            obtained_at=NOW.replace(tzinfo=None),
            expires_at=NOW,
        )
        with pytest.raises(ValueError, match="naive"):
            sqlite_store.put_token(naive)


# --- lost connections ---------------------------------------------------------------
# Connections are not pinged before use: a call that finds its pooled connection
# dead runs once more on a new one. Only the test's own store's connections are
# ever killed, never another session on the shared servers.

RAN_AGAIN = "the connection was lost, running it again"


@attrs.frozen
class Victim:
    """A store on a server, and a way to kill exactly its connections (returns how many)."""

    store: SQLStore
    kill: Callable[[], int]


def postgres_victim(url: str, prefix: str, stack: ExitStack) -> Victim:
    # The store's connections carry an application_name of their own.
    name = f"tb-test-{uuid.uuid4().hex[:12]}"
    options = {"connect_args": {"application_name": name}}
    store = SQLStore(url, table_prefix=prefix, engine_options=options)
    stack.callback(store.close)
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    stack.callback(admin.dispose)

    def kill() -> int:
        with admin.connect() as conn:
            # The timeout (ms) makes pg_terminate_backend wait until each backend is gone.
            done = (
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        " AND application_name = :name"
                    ),
                    {"name": name},
                )
                .scalars()
                .all()
            )
        assert all(done), "a backend outlived pg_terminate_backend's wait"
        return len(done)

    return Victim(store, kill)


def mysql_victim(url: str, prefix: str, stack: ExitStack) -> Victim:
    # MariaDB shows no application name without performance_schema (often
    # off): every connection of the store writes its CONNECTION_ID() into a
    # table of the test's own as it opens, and only those ids are killed.
    ids = f"{prefix}conn_ids"
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    stack.callback(admin.dispose)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {ids} (id BIGINT NOT NULL)")
    options = {"connect_args": {"init_command": f"INSERT INTO {ids} VALUES (CONNECTION_ID())"}}
    store = SQLStore(url, table_prefix=prefix, engine_options=options)
    stack.callback(store.close)
    live_sql = f"SELECT p.ID FROM information_schema.PROCESSLIST p JOIN {ids} c ON c.id = p.ID"

    def live() -> list[int]:
        with admin.connect() as conn:
            return [int(i) for i in conn.exec_driver_sql(live_sql).scalars()]

    def kill() -> int:
        victims = live()
        with admin.connect() as conn:
            for conn_id in victims:
                conn.exec_driver_sql(f"KILL CONNECTION {conn_id}")
        wait_until(lambda: live() == [], "the killed connections to go")
        return len(victims)

    return Victim(store, kill)


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.backend("postgres")),
        pytest.param("mysql", marks=pytest.mark.backend("mysql")),
    ]
)
def victim(request: pytest.FixtureRequest, unique_prefix: str) -> Iterator[Victim]:
    url: str = request.getfixturevalue(f"{request.param}_url")
    make = postgres_victim if request.param == "postgres" else mysql_victim
    with ExitStack() as stack:
        yield make(url, unique_prefix, stack)


class TestLostConnections:
    def test_a_read_after_the_stores_connections_were_killed_runs_again_and_finds_the_token(
        self, victim: Victim, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = victim.store
        token = make_token(new_key())
        assert store.put_token(token) is True
        assert store.get_token(token.key) == token  # both pools hold a connection now
        assert victim.kill() >= 2
        with caplog.at_level(logging.INFO, logger="tokenbroker.store"):
            assert store.get_token(token.key) == token
        assert [r.getMessage() for r in caplog.records if RAN_AGAIN in r.getMessage()] == [
            f"get_token on {store.url}: {RAN_AGAIN}"
        ]

    def test_a_write_after_the_stores_connections_were_killed_runs_again_and_lands(
        self, victim: Victim, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = victim.store
        token = make_token(new_key())
        assert store.put_token(token) is True
        assert store.get_token(token.key) == token
        assert victim.kill() >= 2
        newer = make_token(token.key, obtained=NOW + timedelta(minutes=1))
        with caplog.at_level(logging.INFO, logger="tokenbroker.store"):
            assert store.put_token(newer) is True
            assert store.get_token(token.key) == newer
        retried = [r.getMessage() for r in caplog.records if RAN_AGAIN in r.getMessage()]
        # one run again in each pool: the writes' and the reads'
        assert retried == [
            f"{what} on {store.url}: {RAN_AGAIN}" for what in ("put_token", "get_token")
        ]

    def test_every_kind_of_call_survives_its_connections_being_killed_before_it(
        self, victim: Victim
    ) -> None:
        store = victim.store
        app = f"app-{uuid.uuid4()}"
        token = make_token(new_key())
        installation = Installation(app_id=app, instance_id="inst-a", updated_at=NOW)
        calls: list[Callable[[], object]] = [
            lambda: store.put_token(token),
            lambda: store.get_token(token.key),
            lambda: store.put_installation(installation),
            lambda: store.get_installation(app, "inst-a"),
            lambda: list(store.iter_installations(app)),
            lambda: store.acquire_lease(token.key, 60),
            lambda: store.delete_token(token.key, only=token.access_token),
        ]
        results = []
        for call in calls:
            store.get_token(token.key)
            store.put_installation(installation)  # a connection in each pool to kill
            assert victim.kill() >= 1
            results.append(call())
        assert results[:5] == [True, token, False, installation, [installation]]
        assert results[5] is not None  # the lease, taken once: not lost to a retry
        assert results[6] is True
        assert store.get_token(token.key) is None

    @pytest.mark.backend("postgres")
    def test_a_write_whose_commit_is_cut_off_is_not_run_again(
        self, postgres_url: str, unique_prefix: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        # COMMIT may have landed before the connection died: running the write
        # again could apply it twice, so the caller hears about it instead.
        with ExitStack() as stack:
            victim = postgres_victim(postgres_url, unique_prefix, stack)
            store = victim.store
            store.get_token(new_key())  # tables exist: the next commit is put_token's

            def cut(conn: sa.Connection) -> None:
                assert victim.kill() >= 1

            sa.event.listen(store.engine, "commit", cut, once=True)
            token = make_token(new_key())
            with (
                caplog.at_level(logging.INFO, logger="tokenbroker.store"),
                pytest.raises(StoreUnavailable, match="put_token"),  # an outage, told
            ):
                store.put_token(token)
            assert not any(RAN_AGAIN in r.getMessage() for r in caplog.records)
            assert store.get_token(token.key) is None  # the server rolled it back
            assert store.put_token(token) is True  # and the store goes on
