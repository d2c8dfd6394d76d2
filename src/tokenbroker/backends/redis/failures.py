"""Which kind of failure a redis-py error is: an outage, a misconfiguration, or other.

An *outage* (refused, reset or timed-out connections, a server still loading
its data, a cluster or Sentinel without a reachable primary) is
``StoreUnavailable``: long-running processes ride it out. A
*misconfiguration* (authentication, ACL permissions, a db index the server
does not have, a read-only replica) is a plain ``StorageError`` saying what is
wrong, raised at once, as is anything else. Only recognised outages degrade.
"""

from __future__ import annotations

import re
from typing import Final

from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    ClusterDownError,
    NoPermissionError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..failures import AUTHENTICATION, OTHER, OUTAGE, UNREACHABLE, Diagnosis

__all__ = [
    "AUTHENTICATION",
    "DB_INDEX",
    "PERMISSION",
    "READ_ONLY",
    "UNREACHABLE",
    "Diagnosis",
    "diagnose",
]

# What each message says is wrong, beyond the shared UNREACHABLE and AUTHENTICATION.
PERMISSION: Final = "permission denied (the Redis ACL user may not run this)"
DB_INDEX: Final = "db index out of range (check the /N database number in the store URL)"
READ_ONLY: Final = "the store is read-only (a replica: point the URL at the primary)"
TLS: Final = "the TLS/SSL certificate check failed"

_DB_INDEX: Final = re.compile(r"(?i)db index is out of range|invalid db index")
_CLUSTER_UNREACHABLE: Final = re.compile(r"(?i)cannot be connected|no reachable node")


def diagnose(error: BaseException) -> Diagnosis:
    """What kind of failure ``error`` (raised by redis-py or a socket under it) is."""
    # Authentication errors are ConnectionErrors to redis-py: look at them first.
    if isinstance(error, AuthenticationError | AuthenticationWrongNumberOfArgsError):
        return Diagnosis(outage=False, problem=AUTHENTICATION)
    if isinstance(error, NoPermissionError):
        return Diagnosis(outage=False, problem=PERMISSION)
    if isinstance(error, AuthorizationError):  # redis-py's OCSP stapling check
        return Diagnosis(outage=False, problem=TLS)
    if isinstance(error, ReadOnlyError):
        return Diagnosis(outage=False, problem=READ_ONLY)
    if isinstance(error, ResponseError) and _DB_INDEX.search(str(error)):
        return Diagnosis(outage=False, problem=DB_INDEX)
    # ConnectionError covers BusyLoadingError (a server loading its data), the
    # pool's MaxConnectionsError and Sentinel's MasterNotFoundError too.
    if isinstance(error, RedisConnectionError | RedisTimeoutError | OSError):
        return OUTAGE
    if isinstance(error, ClusterDownError | TryAgainError | SlotNotCoveredError):
        return OUTAGE  # a cluster between primaries, or resharding
    if isinstance(error, RedisClusterException) and _CLUSTER_UNREACHABLE.search(str(error)):
        return OUTAGE
    return OTHER
