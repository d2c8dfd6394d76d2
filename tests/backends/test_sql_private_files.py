"""The SQLite store's files are private: they hold tokens.

A directory the store makes is 0700, a database file it creates 0600, and
SQLite's -wal and -shm files take the database file's mode. The umask is set
to the usual 022 around each test, so nothing here depends on a strict one.
Files and directories that exist already keep their modes (``doctor`` warns).
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenbroker.backends.sql import SQLStore
from tokenbroker.core.token import TokenKey
from tokenbroker.settings import default_store_path, default_store_url


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def use(store: SQLStore) -> None:
    store.get_token(TokenKey("wix", "app", f"inst-{uuid.uuid4()}"))


class TestTheDefaultStore:
    def test_its_directory_is_0700_and_its_file_0600(self, tmp_path: Path) -> None:
        env = {"XDG_DATA_HOME": str(tmp_path / "data"), "HOME": str(tmp_path)}
        path = default_store_path(env)
        store = SQLStore(default_store_url(env))
        use(store)
        assert path.is_file()
        assert mode_of(path.parent) == 0o700
        assert mode_of(path) == 0o600
        store.close()


class TestNewFiles:
    def test_the_wal_and_shm_files_are_0600_too(self, tmp_path: Path) -> None:
        path = tmp_path / "tokens.db"
        store = SQLStore(f"sqlite:///{path}")
        use(store)  # a connection stays open in the pool: so do -wal and -shm
        siblings = [path.with_name(path.name + end) for end in ("-wal", "-shm")]
        assert all(p.exists() for p in siblings), sorted(p.name for p in tmp_path.iterdir())
        assert {p.name: mode_of(p) for p in (path, *siblings)} == {
            p.name: 0o600 for p in (path, *siblings)
        }
        store.close()

    def test_only_the_directory_holding_the_file_is_made_private(self, tmp_path: Path) -> None:
        path = tmp_path / "a" / "b" / "tokens.db"
        store = SQLStore(f"sqlite:///{path}")
        use(store)
        assert mode_of(path.parent) == 0o700
        assert mode_of(path) == 0o600
        store.close()


class TestExistingFiles:
    def test_an_existing_file_and_directory_keep_their_modes(self, tmp_path: Path) -> None:
        directory = tmp_path / "shared"
        directory.mkdir(mode=0o755)
        path = directory / "tokens.db"
        path.touch(mode=0o640)
        path.chmod(0o640)
        store = SQLStore(f"sqlite:///{path}")
        use(store)
        assert mode_of(directory) == 0o755
        assert mode_of(path) == 0o640
        store.close()
