"""Sweeping lapsed leases out of a SQL store's ``<prefix>leases`` table.

Acquiring a lease clears a lapsed row for its own key only, so a key that is
never acquired again (a webhook delivery's deduplication mark, say) would keep
its row for good. Each store therefore sweeps, at most once per
``LEASE_SWEEP_INTERVAL`` by its clock, on an ``acquire_lease``: one statement in a
transaction of its own, deleting at most ``LEASE_SWEEP_BATCH`` rows found
through the ``expires_at`` index (``<prefix>leases_expires_at``; the primary
key cannot find them: every webhook mark shares its provider and app id). A
full batch means a backlog, and the next sweep comes ``LEASE_SWEEP_CATCH_UP``
later instead.

A row is swept only once it lapsed ``LEASE_SWEEP_GRACE`` ago, so a host whose
clock runs ahead of the lease holder's (by less than that) never sweeps a live
lease. A sweep that fails is logged at DEBUG and forgotten: the acquire it rode
on has already succeeded, and the next interval tries again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ...core.errors import StorageError
from .schema import Tables
from .transactions import Transactions

__all__ = [
    "LEASE_SWEEP_BATCH",
    "LEASE_SWEEP_CATCH_UP",
    "LEASE_SWEEP_GRACE",
    "LEASE_SWEEP_INTERVAL",
    "LeaseSweeper",
]

log = logging.getLogger("tokenbroker.store")

LEASE_SWEEP_INTERVAL: Final = 60.0
"""Seconds between two sweeps of one store (by the store's clock)."""
LEASE_SWEEP_CATCH_UP: Final = 1.0
"""Seconds to the next sweep after one that deleted a full batch."""
LEASE_SWEEP_BATCH: Final = 1000
"""The most rows one sweep deletes."""
LEASE_SWEEP_GRACE: Final = 60.0
"""How long a lease must have lapsed before a sweep deletes it."""

_MYSQL: Final = frozenset({"mysql", "mariadb"})


def sweep_statement(tables: Tables, dialect: str) -> sa.Delete:
    """``DELETE`` at most ``LEASE_SWEEP_BATCH`` leases whose ``expires_at`` is at
    most ``:b_before``, in a form each dialect runs through the ``expires_at``
    index and then straight to the rows, never scanning the live ones."""
    lt = tables.leases
    lapsed = lt.c.expires_at <= sa.bindparam("b_before", type_=sa.BigInteger)
    if dialect in _MYSQL:
        # MariaDB and MySQL take LIMIT on DELETE (but no LIMIT in an IN subquery).
        return (
            lt.delete()
            .where(lapsed)
            .with_dialect_options(mysql_limit=LEASE_SWEEP_BATCH, mariadb_limit=LEASE_SWEEP_BATCH)
        )
    if dialect == "postgresql":
        # No LIMIT on DELETE: the batch's row addresses come first (an InitPlan
        # on the index), then a TID scan deletes them; ``IN (subquery)`` lets
        # the planner hash-join the whole table instead. The rows are locked
        # FOR UPDATE, so their ctids hold until commit; SKIP LOCKED leaves rows
        # another sweep or acquire holds to them, never waiting for them.
        ctid: sa.ColumnClause[Any] = sa.literal_column("ctid")
        batch = sa.select(ctid).select_from(lt).where(lapsed).limit(LEASE_SWEEP_BATCH)
        addresses = sa.func.array(batch.with_for_update(skip_locked=True).scalar_subquery())
        return lt.delete().where(ctid == sa.any_(addresses))
    if dialect == "sqlite":
        # No LIMIT on DELETE unless SQLite was built with it: pick the rowids.
        rowid: sa.ColumnClause[Any] = sa.literal_column("rowid")
        batch = sa.select(rowid).select_from(lt).where(lapsed).limit(LEASE_SWEEP_BATCH)
        return lt.delete().where(rowid.in_(batch))
    # Any other dialect: the batch's primary keys in a subquery.
    key = (lt.c.provider, lt.c.app_id, lt.c.instance_id)
    batch = sa.select(*key).where(lapsed).limit(LEASE_SWEEP_BATCH)
    return lt.delete().where(sa.tuple_(*key).in_(batch))


class LeaseSweeper:
    """When one store's next sweep is due, and the sweep. Thread-safe: of the
    threads that find a sweep due, one runs it."""

    def __init__(self, tables: Tables, dialect: str) -> None:
        self._statement = sweep_statement(tables, dialect)
        self._lock = threading.Lock()
        self._last: float | None = None  # when the latest sweep was claimed
        self._next = 0.0

    def __repr__(self) -> str:
        return f"LeaseSweeper(last={self._last!r}, next={self._next!r})"

    def claim(self, now: float) -> bool:
        """Whether a sweep is due at ``now``; if so, it is this caller's to run.

        A clock that went back (before the latest sweep) makes one due too,
        rather than none until the clock catches up.
        """
        with self._lock:
            last = self._last
            if last is not None and last <= now < self._next:
                return False
            self._last = now
            self._next = now + LEASE_SWEEP_INTERVAL
            return True

    def sweep(self, tx: Transactions, now: float) -> int | None:
        """Delete a batch of leases that lapsed ``LEASE_SWEEP_GRACE`` before
        ``now``: how many went, or ``None`` if the sweep failed (logged)."""
        statement = self._statement
        params = {"b_before": int((now - LEASE_SWEEP_GRACE) * 1_000_000)}

        def delete(conn: Connection) -> int:
            return int(conn.execute(statement, params).rowcount)

        try:
            deleted = tx.run("sweeping lapsed leases", delete, write=True)
        except Exception as error:  # whatever it is, a sweep never fails the acquire
            log.debug("sweeping lapsed leases in %s failed: %s", tx.url, _describe(error))
            return None
        if deleted >= LEASE_SWEEP_BATCH:
            with self._lock:
                self._next = min(self._next, now + LEASE_SWEEP_CATCH_UP)
        if deleted:
            log.debug("swept %d lapsed leases from %s", deleted, tx.url)
        return deleted


def _describe(error: Exception) -> str:
    """A StorageError's own message (passwords scrubbed); only the type of anything
    else, whose message nobody has scrubbed."""
    return str(error) if isinstance(error, StorageError) else type(error).__name__
