"""The SQL store's tables, their schema version and the upgrades between versions.

Tables are created on first use. The version is a row in ``<prefix>schema``;
a store finding an older one upgrades the tables in one transaction, and one
finding a newer one refuses to touch them.

Indexes that change nothing a row means are not a version: a store adds the
ones its tables lack on first use (``<prefix>leases_expires_at`` and
``<prefix>tokens_expires_at`` came after version 1), and a release that does
not know an index ignores it, so old and new releases keep sharing the tables
during a rolling upgrade.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from ...core.errors import StorageError
from .transactions import Transactions

__all__ = ["DEFAULT_TABLE_PREFIX", "MIGRATIONS", "SCHEMA_VERSION", "Tables"]

log = logging.getLogger("tokenbroker.store")

SCHEMA_VERSION: Final = 2
# Upgrades: MIGRATIONS[n] takes the tables from version n to n + 1 inside one
# write transaction (MySQL and MariaDB commit each ALTER on its own; a step that
# died half-way is finished by the next store). A release that changes a table
# adds its step here and bumps SCHEMA_VERSION.
MIGRATIONS: dict[int, Callable[[Connection, Any], None]] = {}
DEFAULT_TABLE_PREFIX: Final = "tokenbroker_"
# Leaves room for the longest suffix within every dialect's identifier limit.
TABLE_PREFIX: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,30}")

_CREATE_ATTEMPTS: Final = 5


def _ident(length: int) -> sa.types.TypeEngine[str]:
    # Keys compare byte for byte everywhere: PostgreSQL's "C" collation here,
    # the table's utf8mb4_bin on MySQL, BINARY on SQLite. Iteration order then
    # matches Python's sorted(), and "Abc" and "abc" stay two installations.
    # (utf8mb4_bin still ignores trailing spaces; validate_id refuses those.)
    return sa.String(length).with_variant(postgresql.VARCHAR(length, collation="C"), "postgresql")


# utf8mb4 keys cost 4 bytes a character: the widest primary key here
# (64 + 128 + 256 characters) takes 1792 of InnoDB's 3072 bytes.
_MYSQL_TABLE: Final[dict[str, Any]] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def _fence() -> sa.Column[int]:
    # Version 2: the fencing number (tokenbroker.core.fencing) of a lease, and of
    # the lease a token was written under (0: written unfenced, or before version 2).
    return sa.Column("fence", sa.BigInteger, nullable=False, default=0, server_default="0")


class Tables:
    """The four tables of one store, named ``<prefix>tokens`` and so on."""

    def __init__(self, prefix: str) -> None:
        self.metadata = sa.MetaData()
        self.tokens = sa.Table(
            f"{prefix}tokens",
            self.metadata,
            sa.Column("provider", _ident(64), primary_key=True),
            sa.Column("app_id", _ident(128), primary_key=True),
            sa.Column("instance_id", _ident(256), primary_key=True),
            sa.Column("access_token", sa.Text, nullable=False),
            sa.Column("token_type", sa.String(32), nullable=False),
            sa.Column("obtained_at", sa.BigInteger, nullable=False),
            sa.Column("expires_at", sa.BigInteger, nullable=False),
            sa.Column("refresh_at", sa.BigInteger, nullable=True),
            sa.Column("must_refresh_at", sa.BigInteger, nullable=True),
            _fence(),
            # The bulk refresh finds an app's tokens coming due by expiry.
            sa.Index(f"{prefix}tokens_expires_at", "provider", "app_id", "expires_at"),
            **_MYSQL_TABLE,
        )
        self.installations = sa.Table(
            f"{prefix}installations",
            self.metadata,
            sa.Column("app_id", _ident(128), primary_key=True),
            sa.Column("instance_id", _ident(256), primary_key=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("installed_at", sa.BigInteger, nullable=True),
            sa.Column("removed_at", sa.BigInteger, nullable=True),
            sa.Column("setup_finished_at", sa.BigInteger, nullable=True),
            sa.Column("origin_instance_id", sa.String(256), nullable=True),
            sa.Column("updated_at", sa.BigInteger, nullable=True),
            sa.Column("extra", sa.Text, nullable=False),
            **_MYSQL_TABLE,
        )
        self.leases = sa.Table(
            f"{prefix}leases",
            self.metadata,
            sa.Column("provider", _ident(64), primary_key=True),
            sa.Column("app_id", _ident(128), primary_key=True),
            sa.Column("instance_id", _ident(256), primary_key=True),
            sa.Column("owner", sa.String(64), nullable=False),
            sa.Column("expires_at", sa.BigInteger, nullable=False),
            _fence(),
            # The sweep of lapsed leases finds them by expiry; the primary key
            # cannot (every webhook mark shares one provider and app id).
            sa.Index(f"{prefix}leases_expires_at", "expires_at"),
            **_MYSQL_TABLE,
        )
        self.schema = sa.Table(
            f"{prefix}schema",
            self.metadata,
            sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
            **_MYSQL_TABLE,
        )

    @property
    def names(self) -> list[str]:
        return [table.name for table in self.metadata.sorted_tables]


def _add_fences(conn: Connection, tables: Any) -> None:
    """Version 1 to 2: a ``fence`` column on the leases and the tokens."""
    assert isinstance(tables, Tables)
    quote = conn.dialect.identifier_preparer.quote
    for table in (tables.leases, tables.tokens):
        present = {column["name"] for column in sa.inspect(conn).get_columns(table.name)}
        if "fence" not in present:  # MySQL commits each ALTER: a retried step skips it
            conn.execute(
                sa.text(
                    f"ALTER TABLE {quote(table.name)} ADD COLUMN fence BIGINT NOT NULL DEFAULT 0"
                )
            )


MIGRATIONS[1] = _add_fences


def create_tables(tx: Transactions, tables: Tables) -> None:
    """Create the tables and indexes that do not exist yet; safe while other
    processes do too."""
    for attempt in range(1, _CREATE_ATTEMPTS + 1):
        try:
            with tx.transaction(write=True) as conn:
                tables.metadata.create_all(conn, checkfirst=True)
                # create_all skips a table that exists, and its indexes with it.
                for table, index in _missing_indexes(conn, tables):
                    log.warning("adding index %s to table %s in %s", index.name, table, tx.url)
                    index.create(conn)
            return
        except exc.DBAPIError as error:
            # Another process created a table or an index between our check
            # and our CREATE ("already exists", or PostgreSQL's duplicate
            # pg_type or pg_class row): fine if all is there now, else go again.
            missing = _missing(tx, tables)
            if missing == []:
                return
            # SQLite answers "database is locked" at once, without its busy wait, in a
            # few races of processes opening a new file together (the switch to WAL among
            # them): a race like the others, so it is tried again too.
            if attempt == _CREATE_ATTEMPTS or (missing is None and not _locked(error)):
                raise tx.storage_error("creating tables", error) from None
            log.debug("creating tables in %s raced another process; again", tx.url)
            time.sleep(0.05 * attempt)
        except (exc.SQLAlchemyError, OSError) as error:
            raise tx.storage_error("creating tables", error) from None


def _locked(error: exc.DBAPIError) -> bool:
    """Whether ``error`` is SQLite's "database is locked"."""
    return "database is locked" in str(error.orig)


def _missing(tx: Transactions, tables: Tables) -> list[str] | None:
    """Our tables and indexes that do not exist; None if we cannot even look."""
    try:
        with tx.transaction(write=False) as conn:
            inspector = sa.inspect(conn)
            absent = [name for name in tables.names if not inspector.has_table(name)]
            if absent:
                return absent
            return [str(index.name) for _, index in _missing_indexes(conn, tables)]
    except (exc.SQLAlchemyError, OSError):
        return None


def _missing_indexes(conn: Connection, tables: Tables) -> list[tuple[str, sa.Index]]:
    """The indexes (with their table's name) that our existing tables lack."""
    inspector = sa.inspect(conn)
    missing: list[tuple[str, sa.Index]] = []
    for table in tables.metadata.sorted_tables:
        if not table.indexes:
            continue
        # Names compare without case: MySQL and MariaDB do too.
        present = {str(found["name"]).casefold() for found in inspector.get_indexes(table.name)}
        missing.extend(
            (table.name, index)
            for index in sorted(table.indexes, key=lambda ix: str(ix.name))
            if str(index.name).casefold() not in present
        )
    return missing


def check_version(tx: Transactions, tables: Tables, prefix: str) -> None:
    """Record the schema version in new tables, upgrade old ones, refuse newer ones."""
    schema = tables.schema
    upgrading = False

    def record(conn: Connection) -> int:
        nonlocal upgrading
        found = conn.execute(sa.select(sa.func.max(schema.c.version))).scalar()
        if found is None:
            conn.execute(schema.insert().values(version=SCHEMA_VERSION))
            return SCHEMA_VERSION
        version = int(found)
        # Automatic upgrade, all steps in this one transaction: a crash
        # half-way leaves the old version recorded and the old tables intact.
        while version < SCHEMA_VERSION:
            step = MIGRATIONS.get(version)
            if step is None:
                raise StorageError(f"no upgrade from schema version {version} in {tx.url}")
            upgrading = True
            log.warning(
                "upgrading tables %s* in %s from schema version %d to %d",
                prefix,
                tx.url,
                version,
                version + 1,
            )
            step(conn, tables)
            version += 1
            conn.execute(schema.insert().values(version=version))
        return version

    # Two processes may both find the table empty; the loser reads the winner's row.
    # Two may both upgrade: the loser's step trips over what the winner just added
    # (a column that exists now), and looks again, skipping what is done.
    for attempt in range(1, _CREATE_ATTEMPTS + 1):
        upgrading = False
        try:
            version = tx.run(
                "recording the schema version",
                record,
                write=True,
                on_conflict=lambda: tx.run("reading the schema version", record, write=True),
            )
            break
        except StorageError:
            if not upgrading or attempt == _CREATE_ATTEMPTS:
                raise
            log.debug("upgrading tables in %s raced another process; again", tx.url)
            time.sleep(0.05 * attempt)
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"the tables in {tx.url} (prefix {prefix!r}) have schema "
            f"version {version}; this tokenbroker understands up to {SCHEMA_VERSION}: "
            "upgrade tokenbroker"
        )


def read_version(tx: Transactions, tables: Tables) -> int | None:
    """The schema version recorded in the database, or ``None`` before first use."""
    schema = tables.schema

    def read(conn: Connection) -> int | None:
        if not sa.inspect(conn).has_table(schema.name):
            return None
        found = conn.execute(sa.select(sa.func.max(schema.c.version))).scalar()
        return None if found is None else int(found)

    return tx.run("reading the schema version", read, write=False)
