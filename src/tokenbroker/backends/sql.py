"""``sqlite:///path``, ``postgresql+psycopg://…``, ``mysql+pymysql://…``: one SQL store.

SQLAlchemy Core with the same statements on every dialect. Every guarantee of
the ``Store`` protocol comes from primary keys and conditional writes, never
from dialect-specific upserts:

* ``put_token`` is ``UPDATE … WHERE obtained_at <= new``, then ``INSERT``; a
  duplicate key on that insert means someone raced us and the row is checked
  again under a row lock.
* a lease is a row; acquiring deletes an expired row for the key and inserts
  a new one in one transaction, so the primary key admits one winner.
* installations are read under ``SELECT … FOR UPDATE`` and written only when
  ``installation_wins`` says so.

Times are stored as integer microseconds since the epoch (exact, sortable,
the same type everywhere). Tables are created on first use; the URL query may
carry ``table_prefix=…`` to keep several deployments in one database.

The read path is short: every statement is built once per store and only
binds values per call; a read of one statement runs without a transaction
(an autocommit connection on a server, no ``BEGIN`` on SQLite); connections
are not pinged before use: a call that finds its pooled connection dead runs
once more on a new one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.pool import PoolResetState, StaticPool

from tokenbroker.backends.base import ThreadedAsyncMixin, installation_wins
from tokenbroker.backends.codec import (
    Corrupt,
    from_micros,
    opt_from_micros,
    opt_micros,
    text,
    token_fields,
)
from tokenbroker.backends.urls import redact_url, url_passwords
from tokenbroker.core.errors import ConfigError, StorageError
from tokenbroker.core.installation import Installation, InstallationStatus
from tokenbroker.core.protocols import Lease
from tokenbroker.core.token import Token, TokenKey

__all__ = ["SCHEMA_VERSION", "SQLStore"]

log = logging.getLogger("tokenbroker.store")

SCHEMA_VERSION: Final = 1
# Upgrades: MIGRATIONS[n] takes the tables from version n to n + 1 inside one
# write transaction. Version 1 is the first schema, so the list starts empty; a
# release that changes a table adds its step here and bumps SCHEMA_VERSION.
MIGRATIONS: dict[int, Callable[[Connection, Any], None]] = {}
DEFAULT_TABLE_PREFIX: Final = "tokenbroker_"
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000

_PREFIX_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,30}")
_ITER_BATCH: Final = 500
_TRANSIENT_RETRIES: Final = 4
# Server connections older than this are replaced at checkout, before a
# server's or a firewall's idle timeout can cut them (MySQL's default is 8 h).
_POOL_RECYCLE_S: Final = 3600
# Marks a pooled connection whose transaction our code ended (see _reset_hook).
_ENDED: Final = "tokenbroker_transaction_ended"
_CREATE_ATTEMPTS: Final = 5
# Which pip extra brings the driver a dialect imports.
_EXTRAS: Final = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
_DRIVERS: Final = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}

T = TypeVar("T")


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


class _Tables:
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


def _binds(columns: Iterable[sa.Column[Any]]) -> dict[str, Any]:
    return {column.name: sa.bindparam(column.name) for column in columns}


class _Statements:
    """Every statement a call runs, built once per store.

    Building a Core statement and computing its cache key cost more than the
    lookup itself on SQLite; a call now only binds values. Parameters that
    pick rows are named ``b_*``: SQLAlchemy keeps the column names for the
    values an INSERT or UPDATE writes.
    """

    def __init__(self, tables: _Tables) -> None:
        t, lt, it = tables.tokens, tables.leases, tables.installations
        token_key = (
            t.c.provider == sa.bindparam("b_provider"),
            t.c.app_id == sa.bindparam("b_app_id"),
            t.c.instance_id == sa.bindparam("b_instance_id"),
        )
        token_values = _binds([c for c in t.columns if not c.primary_key])
        self.get_token = sa.select(t).where(*token_key)
        self.lock_token = self.get_token.with_for_update()
        self.insert_token = t.insert().values(_binds(t.columns))
        self.update_token = t.update().where(*token_key).values(token_values)
        self.update_token_unless_newer = (
            t.update()
            .where(*token_key, t.c.obtained_at <= sa.bindparam("b_obtained_at"))
            .values(token_values)
        )
        self.delete_token = t.delete().where(*token_key)
        self.delete_token_if = t.delete().where(
            *token_key, t.c.access_token == sa.bindparam("b_access_token")
        )

        lease_key = (
            lt.c.provider == sa.bindparam("b_provider"),
            lt.c.app_id == sa.bindparam("b_app_id"),
            lt.c.instance_id == sa.bindparam("b_instance_id"),
        )
        self.delete_expired_lease = lt.delete().where(
            *lease_key, lt.c.expires_at <= sa.bindparam("b_now")
        )
        self.insert_lease = lt.insert().values(_binds(lt.columns))
        self.release_lease = lt.delete().where(*lease_key, lt.c.owner == sa.bindparam("b_owner"))

        installation_key = (
            it.c.app_id == sa.bindparam("b_app_id"),
            it.c.instance_id == sa.bindparam("b_instance_id"),
        )
        self.get_installation = sa.select(it).where(*installation_key)
        self.lock_installation = self.get_installation.with_for_update()
        self.insert_installation = it.insert().values(_binds(it.columns))
        self.update_installation = (
            it.update()
            .where(*installation_key)
            .values(_binds([c for c in it.columns if not c.primary_key]))
        )

        def page(include_removed: bool, after: bool) -> sa.Select[Any]:
            query = sa.select(it).where(it.c.app_id == sa.bindparam("b_app_id"))
            if not include_removed:
                installed = InstallationStatus.INSTALLED.value
                query = query.where(it.c.status == sa.bindparam("b_status", installed))
            if after:
                query = query.where(it.c.instance_id > sa.bindparam("b_after"))
            limit = sa.bindparam("b_limit", type_=sa.Integer)
            return query.order_by(it.c.instance_id).limit(limit)

        # (include_removed, after a previous page) -> the page's query
        self.installation_pages = {
            (removed, after): page(removed, after)
            for removed in (False, True)
            for after in (False, True)
        }


# --- values <-> rows -------------------------------------------------------


def _key_of(key: TokenKey) -> dict[str, str]:
    return {"provider": key.provider, "app_id": key.app_id, "instance_id": key.instance_id}


def _key_params(key: TokenKey) -> dict[str, Any]:
    """The parameters of ``_Statements``' key conditions."""
    return {"b_provider": key.provider, "b_app_id": key.app_id, "b_instance_id": key.instance_id}


def _token_from_row(key: TokenKey, row: sa.Row[Any]) -> Token:
    return Token(
        key=key,
        access_token=text(row.access_token, "access_token"),
        token_type=text(row.token_type, "token_type"),
        obtained_at=from_micros(row.obtained_at, "obtained_at"),
        expires_at=from_micros(row.expires_at, "expires_at"),
        refresh_at=opt_from_micros(row.refresh_at, "refresh_at"),
        must_refresh_at=opt_from_micros(row.must_refresh_at, "must_refresh_at"),
    )


def _installation_values(inst: Installation) -> dict[str, Any]:
    return {
        "status": inst.status.value,
        "installed_at": opt_micros(inst.installed_at),
        "removed_at": opt_micros(inst.removed_at),
        "setup_finished_at": opt_micros(inst.setup_finished_at),
        "origin_instance_id": inst.origin_instance_id,
        "updated_at": opt_micros(inst.updated_at),
        # Sorted keys: the same record always makes the same text.
        "extra": json.dumps(dict(inst.extra), sort_keys=True, separators=(",", ":")),
    }


def _installation_from_row(row: sa.Row[Any]) -> Installation:
    try:
        status = InstallationStatus(row.status)
    except ValueError:
        raise Corrupt(f"status is {row.status!r}") from None
    try:
        extra = json.loads(row.extra)
    except (TypeError, ValueError):
        raise Corrupt("extra is not JSON") from None
    if not isinstance(extra, dict):
        raise Corrupt(f"extra is a JSON {type(extra).__name__}, not an object")
    origin = row.origin_instance_id
    if origin is not None and not isinstance(origin, str):
        raise Corrupt(f"origin_instance_id is {type(origin).__name__}")
    return Installation(
        app_id=row.app_id,
        instance_id=row.instance_id,
        status=status,
        installed_at=opt_from_micros(row.installed_at, "installed_at"),
        removed_at=opt_from_micros(row.removed_at, "removed_at"),
        setup_finished_at=opt_from_micros(row.setup_finished_at, "setup_finished_at"),
        origin_instance_id=origin,
        updated_at=opt_from_micros(row.updated_at, "updated_at"),
        extra=extra,
    )


# --- errors ------------------------------------------------------------------


def _is_transient(error: exc.DBAPIError) -> bool:
    """Deadlocks and serialization failures: the server asks us to run it again."""
    orig = error.orig
    if getattr(orig, "sqlstate", None) in ("40001", "40P01"):  # PostgreSQL
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in (1213, 1205)  # MySQL: deadlock, lock wait timeout


def _missing_driver(url: URL, error: ImportError) -> ConfigError:
    backend = url.get_backend_name()
    module = error.name or str(error)
    extra = _EXTRAS.get(backend)
    if extra is None:
        return ConfigError(
            f"the driver for {url.drivername}:// is not installed (no module {module!r})"
        )
    hint = f"pip install 'tokenbroker[{extra}]'"
    if url.drivername != _DRIVERS.get(backend, url.drivername):
        hint += f" and use {_DRIVERS[backend]}:// URLs"
    return ConfigError(
        f"the driver for {url.drivername}:// is not installed (no module {module!r}): {hint}"
    )


# --- the store ---------------------------------------------------------------


class SQLStore(ThreadedAsyncMixin):
    """Tokens, leases and installations in a SQL database shared by every process.

    Thread-safe: each call runs on a pooled connection of its own, writes in
    one short transaction, reads of one statement without one. The async twins
    run the same calls in worker threads.
    """

    shared = True

    def __init__(
        self,
        url: str,
        *,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = redact_url(url)
        self._passwords = url_passwords(url)
        try:
            sa_url = make_url(url)
        except (exc.ArgumentError, ValueError, TypeError):
            raise ConfigError(f"not a SQL database URL: {self.url}") from None
        from_query = sa_url.query.get("table_prefix")
        if from_query is not None:
            if isinstance(from_query, tuple):
                raise ConfigError(f"table_prefix is given more than once in {self.url}")
            if table_prefix not in (DEFAULT_TABLE_PREFIX, from_query):
                raise ConfigError(
                    f"table_prefix {table_prefix!r} conflicts with {from_query!r} in {self.url}"
                )
            table_prefix = from_query
            sa_url = sa_url.difference_update_query(["table_prefix"])
        if not _PREFIX_RE.fullmatch(table_prefix):
            raise ConfigError(
                f"table_prefix {table_prefix!r} must match [A-Za-z_][A-Za-z0-9_]{{0,30}}"
            )
        self.table_prefix = table_prefix
        self._tables = _Tables(table_prefix)
        self._statements = _Statements(self._tables)
        self._sqlite_path: Path | None = None
        # One in-memory SQLite connection serves every thread: its transactions
        # must take turns, or one thread's BEGIN lands inside another's.
        self._serial: AbstractContextManager[Any] = nullcontext()
        self._engine, self._reader = self._create_engines(sa_url, dict(engine_options or {}))
        # Reads of several statements: one transaction, a plain BEGIN on SQLite.
        self._read_engine = self._engine.execution_options(tokenbroker_read_only=True)
        self._ready = False
        self._ready_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLStore(url={self.url!r})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for maintenance scripts and tests.

        On a server, reads of one statement go through a second, private
        engine of autocommit connections made from the same URL and options.
        """
        return self._engine

    @property
    def table_names(self) -> list[str]:
        """The tables this store uses (they share ``table_prefix``)."""
        return self._tables.names

    # --- engine ----------------------------------------------------------

    def _create_engines(self, url: URL, options: dict[str, Any]) -> tuple[Engine, Engine]:
        """The engine for transactions and the one for reads of one statement."""
        backend = url.get_backend_name()
        if backend == "sqlite":
            database = url.database or ""
            connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
            if (
                database in ("", ":memory:")
                or "mode=memory" in database
                or url.query.get("mode") == "memory"
            ):
                options.setdefault("poolclass", StaticPool)
                connect_args["check_same_thread"] = False
                self._serial = threading.RLock()
            elif not url.query.get("uri"):  # a "file:" URI is SQLite's to read, not ours
                self._sqlite_path = Path(database)
            options["connect_args"] = {**connect_args, **options.get("connect_args", {})}
            engine = self._make_engine(url, options)
            _sqlite_transactions(engine)
            # Reads of one statement skip BEGIN (the hook reads the option).
            return engine, engine.execution_options(tokenbroker_autocommit=True)
        # No pool_pre_ping, a round trip on every call: a call that finds its
        # connection dead (server restart, idle timeout, killed session) runs
        # again on a new one (_run_raw), and pool_recycle retires connections
        # before an idle timeout is likely to cut them.
        options.setdefault("pool_recycle", _POOL_RECYCLE_S)
        reset_hook = "pool_reset_on_return" not in options
        if reset_hook:
            options["pool_reset_on_return"] = None  # _reset_hook does it, minus a round trip
        if backend in ("mysql", "mariadb"):
            # READ COMMITTED: no gap locks, so concurrent "update, else insert"
            # writers meet on the primary key instead of deadlocking.
            options.setdefault("isolation_level", "READ COMMITTED")
            if "charset" not in url.query:
                url = url.update_query_dict({"charset": "utf8mb4"})
        engine = self._make_engine(url, options)
        if reset_hook:
            _reset_hook(engine)
        if "pool" in options:  # one pool given: share it, switching to autocommit per read
            return engine, engine.execution_options(isolation_level="AUTOCOMMIT")
        # Reads of one statement need no transaction: on autocommit connections
        # they cost one round trip (no BEGIN, COMMIT or ROLLBACK around them).
        # Nothing else uses these connections, so the pool need not reset them.
        reader_options = {
            **options,
            "isolation_level": "AUTOCOMMIT",
            **_skip_autocommit_rollback(engine.dialect),
        }
        return engine, self._make_engine(url, reader_options)

    def _make_engine(self, url: URL, options: dict[str, Any]) -> Engine:
        try:
            return sa.create_engine(url, **options)
        except ImportError as error:
            raise _missing_driver(url, error) from None
        except exc.ArgumentError as error:
            raise ConfigError(f"bad SQL store settings for {self.url}: {error}") from None

    def close(self) -> None:
        self._engine.dispose()
        if self._reader.pool is not self._engine.pool:
            self._reader.dispose()

    # --- plumbing ----------------------------------------------------------

    def _storage_error(self, what: str, error: BaseException) -> StorageError:
        cause = getattr(error, "orig", None) or error
        lines = str(cause).strip().splitlines()
        reason = lines[0] if lines else ""
        for password in self._passwords:
            reason = reason.replace(password, "***")
        name = type(cause).__name__
        return StorageError(f"{what} failed on {self.url}: {name}: {reason}"[:500])

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        with self._serial, (self._engine if write else self._read_engine).connect() as conn:
            with conn.begin():
                yield conn
            conn.info[_ENDED] = True  # committed: the pool need not roll back

    def _run(
        self,
        what: str,
        work: Callable[[Connection], T],
        *,
        write: bool,
        on_conflict: Callable[[], T] | None = None,
    ) -> T:
        """Run ``work`` in one transaction, again if the server asks, errors translated."""
        self._ensure_ready()
        return self._run_raw(what, work, write=write, on_conflict=on_conflict)

    def _read(self, what: str, work: Callable[[Connection], T]) -> T:
        """Run ``work``, one read-only statement, outside any transaction.

        One statement reads one consistent snapshot on its own; a transaction
        around it would only add round trips (BEGIN and COMMIT on a server).
        """
        self._ensure_ready()
        return self._run_raw(what, work, write=False, autocommit=True)

    def _run_raw(
        self,
        what: str,
        work: Callable[[Connection], T],
        *,
        write: bool,
        on_conflict: Callable[[], T] | None = None,
        autocommit: bool = False,
    ) -> T:
        attempt = 0
        reconnected = False
        while True:
            committing = False
            try:
                if autocommit:
                    with self._serial, self._reader.connect() as conn:
                        return work(conn)
                with self._transaction(write=write) as conn:
                    result = work(conn)
                    committing = True  # leaving the block commits
                return result
            except exc.IntegrityError as error:
                if on_conflict is None:
                    raise self._storage_error(what, error) from None
                # Outside the failed transaction: PostgreSQL aborts it on the error.
                return on_conflict()
            except exc.DBAPIError as error:
                if error.connection_invalidated and not committing and not reconnected:
                    # The connection died since its last use (a server restart,
                    # an idle timeout, a killed session). SQLAlchemy has dropped
                    # it, and every pooled connection as old as it; the server
                    # rolled back whatever this attempt did, so run it again.
                    # Not when COMMIT failed: that write may have landed.
                    reconnected = True
                    log.info("%s on %s: the connection was lost, running it again", what, self.url)
                    continue
                attempt += 1
                if attempt <= _TRANSIENT_RETRIES and _is_transient(error):
                    log.debug(
                        "%s on %s: %s, running it again", what, self.url, type(error.orig).__name__
                    )
                    continue
                raise self._storage_error(what, error) from None
            except (exc.SQLAlchemyError, OSError) as error:
                raise self._storage_error(what, error) from None

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if not self._ready:  # another thread may have finished while we waited
                self._prepare_sqlite_path()
                self._create_tables()
                self._check_schema()
                self._ready = True

    def _prepare_sqlite_path(self) -> None:
        path = self._sqlite_path
        if path is None:
            return
        parent = path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(
                f"SQLite database {path}: cannot create directory {parent}: "
                f"{error.strerror or type(error).__name__}"
            ) from None
        if not parent.is_dir():
            raise StorageError(f"SQLite database {path}: {parent} is not a directory")
        target = path if path.exists() else parent
        if not os.access(target, os.R_OK | os.W_OK):
            raise StorageError(f"SQLite database {path}: {target} is not writable")

    def _create_tables(self) -> None:
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                with self._transaction(write=True) as conn:
                    self._tables.metadata.create_all(conn, checkfirst=True)
                return
            except exc.DBAPIError as error:
                # Another process created a table between our check and our
                # CREATE ("already exists", or PostgreSQL's duplicate pg_type
                # row): fine if every table is there now, else go again.
                missing = self._missing_tables()
                if missing == []:
                    return
                if missing is None or attempt == _CREATE_ATTEMPTS:
                    raise self._storage_error("creating tables", error) from None
                log.debug("creating tables in %s raced another process; again", self.url)
            except (exc.SQLAlchemyError, OSError) as error:
                raise self._storage_error("creating tables", error) from None

    def _missing_tables(self) -> list[str] | None:
        """Our tables that do not exist; None if we cannot even look."""
        try:
            with self._transaction(write=False) as conn:
                inspector = sa.inspect(conn)
                return [name for name in self._tables.names if not inspector.has_table(name)]
        except (exc.SQLAlchemyError, OSError):
            return None

    def _check_schema(self) -> None:
        schema = self._tables.schema

        def record(conn: Connection) -> int:
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
                    raise StorageError(f"no upgrade from schema version {version} in {self.url}")
                log.warning(
                    "upgrading tables %s* in %s from schema version %d to %d",
                    self.table_prefix,
                    self.url,
                    version,
                    version + 1,
                )
                step(conn, self._tables)
                version += 1
                conn.execute(schema.insert().values(version=version))
            return version

        # Two processes may both find the table empty; the loser reads the winner's row.
        version = self._run_raw(
            "recording the schema version",
            record,
            write=True,
            on_conflict=lambda: self._run_raw("reading the schema version", record, write=True),
        )
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the tables in {self.url} (prefix {self.table_prefix!r}) have schema "
                f"version {version}; this tokenbroker understands up to {SCHEMA_VERSION}: "
                "upgrade tokenbroker"
            )

    def upgrade(self) -> tuple[int | None, int]:
        """Create or upgrade the tables now (first use does it too); returns the
        schema version before and after."""
        before = self.schema_version()
        self._ensure_ready()
        after = self.schema_version()
        return before, after if after is not None else SCHEMA_VERSION

    def schema_version(self) -> int | None:
        """The schema version recorded in the database, or ``None`` before first use."""
        schema = self._tables.schema

        def read(conn: Connection) -> int | None:
            if not sa.inspect(conn).has_table(schema.name):
                return None
            found = conn.execute(sa.select(sa.func.max(schema.c.version))).scalar()
            return None if found is None else int(found)

        self._prepare_sqlite_path()
        return self._run_raw("reading the schema version", read, write=False)

    # --- tokens ------------------------------------------------------------

    def get_token(self, key: TokenKey) -> Token | None:
        statement, params = self._statements.get_token, _key_params(key)

        def read(conn: Connection) -> sa.Row[Any] | None:
            return conn.execute(statement, params).first()

        row = self._read("get_token", read)
        return None if row is None else self._decode_token(key, row)

    def _decode_token(self, key: TokenKey, row: sa.Row[Any]) -> Token | None:
        try:
            return _token_from_row(key, row)
        except Corrupt as why:
            log.warning("ignoring corrupted token for %s in %s: %s", key, self.url, why)
            return None

    def put_token(self, token: Token) -> bool:
        s = self._statements
        values = token_fields(token)
        where = _key_params(token.key)
        replace = {**where, **values}
        unless_newer = {**replace, "b_obtained_at": values["obtained_at"]}
        row_values = {**_key_of(token.key), **values}

        def update(conn: Connection) -> bool:
            return conn.execute(s.update_token_unless_newer, unless_newer).rowcount == 1

        def insert(conn: Connection) -> bool:
            conn.execute(s.insert_token, row_values)
            return True

        def settle(conn: Connection) -> bool | None:
            # A row blocked both writes. Lock it and look: a later valid token
            # wins; a corrupted row, or one that an older writer slipped in
            # meanwhile, is replaced. None: the row vanished, start again.
            row = conn.execute(s.lock_token, where).first()
            if row is None:
                return None
            stored = self._decode_token(token.key, row)
            if stored is not None and stored.obtained_at > token.obtained_at:
                return False
            return conn.execute(s.update_token, replace).rowcount == 1

        for _ in range(3):
            if self._run("put_token", update, write=True):
                return True
            if self._run("put_token", insert, write=True, on_conflict=lambda: False):
                return True
            settled = self._run("put_token", settle, write=True)
            if settled is not None:
                return settled
        return False  # the row kept vanishing under us: report it unwritten

    def delete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        params = _key_params(key)
        if only is None:
            statement = self._statements.delete_token
        else:
            statement = self._statements.delete_token_if
            params["b_access_token"] = only

        def delete(conn: Connection) -> bool:
            return conn.execute(statement, params).rowcount > 0

        return self._run("delete_token", delete, write=True)

    # --- leases --------------------------------------------------------------

    def acquire_lease(self, key: TokenKey, ttl: float) -> Lease | None:
        # Wall-clock time: the lease is judged by every host sharing the store.
        now = time.time()
        lease = Lease(key=key, owner=secrets.token_hex(16), expires_at=now + ttl)
        s = self._statements
        now_us = int(now * 1_000_000)
        expired = {**_key_params(key), "b_now": now_us}
        row = {
            **_key_of(key),
            "owner": lease.owner,
            "expires_at": now_us + max(int(ttl * 1_000_000), 0),
        }

        def take(conn: Connection) -> Lease | None:
            conn.execute(s.delete_expired_lease, expired)
            conn.execute(s.insert_lease, row)
            return lease

        return self._run("acquire_lease", take, write=True, on_conflict=lambda: None)

    def release_lease(self, lease: Lease) -> bool:
        statement = self._statements.release_lease
        params = {**_key_params(lease.key), "b_owner": lease.owner}

        def release(conn: Connection) -> bool:
            return conn.execute(statement, params).rowcount == 1

        return self._run("release_lease", release, write=True)

    # --- installations -----------------------------------------------------

    def _decode_installation(self, row: sa.Row[Any]) -> Installation | None:
        try:
            return _installation_from_row(row)
        except Corrupt as why:
            log.warning(
                "ignoring corrupted installation %s:%s in %s: %s",
                row.app_id,
                row.instance_id,
                self.url,
                why,
            )
            return None

    def get_installation(self, app_id: str, instance_id: str) -> Installation | None:
        statement = self._statements.get_installation
        params = {"b_app_id": app_id, "b_instance_id": instance_id}

        def read(conn: Connection) -> sa.Row[Any] | None:
            return conn.execute(statement, params).first()

        row = self._read("get_installation", read)
        return None if row is None else self._decode_installation(row)

    def put_installation(self, installation: Installation) -> bool:
        s = self._statements
        values = _installation_values(installation)
        where = {"b_app_id": installation.app_id, "b_instance_id": installation.instance_id}

        def write(conn: Connection) -> bool:
            row = conn.execute(s.lock_installation, where).first()
            stored = None if row is None else self._decode_installation(row)
            if not installation_wins(installation, stored):
                return False
            if row is None:
                conn.execute(
                    s.insert_installation,
                    {
                        "app_id": installation.app_id,
                        "instance_id": installation.instance_id,
                        **values,
                    },
                )
            else:  # a corrupted row is overwritten like a missing one
                conn.execute(s.update_installation, {**where, **values})
            return True

        # A racing insert of the same installation: read it again, now under lock.
        return self._run(
            "put_installation",
            write,
            write=True,
            on_conflict=lambda: self._run("put_installation", write, write=True),
        )

    def iter_installations(
        self, app_id: str, *, include_removed: bool = False
    ) -> Iterator[Installation]:
        pages = self._statements.installation_pages
        batch = _ITER_BATCH

        def batch_after(last: str | None) -> Callable[[Connection], list[sa.Row[Any]]]:
            statement = pages[include_removed, last is not None]
            params = {"b_app_id": app_id, "b_after": last, "b_limit": batch}
            if last is None:
                del params["b_after"]
            return lambda conn: list(conn.execute(statement, params))

        # The first batch is read now, so a broken store fails at the call,
        # not at some later next(); each batch is one statement of its own.
        first = self._read("iter_installations", batch_after(None))

        def generate(rows: list[sa.Row[Any]]) -> Iterator[Installation]:
            while True:
                for row in rows:
                    found = self._decode_installation(row)
                    if found is not None:
                        yield found
                if len(rows) < batch:
                    return
                rows = self._read("iter_installations", batch_after(rows[-1].instance_id))

        return generate(first)


def _sqlite_transactions(engine: Engine) -> None:
    """SQLAlchemy's recipe for pysqlite: we emit BEGIN ourselves.

    Writes start with BEGIN IMMEDIATE, taking the write lock up front, so two
    processes never both read and then both try to upgrade to writing (the
    deadlock SQLite answers with an immediate "database is locked").
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # stop pysqlite's own BEGINs
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock another process may hold.
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("tokenbroker_autocommit", False):
            return  # one statement: SQLite runs it in a transaction of its own
        conn.exec_driver_sql(
            "BEGIN" if options.get("tokenbroker_read_only", False) else "BEGIN IMMEDIATE"
        )


def _reset_hook(engine: Engine) -> None:
    """The pool's rollback-on-return (``pool_reset_on_return=None`` turns it
    off), minus the ROLLBACK after a transaction ``_transaction`` committed.

    PyMySQL sends that ROLLBACK to the server although nothing is left to undo.
    Any other connection, one a maintenance script took from ``engine`` say,
    is rolled back on return as before.
    """

    @event.listens_for(engine, "reset")
    def _reset(dbapi_connection: Any, record: Any, state: PoolResetState) -> None:
        ended = record is not None and record.info.pop(_ENDED, False)
        if ended or state.transaction_was_reset or not state.asyncio_safe:
            return
        if dbapi_connection is not None:
            dbapi_connection.rollback()


def _skip_autocommit_rollback(dialect: Dialect) -> dict[str, Any]:
    """``skip_autocommit_rollback=True`` where SQLAlchemy (2.0.43+) and the driver
    support it: on an autocommit connection ``rollback()`` has nothing to undo,
    but PyMySQL sends ROLLBACK anyway, a round trip per read. (psycopg sends
    nothing outside a transaction.)"""
    base = getattr(Dialect, "detect_autocommit_setting", None)
    own = getattr(type(dialect), "detect_autocommit_setting", None)
    if base is None or own is None or own is base:
        return {}
    return {"skip_autocommit_rollback": True}
