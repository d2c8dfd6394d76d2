"""The SQL schema is versioned, created on first use and upgraded automatically."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tokenbroker import StorageError
from tokenbroker.backends.sql import SQLStore, schema
from tokenbroker.backends.sql.schema import Tables
from tokenbroker.cli import main
from tokenbroker.core.token import TokenKey
from tokenbroker.testing.conformance import _token

OLD_KEY = TokenKey("wix", "app-v1", "inst-v1")


def add_note_column(conn: sa.Connection, tables: object) -> None:
    prefix = tables.tokens.name.removesuffix("tokens")  # type: ignore[attr-defined]
    conn.execute(sa.text(f"ALTER TABLE {prefix}installations ADD COLUMN note TEXT"))


class TestUpgrades:
    def test_a_store_at_an_older_version_is_upgraded_on_first_use(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
        old = SQLStore(url)
        assert old.upgrade() == (None, 2)
        old.close()
        monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
        monkeypatch.setitem(schema.MIGRATIONS, 2, add_note_column)
        new = SQLStore(url)
        assert new.upgrade() == (2, 3)
        columns = {
            c["name"] for c in sa.inspect(new.engine).get_columns("tokenbroker_installations")
        }
        new.close()
        assert "note" in columns

    def test_a_missing_upgrade_step_is_a_storage_error_and_changes_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
        SQLStore(url).upgrade()
        monkeypatch.setattr(schema, "SCHEMA_VERSION", 4)
        monkeypatch.setitem(schema.MIGRATIONS, 2, add_note_column)
        store = SQLStore(url)
        with pytest.raises(StorageError, match="no upgrade from schema version 3"):
            store.upgrade()
        assert store.schema_version() == 2  # the whole upgrade rolled back
        store.close()


def make_v1_tables(url: str, prefix: str) -> None:
    """The tables as version 1 made them (no fences, no token expiry index), with a
    token and a lapsed lease in them."""
    now = Tables(prefix)
    v1 = sa.MetaData()
    for table in now.metadata.sorted_tables:
        columns = [column._copy() for column in table.columns if column.name != "fence"]
        copied = sa.Table(table.name, v1, *columns, **table.kwargs)
        if table is now.leases:
            sa.Index(f"{prefix}leases_expires_at", copied.c.expires_at)
    engine = sa.create_engine(url)
    token = _token(OLD_KEY)
    try:
        with engine.begin() as conn:
            v1.create_all(conn)
            conn.execute(v1.tables[f"{prefix}schema"].insert().values(version=1))
            conn.execute(
                v1.tables[f"{prefix}tokens"].insert(),
                {
                    "provider": "wix",
                    "app_id": "app-v1",
                    "instance_id": "inst-v1",
                    "access_token": token.access_token,
                    "token_type": "Bearer",
                    "obtained_at": int(token.obtained_at.timestamp() * 1_000_000),
                    "expires_at": int(token.expires_at.timestamp() * 1_000_000),
                    "refresh_at": None,
                    "must_refresh_at": None,
                },
            )
            conn.execute(
                v1.tables[f"{prefix}leases"].insert(),
                {
                    "provider": "wix",
                    "app_id": "app-v1",
                    "instance_id": "inst-v1",
                    "owner": "gone",
                    "expires_at": 1,
                },
            )
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'v1.db'}"
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


class TestFenceUpgrade:
    def test_version_1_tables_gain_fences_and_the_token_index_and_keep_their_rows(
        self, database: str, unique_prefix: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        make_v1_tables(database, unique_prefix)
        store = SQLStore(database, table_prefix=unique_prefix)
        try:
            with caplog.at_level("WARNING", logger="tokenbroker.store"):
                assert store.upgrade() == (1, 2)
            assert any("schema version 1 to 2" in r.getMessage() for r in caplog.records)
            inspector = sa.inspect(store.engine)
            for table in ("tokens", "leases"):
                names = {c["name"] for c in inspector.get_columns(f"{unique_prefix}{table}")}
                assert "fence" in names
            indexes = {i["name"] for i in inspector.get_indexes(f"{unique_prefix}tokens")}
            assert f"{unique_prefix}tokens_expires_at" in indexes
            old = store.get_token(OLD_KEY)
            assert old is not None
            # the old lapsed lease row (fence 0) is taken over, with a real fence
            lease = store.acquire_lease(OLD_KEY, 30)
            assert lease is not None
            assert lease.fence > 0
            newer = _token(OLD_KEY, obtained=old.obtained_at.replace(year=2040))
            assert store.put_token(newer, fence=lease.fence) is True
            assert store.put_token(_token(OLD_KEY), fence=lease.fence - 1) is False
            assert store.get_token(OLD_KEY) == newer
        finally:
            store.close()


class TestDbCommands:
    def test_status_then_upgrade_then_status(self, tmp_path: Path) -> None:
        env = {"TOKENBROKER_APP_ID": "a", "TOKENBROKER_STORE": f"sqlite:///{tmp_path / 'x.db'}"}
        runner = CliRunner()
        before = runner.invoke(main, ["db", "status"], env=env)
        assert "not created yet" in before.stdout
        upgraded = runner.invoke(main, ["db", "upgrade"], env=env)
        assert "tables created at schema version 2" in upgraded.stdout
        again = runner.invoke(main, ["db", "upgrade"], env=env)
        assert "up to date" in again.stdout
        after = runner.invoke(main, ["db", "status"], env=env)
        assert "version 2" in after.stdout

    def test_non_sql_stores_have_nothing_to_upgrade(self) -> None:
        env = {"TOKENBROKER_APP_ID": "a", "TOKENBROKER_STORE": "memory://"}
        result = CliRunner().invoke(main, ["db", "upgrade"], env=env)
        assert result.exit_code == 0
        assert "nothing to upgrade" in result.stdout
