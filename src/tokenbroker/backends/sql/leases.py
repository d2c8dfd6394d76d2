"""The SQL store's lease and fenced-write transactions, as work for ``Transactions``.

A lease is a row of ``<prefix>leases``: its owner, when it lapses (``0`` once
released) and its fence (``tokenbroker.core.fencing``). The row outlives its
lease until the sweep (``sweep``) deletes it, so the next lease on the key
gets a later fence. Taking a lease reads the key's row under a row lock: a
live one refuses; a lapsed or released one is taken over by an ``UPDATE``
conditioned on exactly what was read (still lapsed, same fence), so two
takers cannot both win, even where the lock is a no-op (SQLite, which
serialises writers instead); no row is an ``INSERT``, where the primary key
admits one winner. No statement needs ``RETURNING`` (MariaDB's ``UPDATE`` has
none): the fence is computed in Python from the row read.

A new fence also stays above the one on the key's token row, which outlives a
swept lease row. A fenced token write reads the key's lease row under the same lock, in the
transaction of the write, and the token row's fence is part of the write's
condition: a holder whose lease was taken over writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection

from ...core.fencing import next_fence
from ...core.protocols import Lease
from ...core.token import TokenKey
from .statements import Statements, key_of, key_params

__all__ = ["acquire_work", "fence_refused", "release_work", "renew_work"]


def _micros(seconds: float) -> int:
    return int(seconds * 1_000_000)


def acquire_work(
    s: Statements, key: TokenKey, owner: str, now: float, ttl: float
) -> Callable[[Connection], Lease | None]:
    """The transaction that takes ``key``'s lease for ``owner`` at ``now``, or finds it held."""
    now_us = _micros(now)
    expires_us = now_us + max(_micros(ttl), 0)
    where = key_params(key)

    def take(conn: Connection) -> Lease | None:
        row = conn.execute(s.lock_lease, where).first()
        previous = None if row is None else int(row.fence)
        if row is not None and int(row.expires_at) > now_us:
            return None  # held
        # The token remembers its writer's fence after the lease row is swept, and
        # that writer's clock may be ahead of ours: stay above both.
        written = conn.execute(s.token_fence, where).scalar()
        fence = next_fence(max(previous or 0, int(written or 0)), now)
        values = {"owner": owner, "expires_at": expires_us, "fence": fence}
        if row is None:
            conn.execute(s.insert_lease, {**key_of(key), **values})
        else:
            params = {**where, **values, "b_now": now_us, "b_fence": previous}
            if conn.execute(s.take_lease, params).rowcount != 1:
                return None  # someone took it between our read and our write
        return Lease(key=key, owner=owner, expires_at=now + ttl, fence=fence)

    return take


def renew_work(
    s: Statements, lease: Lease, now: float, ttl: float
) -> Callable[[Connection], Lease | None]:
    """The transaction that extends ``lease`` to ``now + ttl`` if it is still held."""
    params: dict[str, Any] = {
        **key_params(lease.key),
        "b_owner": lease.owner,
        "b_fence": lease.fence,
        "b_now": _micros(now),
        "expires_at": _micros(now) + max(_micros(ttl), 0),
    }

    def renew(conn: Connection) -> Lease | None:
        if conn.execute(s.renew_lease, params).rowcount != 1:
            return None
        return Lease(key=lease.key, owner=lease.owner, expires_at=now + ttl, fence=lease.fence)

    return renew


def release_work(s: Statements, lease: Lease) -> Callable[[Connection], bool]:
    """The transaction that frees the owner's lease (the row stays, for its fence)."""
    params = {**key_params(lease.key), "b_owner": lease.owner}

    def release(conn: Connection) -> bool:
        return bool(conn.execute(s.release_lease, params).rowcount == 1)

    return release


def fence_refused(s: Statements, conn: Connection, key: TokenKey, fence: int) -> bool:
    """Whether a write under ``fence`` comes too late: a later lease was granted on
    ``key``. Locks the lease row until the write's transaction ends, so no lease
    is granted between this look and the write."""
    row = conn.execute(s.lock_lease, key_params(key)).first()
    return row is not None and int(row.fence) > fence
