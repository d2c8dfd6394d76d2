"""Fencing numbers: what makes a stale lease holder's write refusable.

Every lease a store grants carries a fence that grows per key. A store
remembers the newest fence it granted for a key (in the lease record, which a
release keeps, and on the token each fenced write stores) and refuses a token
write whose fence is older than either: a holder that stalled past its lease
and woke after another holder took over cannot overwrite the newer holder's
token, whatever its ``obtained_at`` says.

A fence is the store's wall clock in microseconds, kept above the previous
fence the store remembers for the key, so fences keep growing even after a
store forgot an old lease (swept, or lapsed in Redis). That last part assumes
what SQL and memory leases assume already: the clocks of the hosts that grant
leases agree to within a lease's TTL. ``0`` means "unfenced": ``NO_LEASE``, and
leases of stores that do not fence.
"""

from __future__ import annotations

from typing import Final

__all__ = ["UNFENCED", "next_fence"]

UNFENCED: Final = 0
"""The fence of a lease from a store that does not fence; writes with it are
judged by compare-and-set alone."""


def next_fence(previous: int | None, now: float) -> int:
    """The fence of a lease granted at ``now`` (wall-clock seconds) on a key whose
    newest remembered fence is ``previous`` (``None``: none remembered)."""
    return max((previous or 0) + 1, int(now * 1_000_000))
