"""Running the SQL store's work on a connection, and what happens when that fails.

Work is a function of a ``Connection``. It runs in one short transaction, or
for a read of one statement on an autocommit connection; again when the
server asks (deadlocks, serialization failures) or when its pooled
connection turns out dead; and every driver error leaves as a
``StorageError`` naming the redacted URL and what is wrong, with the URL's
passwords scrubbed from the driver's message: ``StoreUnavailable`` for an
outage, a plain ``StorageError`` for everything else (see ``failures``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, TypeVar

import attrs
from sqlalchemy import exc
from sqlalchemy.engine import Connection

from ...core.errors import StorageError
from ..urls import scrub
from .engines import ENDED, Engines, is_transient
from .failures import diagnose

__all__ = ["Transactions"]

log = logging.getLogger("tokenbroker.store")

T = TypeVar("T")

_TRANSIENT_RETRIES: Final = 4
_MAX_MESSAGE: Final = 500


@attrs.frozen
class Transactions:
    """Transactions on one store's engines; ``url`` is the redacted URL, for messages."""

    engines: Engines
    url: str
    passwords: tuple[str, ...] = attrs.field(repr=False)

    def storage_error(self, what: str, error: BaseException) -> StorageError:
        """``StoreUnavailable`` for an outage, else a plain ``StorageError``; both
        say what failed, where, what is wrong when known, and the driver's reason."""
        cause = getattr(error, "orig", None) or error
        lines = str(cause).strip().splitlines()
        # The first line says what went wrong; drivers append SQL and parameters.
        reason = scrub(lines[0], self.passwords) if lines else ""
        name = type(cause).__name__
        diagnosis = diagnose(error, self.engines.engine.dialect.name)
        return diagnosis.error(what, self.url, f"{name}: {reason}", limit=_MAX_MESSAGE)

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Connection]:
        engines = self.engines
        engine = engines.engine if write else engines.read_engine
        with engines.serial, engine.connect() as conn:
            with conn.begin():
                yield conn
            conn.info[ENDED] = True  # committed: the pool need not roll back

    def run(
        self,
        what: str,
        work: Callable[[Connection], T],
        *,
        write: bool,
        on_conflict: Callable[[], T] | None = None,
        autocommit: bool = False,
    ) -> T:
        """Run ``work`` in one transaction (or, with ``autocommit``, one read-only
        statement outside any), again if the server asks, errors translated.

        ``on_conflict`` answers for ``work`` that hit a unique key: another
        writer got there first. Without it, that is a ``StorageError`` too.
        """
        attempt = 0
        reconnected = False
        while True:
            committing = False
            try:
                if autocommit:
                    with self.engines.serial, self.engines.reader.connect() as conn:
                        return work(conn)
                with self.transaction(write=write) as conn:
                    result = work(conn)
                    committing = True  # leaving the block commits
                return result
            except exc.IntegrityError as error:
                if on_conflict is None:
                    raise self.storage_error(what, error) from None
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
                if attempt <= _TRANSIENT_RETRIES and is_transient(error):
                    log.debug(
                        "%s on %s: %s, running it again", what, self.url, type(error.orig).__name__
                    )
                    continue
                raise self.storage_error(what, error) from None
            except (exc.SQLAlchemyError, OSError) as error:
                raise self.storage_error(what, error) from None
