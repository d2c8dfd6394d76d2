"""Which kind of failure a SQL driver error is: an outage, a misconfiguration, or other.

An *outage* (the server refused, dropped or timed out the connection, or a
lock was held past every timeout) is ``StoreUnavailable``: long-running
processes ride it out. A *misconfiguration* (authentication, an unknown
database, permissions, a read-only server or file, a file that is not a
database) is a plain ``StorageError`` whose message says what is wrong, raised
at once. Anything else (a bad statement, a full disk) is a plain
``StorageError`` too: it is not waited out either.

Only positively recognised outages degrade: an error we cannot place is
surfaced, never hidden behind degraded mode. The drivers are optional, so
this reads their errors by shape (SQLSTATE, MySQL error numbers, SQLite
result codes, messages) and imports none of them.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Final

from sqlalchemy import exc

from ..failures import AUTHENTICATION, OTHER, OUTAGE, UNREACHABLE, Diagnosis

__all__ = [
    "AUTHENTICATION",
    "NOT_A_DATABASE",
    "PERMISSION",
    "READ_ONLY",
    "UNKNOWN_DATABASE",
    "UNREACHABLE",
    "Diagnosis",
    "diagnose",
]

# What each message says is wrong, beyond the shared UNREACHABLE and AUTHENTICATION.
UNKNOWN_DATABASE: Final = "unknown database (check the database name in the store URL)"
PERMISSION: Final = "permission denied"
READ_ONLY: Final = "the store is read-only"
NOT_A_DATABASE: Final = "not a SQLite database file, or a corrupt one"
CANNOT_OPEN: Final = "cannot open the SQLite database file (check the path and its permissions)"
TLS: Final = "the TLS/SSL settings were refused"


def _misconfigured(problem: str) -> Diagnosis:
    return Diagnosis(outage=False, problem=problem)


# --- PostgreSQL ------------------------------------------------------------------------
# Errors at connect time carry no SQLSTATE in libpq: their message is all there is.
_PG_MISCONFIGURED: Final = (
    (re.compile(r"authentication failed|no password supplied"), AUTHENTICATION),
    (re.compile(r"no pg_hba\.conf entry"), AUTHENTICATION),
    (re.compile(r'role "[^"]*" does not exist'), AUTHENTICATION),
    (re.compile(r'database "[^"]*" does not exist'), UNKNOWN_DATABASE),
    (re.compile(r"permission denied|must be owner of|not have connect privilege"), PERMISSION),
    (re.compile(r"read-only transaction"), READ_ONLY),
    (re.compile(r"does not support ssl|ssl was required|certificate"), TLS),
)
_PG_MISCONFIGURED_STATES: Final = {
    "28000": AUTHENTICATION,  # invalid_authorization_specification
    "28P01": AUTHENTICATION,  # invalid_password
    "3D000": UNKNOWN_DATABASE,  # invalid_catalog_name
    "42501": PERMISSION,  # insufficient_privilege
    "25006": READ_ONLY,  # read_only_sql_transaction
}
# admin/crash shutdown, cannot connect now, too many connections, statement or lock timeout
_PG_OUTAGE_STATES: Final = frozenset({"57P01", "57P02", "57P03", "53300", "57014", "55P03"})
_PG_OUTAGE: Final = re.compile(
    r"connection refused|could not connect|timeout expired|timed out|server closed the connection"
    r"|terminating connection|connection is (?:closed|lost|bad)|connection not open"
    r"|connection reset|broken pipe|failed to resolve host|could not translate host name"
    r"|network is unreachable|no route to host|the database system is"
    r"|too many (?:clients|connections)|consuming input failed|ssl syscall error|eof detected"
)


def _postgres(orig: BaseException, message: str) -> Diagnosis | None:
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str) and state in _PG_MISCONFIGURED_STATES:
        return _misconfigured(_PG_MISCONFIGURED_STATES[state])
    for pattern, problem in _PG_MISCONFIGURED:
        if pattern.search(message):
            return _misconfigured(problem)
    if isinstance(state, str) and (state.startswith("08") or state in _PG_OUTAGE_STATES):
        return OUTAGE
    if _PG_OUTAGE.search(message):
        return OUTAGE
    # libpq's own failures carry no SQLSTATE: a connection that could not be
    # made or kept, for a reason not recognised above as a misconfiguration.
    if state is None and type(orig).__name__ == "OperationalError":
        return OUTAGE
    return None


# --- MySQL and MariaDB ------------------------------------------------------------------
_MYSQL_MISCONFIGURED: Final = {
    1044: PERMISSION,  # access denied for user to database
    1045: AUTHENTICATION,  # access denied (using password: YES/NO)
    1049: UNKNOWN_DATABASE,
    1130: PERMISSION,  # host is not allowed to connect
    1142: PERMISSION,  # command denied to user for table
    1143: PERMISSION,  # column command denied
    1227: PERMISSION,  # needs a privilege
    1251: AUTHENTICATION,  # client does not support the authentication protocol
    1290: READ_ONLY,  # running with --read-only (and other options that forbid it)
    1698: AUTHENTICATION,  # access denied (auth plugin)
    1836: READ_ONLY,  # read-only mode
    2026: TLS,  # SSL connection error
    2059: AUTHENTICATION,  # authentication plugin cannot be loaded
}
_MYSQL_OUTAGE: Final = frozenset(
    {
        1040,  # too many connections
        1053,  # server shutdown in progress
        1152,  # aborted connection
        1158,  # error reading communication packets
        1159,  # timeout reading communication packets
        1160,  # error writing communication packets
        1161,  # timeout writing communication packets
        1205,  # lock wait timeout exceeded (after our own retries)
        1317,  # query execution was interrupted (KILL QUERY)
        1927,  # connection was killed
        2002,  # can't connect through the socket
        2003,  # can't connect to the server
        2005,  # unknown server host
        2006,  # server has gone away
        2012,  # error in the server handshake
        2013,  # lost connection during query
        2055,  # lost connection at the start
        3024,  # maximum statement execution time exceeded
        4031,  # disconnected by the server for inactivity
    }
)


def _mysql(orig: BaseException) -> Diagnosis | None:
    args = getattr(orig, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    if code in _MYSQL_MISCONFIGURED:
        return _misconfigured(_MYSQL_MISCONFIGURED[code])
    if code in _MYSQL_OUTAGE:
        return OUTAGE
    if code == 0 and type(orig).__name__ == "InterfaceError":
        return OUTAGE  # PyMySQL's "(0, '')": the connection is already gone
    return None


# --- SQLite ------------------------------------------------------------------------------
_SQLITE: Final = {
    sqlite3.SQLITE_BUSY: OUTAGE,  # locked by another process past the busy timeout
    sqlite3.SQLITE_LOCKED: OUTAGE,
    sqlite3.SQLITE_PERM: _misconfigured(PERMISSION),
    sqlite3.SQLITE_AUTH: _misconfigured(PERMISSION),
    sqlite3.SQLITE_READONLY: _misconfigured(READ_ONLY),
    sqlite3.SQLITE_CORRUPT: _misconfigured(NOT_A_DATABASE),
    sqlite3.SQLITE_NOTADB: _misconfigured(NOT_A_DATABASE),
    sqlite3.SQLITE_CANTOPEN: _misconfigured(CANNOT_OPEN),
}
_SQLITE_MESSAGES: Final = (
    (re.compile(r"database (?:table )?is locked"), OUTAGE),
    (re.compile(r"readonly database|read-only"), _misconfigured(READ_ONLY)),
    (re.compile(r"not a database|malformed"), _misconfigured(NOT_A_DATABASE)),
    (re.compile(r"unable to open database"), _misconfigured(CANNOT_OPEN)),
)


def _sqlite(orig: BaseException, message: str) -> Diagnosis | None:
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        found = _SQLITE.get(code & 0xFF)  # the primary result code of an extended one
        if found is not None:
            return found
    for pattern, diagnosis in _SQLITE_MESSAGES:
        if pattern.search(message):
            return diagnosis
    return None


def diagnose(error: BaseException, dialect: str) -> Diagnosis:
    """What kind of failure ``error`` is, on a database of ``dialect`` (SQLAlchemy's name)."""
    if isinstance(error, exc.DBAPIError):
        orig = error.orig if error.orig is not None else error
        message = str(orig).lower()
        found: Diagnosis | None = None
        if dialect == "postgresql":
            found = _postgres(orig, message)
        elif dialect in ("mysql", "mariadb"):
            found = _mysql(orig)
        elif dialect == "sqlite":
            found = _sqlite(orig, message)
        if found is not None:
            return found
        # SQLAlchemy's dialects know their drivers' disconnect messages too.
        return OUTAGE if error.connection_invalidated else OTHER
    if isinstance(error, exc.TimeoutError | exc.DisconnectionError):
        return OUTAGE  # no pooled connection in time; a connection that died at checkout
    if isinstance(error, PermissionError):
        return _misconfigured(PERMISSION)
    if isinstance(error, OSError) and not isinstance(
        error, FileNotFoundError | IsADirectoryError | NotADirectoryError
    ):
        return OUTAGE  # a socket failed under the driver
    return OTHER
