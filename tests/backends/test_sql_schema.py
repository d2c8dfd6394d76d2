"""The SQL schema is versioned, created on first use and upgraded automatically."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tokenbroker import StorageError
from tokenbroker.backends.sql import SQLStore, schema
from tokenbroker.cli import main


def add_note_column(conn: sa.Connection, tables: object) -> None:
    prefix = tables.tokens.name.removesuffix("tokens")  # type: ignore[attr-defined]
    conn.execute(sa.text(f"ALTER TABLE {prefix}installations ADD COLUMN note TEXT"))


class TestUpgrades:
    def test_a_store_at_an_older_version_is_upgraded_on_first_use(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
        old = SQLStore(url)
        assert old.upgrade() == (None, 1)
        old.close()
        monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
        monkeypatch.setitem(schema.MIGRATIONS, 1, add_note_column)
        new = SQLStore(url)
        assert new.upgrade() == (1, 2)
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
        monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
        monkeypatch.setitem(schema.MIGRATIONS, 1, add_note_column)
        store = SQLStore(url)
        with pytest.raises(StorageError, match="no upgrade from schema version 2"):
            store.upgrade()
        assert store.schema_version() == 1  # the whole upgrade rolled back
        store.close()


class TestDbCommands:
    def test_status_then_upgrade_then_status(self, tmp_path: Path) -> None:
        env = {"TOKENBROKER_APP_ID": "a", "TOKENBROKER_STORE": f"sqlite:///{tmp_path / 'x.db'}"}
        runner = CliRunner()
        before = runner.invoke(main, ["db", "status"], env=env)
        assert "not created yet" in before.stdout
        upgraded = runner.invoke(main, ["db", "upgrade"], env=env)
        assert "tables created at schema version 1" in upgraded.stdout
        again = runner.invoke(main, ["db", "upgrade"], env=env)
        assert "up to date" in again.stdout
        after = runner.invoke(main, ["db", "status"], env=env)
        assert "version 1" in after.stdout

    def test_non_sql_stores_have_nothing_to_upgrade(self) -> None:
        env = {"TOKENBROKER_APP_ID": "a", "TOKENBROKER_STORE": "memory://"}
        result = CliRunner().invoke(main, ["db", "upgrade"], env=env)
        assert result.exit_code == 0
        assert "nothing to upgrade" in result.stdout
