"""Building the SQL store's engines from a URL, and what each dialect needs.

SQLite gets its pragmas and explicit ``BEGIN``s, servers get pool recycling,
a cheaper reset-on-return and an autocommit engine for reads of one
statement; MySQL gets READ COMMITTED and utf8mb4. A missing driver is a
``ConfigError`` that names the pip extra; ``is_transient`` says which driver
errors ask for the work to run again.
"""

from __future__ import annotations

import os
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Final

import attrs
import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.engine.url import URL
from sqlalchemy.pool import PoolResetState, StaticPool

from ...core.errors import ConfigError, StorageError
from .failures import PERMISSION, READ_ONLY

__all__ = ["ENDED", "SQLITE_BUSY_TIMEOUT_MS", "Engines", "create_engines", "is_transient"]

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
# Marks a pooled connection whose transaction our code ended (see _reset_hook).
ENDED: Final = "tokenbroker_transaction_ended"
# Server connections older than this are replaced at checkout, before a
# server's or a firewall's idle timeout can cut them (MySQL's default is 8 h).
_POOL_RECYCLE_S: Final = 3600
# Which pip extra brings the driver a dialect imports.
_EXTRAS: Final = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
_DRIVERS: Final = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}


@attrs.frozen
class Engines:
    """The engines of one store.

    ``engine`` runs write transactions, ``read_engine`` reads of several
    statements (one transaction, a plain ``BEGIN`` on SQLite), ``reader``
    reads of one statement (autocommit). ``serial`` is held around every
    use of a connection: a lock when one in-memory SQLite connection serves
    every thread, since its transactions must take turns, or one thread's
    BEGIN lands inside another's. ``sqlite_path`` is the database file, if any.
    """

    engine: Engine
    reader: Engine
    read_engine: Engine
    serial: AbstractContextManager[Any] = attrs.field(factory=nullcontext)
    sqlite_path: Path | None = None

    def dispose(self) -> None:
        self.engine.dispose()
        if self.reader.pool is not self.engine.pool:
            self.reader.dispose()


def create_engines(url: URL, options: dict[str, Any], printable: str) -> Engines:
    """The engines for ``url``; ``printable`` is the redacted URL, for messages."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engines(url, options, printable)
    # No pool_pre_ping, a round trip on every call: a call that finds its
    # connection dead (server restart, idle timeout, killed session) runs
    # again on a new one (Transactions.run), and pool_recycle retires
    # connections before an idle timeout is likely to cut them.
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
    engine = _make_engine(url, options, printable)
    if reset_hook:
        _reset_hook(engine)
    read_engine = engine.execution_options(tokenbroker_read_only=True)
    if "pool" in options:  # one pool given: share it, switching to autocommit per read
        reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        return Engines(engine, reader, read_engine)
    # Reads of one statement need no transaction: on autocommit connections
    # they cost one round trip (no BEGIN, COMMIT or ROLLBACK around them).
    # Nothing else uses these connections, so the pool need not reset them.
    reader_options = {
        **options,
        "isolation_level": "AUTOCOMMIT",
        **_skip_autocommit_rollback(engine.dialect),
    }
    return Engines(engine, _make_engine(url, reader_options, printable), read_engine)


def _sqlite_engines(url: URL, options: dict[str, Any], printable: str) -> Engines:
    database = url.database or ""
    connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    serial: AbstractContextManager[Any] = nullcontext()
    path: Path | None = None
    if (
        database in ("", ":memory:")
        or "mode=memory" in database
        or url.query.get("mode") == "memory"
    ):
        options.setdefault("poolclass", StaticPool)
        connect_args["check_same_thread"] = False
        serial = threading.RLock()
    elif not url.query.get("uri"):  # a "file:" URI is SQLite's to read, not ours
        path = Path(database)
    options["connect_args"] = {**connect_args, **options.get("connect_args", {})}
    engine = _make_engine(url, options, printable)
    # A ``timeout`` given in connect_args is the busy timeout too: pysqlite's own
    # wait and SQLite's busy handler then agree on how long a lock may block us.
    busy_s = options["connect_args"].get("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    _sqlite_transactions(engine, busy_ms=max(int(float(busy_s) * 1000), 0))
    return Engines(
        engine,
        # Reads of one statement skip BEGIN (the hook reads the option).
        reader=engine.execution_options(tokenbroker_autocommit=True),
        read_engine=engine.execution_options(tokenbroker_read_only=True),
        serial=serial,
        sqlite_path=path,
    )


def _make_engine(url: URL, options: dict[str, Any], printable: str) -> Engine:
    try:
        return sa.create_engine(url, **options)
    except ImportError as error:
        raise _missing_driver(url, error) from None
    except exc.ArgumentError as error:
        raise ConfigError(f"bad SQL store settings for {printable}: {error}") from None


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


def is_transient(error: exc.DBAPIError) -> bool:
    """Deadlocks and serialization failures: the server asks us to run it again."""
    orig = error.orig
    if getattr(orig, "sqlstate", None) in ("40001", "40P01"):  # PostgreSQL
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in (1213, 1205)  # MySQL: deadlock, lock wait timeout


def prepare_sqlite_path(path: Path | None) -> None:
    """Make a SQLite file ready to open; a ``StorageError`` saying why it cannot be.

    Tokens are secrets: a directory made here is 0700 and a new database file
    0600, and SQLite gives its -wal, -shm and -journal files the database
    file's mode. Existing files and directories keep theirs (``tokenbroker
    doctor`` warns about open ones).
    """
    if path is None:
        return
    parent = path.parent
    if not parent.is_dir():
        try:
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(
                f"SQLite database {path}: cannot create directory {parent}: "
                f"{error.strerror or type(error).__name__}"
            ) from None
    if not parent.is_dir():
        raise StorageError(f"SQLite database {path}: {parent} is not a directory")
    if path.is_dir():
        raise StorageError(f"SQLite database {path} is a directory, not a database file")
    # os.access answers for the real user, root included: an immutable file
    # (chattr +i) or a read-only mount is refused to root too.
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StorageError(
            f"SQLite database {path}: {READ_ONLY}: cannot create files in {parent} "
            "(SQLite keeps its -wal and -shm files next to the database)"
        )
    if path.exists():
        if not os.access(path, os.R_OK):
            raise StorageError(f"SQLite database {path}: {PERMISSION}: cannot read {path}")
        if not os.access(path, os.W_OK):
            raise StorageError(f"SQLite database {path}: {READ_ONLY}: {path} is not writable")
        return
    _create_private(path)


def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 (SQLite takes an empty file as a new database)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first
    except OSError as error:
        raise StorageError(
            f"SQLite database {path}: cannot create it: {error.strerror or type(error).__name__}"
        ) from None
    os.close(fd)


def _sqlite_transactions(engine: Engine, *, busy_ms: int) -> None:
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
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
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
    off), minus the ROLLBACK after a transaction ``Transactions`` committed.

    PyMySQL sends that ROLLBACK to the server although nothing is left to undo.
    Any other connection, one a maintenance script took from ``engine`` say,
    is rolled back on return as before.
    """

    @event.listens_for(engine, "reset")
    def _reset(dbapi_connection: Any, record: Any, state: PoolResetState) -> None:
        ended = record is not None and record.info.pop(ENDED, False)
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
