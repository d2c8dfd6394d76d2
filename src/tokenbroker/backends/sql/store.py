"""``SQLStore``: the ``Store`` protocol over SQLAlchemy Core, one set of statements
for every dialect.

Every guarantee comes from primary keys and conditional writes, never from
dialect-specific upserts:

* ``put_token`` is ``UPDATE … WHERE obtained_at <= new``, then ``INSERT``; a
  duplicate key on that insert means someone raced us and the row is checked
  again under a row lock.
* a lease is a row that carries its fence and outlives its lease (a release
  marks it free) so that fences keep growing; acquiring takes over a lapsed row
  by a conditional ``UPDATE`` or inserts one, so one taker wins (see
  ``leases``). A fenced ``put_token`` checks the lease row and the token row's
  fence in the write's transaction. Rows of keys nobody acquires again are
  swept in bounded batches (see ``sweep``).
* installations are read under ``SELECT … FOR UPDATE`` and written only when
  ``installation_wins`` says so.

The read path is short: every statement is built once per store and only
binds values per call; a read of one statement runs without a transaction.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine, make_url

from ...core.clock import Clock, SystemClock
from ...core.errors import ConfigError
from ...core.installation import Installation
from ...core.protocols import Lease
from ...core.token import Token, TokenKey
from ..base import ThreadedAsyncMixin, installation_wins
from ..codec import Corrupt, token_fields
from ..urls import redact_url, url_passwords
from . import schema
from .engines import create_engines, prepare_sqlite_path
from .leases import acquire_work, fence_refused, release_work, renew_work
from .schema import DEFAULT_TABLE_PREFIX, TABLE_PREFIX, Tables
from .statements import (
    Statements,
    installation_from_row,
    installation_row,
    key_of,
    key_params,
    token_from_row,
)
from .sweep import LeaseSweeper
from .transactions import Transactions

__all__ = ["SQLStore"]

log = logging.getLogger("tokenbroker.store")

_ITER_BATCH: Final = 500

T = TypeVar("T")


class SQLStore(ThreadedAsyncMixin):
    """Tokens, leases and installations in a SQL database shared by every process.

    Thread-safe: each call runs on a pooled connection of its own, writes in
    one short transaction, reads of one statement without one. The async twins
    run the same calls in worker threads. ``clock`` dates the leases and paces
    their sweeps (the system clock unless a test moves its own): every host
    judges a lease by its own clock, so keep the hosts' clocks in sync.
    """

    shared = True

    def __init__(
        self,
        url: str,
        *,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        engine_options: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.url = redact_url(url)
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(
                f"SQL store clock must have a time() method, not {type(clock).__name__}"
            )
        self._clock: Clock = clock if clock is not None else SystemClock()
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
        if not TABLE_PREFIX.fullmatch(table_prefix):
            raise ConfigError(
                f"table_prefix {table_prefix!r} must match [A-Za-z_][A-Za-z0-9_]{{0,30}}"
            )
        self.table_prefix = table_prefix
        self._tables = Tables(table_prefix)
        self._statements = Statements(self._tables)
        engines = create_engines(sa_url, dict(engine_options or {}), self.url)
        self._tx = Transactions(engines, self.url, url_passwords(url))
        self._sweeper = LeaseSweeper(self._tables, engines.engine.dialect.name)
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
        return self._tx.engines.engine

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, for a store on one (``None`` for servers,
        in-memory databases and ``file:`` URIs)."""
        return self._tx.engines.sqlite_path

    @property
    def table_names(self) -> list[str]:
        """The tables this store uses (they share ``table_prefix``)."""
        return self._tables.names

    def close(self) -> None:
        self._tx.engines.dispose()

    # --- plumbing ----------------------------------------------------------

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
        return self._tx.run(what, work, write=write, on_conflict=on_conflict)

    def _read(self, what: str, work: Callable[[Connection], T]) -> T:
        """Run ``work``, one read-only statement, outside any transaction.

        One statement reads one consistent snapshot on its own; a transaction
        around it would only add round trips (BEGIN and COMMIT on a server).
        """
        self._ensure_ready()
        return self._tx.run(what, work, write=False, autocommit=True)

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if not self._ready:  # another thread may have finished while we waited
                prepare_sqlite_path(self._tx.engines.sqlite_path)
                schema.create_tables(self._tx, self._tables)
                schema.check_version(self._tx, self._tables, self.table_prefix)
                self._ready = True

    # --- schema --------------------------------------------------------------

    def upgrade(self) -> tuple[int | None, int]:
        """Create or upgrade the tables now (first use does it too); returns the
        schema version before and after."""
        before = self.schema_version()
        self._ensure_ready()
        after = self.schema_version()
        return before, after if after is not None else schema.SCHEMA_VERSION

    def schema_version(self) -> int | None:
        """The schema version recorded in the database, or ``None`` before first use."""
        prepare_sqlite_path(self._tx.engines.sqlite_path)
        return schema.read_version(self._tx, self._tables)

    # --- tokens ------------------------------------------------------------

    def get_token(self, key: TokenKey) -> Token | None:
        statement, params = self._statements.get_token, key_params(key)

        def read(conn: Connection) -> sa.Row[Any] | None:
            return conn.execute(statement, params).first()

        row = self._read("get_token", read)
        return None if row is None else self._decode_token(key, row)

    def _decode_token(self, key: TokenKey, row: sa.Row[Any]) -> Token | None:
        try:
            return token_from_row(key, row)
        except Corrupt as why:
            log.warning("ignoring corrupted token for %s in %s: %s", key, self.url, why)
            return None

    def put_token(self, token: Token, *, fence: int = 0) -> bool:
        s = self._statements
        key = token.key
        values = token_fields(token)
        where = key_params(key)
        if fence:  # the fenced statements write the fence and are conditioned on it
            update_stmt, replace_stmt = s.update_token_fenced_unless_newer, s.update_token_fenced
            replace = {**where, **values, "fence": fence}
            unless_newer = {**replace, "b_obtained_at": values["obtained_at"], "b_fence": fence}
        else:
            update_stmt, replace_stmt = s.update_token_unless_newer, s.update_token
            replace = {**where, **values}
            unless_newer = {**replace, "b_obtained_at": values["obtained_at"]}
        row_values = {**key_of(key), **values, "fence": fence}

        def late(conn: Connection) -> bool:
            return bool(fence) and fence_refused(s, conn, key, fence)

        # None from update or insert: refused by the fence, nothing more to try.
        def update(conn: Connection) -> bool | None:
            if late(conn):
                return None
            return conn.execute(update_stmt, unless_newer).rowcount == 1

        def insert(conn: Connection) -> bool | None:
            if late(conn):
                return None
            conn.execute(s.insert_token, row_values)
            return True

        def settle(conn: Connection) -> bool | None:
            # A row blocked both writes. Lock it and look: a later valid token (or
            # one written under a later fence) wins; a corrupted row, or one that an
            # older writer slipped in meanwhile, is replaced. None: the row
            # vanished, start again.
            if late(conn):
                return False
            row = conn.execute(s.lock_token, where).first()
            if row is None:
                return None
            if fence and int(row.fence) > fence:
                return False
            stored = self._decode_token(key, row)
            if stored is not None and stored.obtained_at > token.obtained_at:
                return False
            return conn.execute(replace_stmt, replace).rowcount == 1

        for _ in range(3):
            updated = self._run("put_token", update, write=True)
            if updated is not False:
                return bool(updated)
            inserted = self._run("put_token", insert, write=True, on_conflict=lambda: False)
            if inserted is not False:
                return bool(inserted)
            settled = self._run("put_token", settle, write=True)
            if settled is not None:
                return settled
        return False  # the row kept vanishing under us: report it unwritten

    def delete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        params = key_params(key)
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
        now = self._clock.time()
        take = acquire_work(self._statements, key, secrets.token_hex(16), now, ttl)
        taken = self._run("acquire_lease", take, write=True, on_conflict=lambda: None)
        # After the acquire, in a transaction of its own: it cannot fail the acquire.
        if self._sweeper.claim(now):
            self._sweeper.sweep(self._tx, now)
        return taken

    def renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        renew = renew_work(self._statements, lease, self._clock.time(), ttl)
        return self._run("renew_lease", renew, write=True)

    def release_lease(self, lease: Lease) -> bool:
        return self._run("release_lease", release_work(self._statements, lease), write=True)

    # --- installations -----------------------------------------------------

    def _decode_installation(self, row: sa.Row[Any]) -> Installation | None:
        try:
            return installation_from_row(row)
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
        values = installation_row(installation)
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
